"""Derived statements (``engine/derive.py``) against torch autograd on dense references."""
from __future__ import annotations

import pytest
import torch

import sgnn
from sgnn.engine.derive import GRAD, OUT, derivative
from sgnn.engine.expr import (Access, compute, walk, elu, exp, indices, leaky_relu, max_, maximum, pattern,
                              relu, sigmoid, softmax, sum_, tanh, tensors)
from sgnn.errors import NotSupported

i, j, k = indices("i j k")
A, X, Y, d, e, b = tensors("A X Y d e b")


def sparse_case(n=7, m=6, f=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(n, m, generator=g, dtype=dtype) * (torch.rand(n, m, generator=g) < 0.4)
    dense[2] = 0  # an empty row
    return dense, sgnn.SparseTensor.from_dense(dense)


def check(stmt, ref_fn, ops: dict, wrt: str, dense_ops: dict, sparse: bool = False):
    """Evaluate d(stmt)/d(wrt) with sgnn and compare with autograd of ``ref_fn(**dense_ops)``."""
    leaf = dense_ops[wrt].clone().requires_grad_(True)
    out = ref_fn(**{**dense_ops, wrt: leaf})
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    (out * g).sum().backward()
    with torch.no_grad():
        fwd = sgnn.evaluate(stmt, **ops)
    run = lambda st, o: sgnn.evaluate(st, **o)  # noqa: E731
    got = derivative(stmt, wrt, sparse=sparse).evaluate(run, {**ops, GRAD: g, OUT: fwd})
    got = got.to_dense() if isinstance(got, sgnn.SparseTensor) else got
    want = leaf.grad * (dense_ops[wrt] != 0) if sparse else leaf.grad
    assert torch.allclose(got, want, atol=1e-10), (got - want).abs().max()


def test_spmm_gradients():
    Ad, As = sparse_case()
    x = torch.randn(6, 5, dtype=torch.float64)
    stmt = compute((i, k), sum_(j, A[i, j] * X[j, k]))
    ref = lambda A, X: A @ X  # noqa: E731
    check(stmt, ref, {"A": As, "X": x}, "X", {"A": Ad, "X": x})
    check(stmt, ref, {"A": As, "X": x}, "A", {"A": Ad, "X": x}, sparse=True)  # SDDMM


def test_gcn_shaped_statement():
    Ad, As = sparse_case(n=6, m=6)
    x = torch.randn(6, 4, dtype=torch.float64)
    dv, ev, bv = (torch.rand(6, dtype=torch.float64) for _ in range(3))
    bv = torch.rand(4, dtype=torch.float64)
    stmt = compute((i, k), relu(d[i] * sum_(j, A[i, j] * d[j] * X[j, k]) + e[i] * X[i, k] + b[k]))

    def ref(A, X, d, e, b):
        return torch.relu(d[:, None] * (A @ (d[:, None] * X)) + e[:, None] * X + b)
    ops = {"A": As, "X": x, "d": dv, "e": ev, "b": bv}
    dense = {"A": Ad, "X": x, "d": dv, "e": ev, "b": bv}
    for wrt in ("X", "d", "e", "b"):
        check(stmt, ref, ops, wrt, dense)
    check(stmt, ref, ops, "A", dense, sparse=True)


@pytest.mark.parametrize("fn,ref", [(exp, torch.exp), (sigmoid, torch.sigmoid), (tanh, torch.tanh),
                                    (lambda u: leaky_relu(u, 0.2), lambda u: torch.nn.functional.leaky_relu(u, 0.2)),
                                    (lambda u: elu(u, 1.0), torch.nn.functional.elu)])
def test_scalar_functions(fn, ref):
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(5, 3, dtype=torch.float64)
    stmt = compute((i, k), fn(X[i, k] * Y[i, k]))
    check(stmt, lambda X, Y: ref(X * Y), {"X": x, "Y": y}, "X", {"X": x, "Y": y})


def test_sddmm_gradient_wrt_dense():
    Ad, As = sparse_case(n=6, m=6)
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randn(6, 4, dtype=torch.float64)
    stmt = compute((i, j), A[i, j] * sum_(k, X[i, k] * Y[j, k]))
    got_out = sgnn.evaluate(stmt, A=As, X=x, Y=y)
    assert isinstance(got_out, sgnn.SparseTensor)
    # the upstream gradient of a sampled output is a sparse tensor with A's pattern
    g = torch.randn(As.nnz, dtype=torch.float64)
    gs = As.with_values(g)
    leaf = x.clone().requires_grad_(True)
    ((Ad * (leaf @ y.T)) * gs.to_dense()).sum().backward()
    got = sgnn.evaluate(derivative(stmt, "X").stmt, A=As, X=x, Y=y, **{GRAD: gs})
    assert torch.allclose(got, leaf.grad, atol=1e-10)


def test_unsupported_are_named():
    with pytest.raises(NotSupported, match="elementwise max"):
        derivative(compute((i, k), maximum(X[i, k], Y[i, k])), "X")
    with pytest.raises(NotSupported, match="softmax"):  # not a factor of a sum over its index
        derivative(compute((i, j), exp(softmax(j, X[i, j], over=A[i, j]))), "X")
    with pytest.raises(NotSupported, match="softmax"):  # a sum over more than its index
        derivative(compute((i,), sum_((j, k), softmax(j, X[j, k], over=A[i, j]) * Y[j, k])), "Y")


def test_max_and_softmax_derive():
    """max_ routes through a recomputed equality and a tie count; the softmax sum through
    recomputed row statistics. Values are checked against torch in test_engine_autodiff.py and
    test_attention_grad.py; here: the statements' shapes."""
    d = derivative(compute((i, k), max_(j, pattern(A[i, j]) * X[j, k])), "X")
    assert len(d.pre) == 1 and "step" in str(d.pre[0][1]) and OUT in str(d.pre[0][1])
    d = derivative(compute((i, k), max_(j, pattern(A[i, j]) * X[j, k]) + b[k]), "X")
    assert len(d.pre) == 2 and "max_" in str(d.pre[0][1])  # the maximum is recomputed, not OUT - b
    d = derivative(compute((i, k), sum_(j, softmax(j, d_(i, j), over=A[i, j]) * Y[j, k])), "Y")
    assert [st.idx for _, st in d.pre] == [("i",), ("i",)]  # row max and normaliser


def d_(i_, j_):
    return X[i_, j_] * e[j_]


def test_derived_statement_is_printable():
    stmt = compute((i, k), sum_(j, A[i, j] * X[j, k]))
    d = derivative(stmt, "X")
    assert not d.pre and "grad_out" in str(d) and Access("A", ("i", "_d0")) in list(walk(d.stmt.expr))


def test_hoists_a_forward_aggregation_it_multiplies():
    stmt = compute((i, k), Y[i, k] * sum_(j, A[i, j] * X[j, k]))
    assert not derivative(stmt, "Y").pre  # dY[i,k] = G * (sum_j A X): not under another sum, inline
    stmt2 = compute((i, k), d[i] * sum_(j, A[i, j] * X[j, k]))
    assert derivative(stmt2, "d").pre  # dd[i] sums over k: the aggregation is computed once, first


# ------------------------------------------------------------------ autograd through evaluate
def _run(stmt, ops):
    return sgnn.evaluate(stmt, **ops)


def test_autograd_node_gradcheck():
    from sgnn.engine import autodiff
    Ad, As = sparse_case()
    vals = As.values.clone().requires_grad_(True)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    stmt = compute((i, k), tanh(sum_(j, A[i, j] * X[j, k]) + b[k]))

    def fn(v, x, bias):
        return autodiff.evaluate(stmt, {"A": As.with_values(v), "X": x, "b": bias}, _run)
    assert torch.autograd.gradcheck(fn, (vals, x, bias))


def test_autograd_sampled_output():
    from sgnn.engine import autodiff
    _, As = sparse_case(n=6, m=6)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    stmt = compute((i, j), A[i, j] * sum_(k, X[i, k] * Y[j, k]))

    def fn(x, y):
        return autodiff.evaluate(stmt, {"A": As, "X": x, "Y": y}, _run).values
    assert torch.autograd.gradcheck(fn, (x, y))
