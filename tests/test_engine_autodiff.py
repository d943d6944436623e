"""max_/min_ aggregation under autograd: derived backward statements vs gradcheck and torch's
``scatter_reduce`` (amax/amin, include_self=False: PyG's max/min aggregation), ties included."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import sgnn
from sgnn.engine import autodiff
from sgnn.engine.derive import derivatives
from sgnn.harness.data import power_law_edges
from sgnn.layers.attention import extreme, extreme_statement


def graph(n: int, m: int, seed: int, empty=(), weighted=False, dtype=torch.float64, ints=False):
    """A CSR adjacency with rows ``empty`` emptied, plus (rows, cols, values) in its storage order."""
    g = torch.Generator().manual_seed(seed)
    ei = power_law_edges(n, m, g)
    keep = ~torch.isin(ei[1], torch.tensor(list(empty), dtype=torch.long))
    rows, cols = ei[1][keep], ei[0][keep]
    vals = (torch.randint(1, 3, (rows.numel(),), generator=g) if ints else
            torch.rand(rows.numel(), generator=g) + 0.5).to(dtype)
    dense = torch.zeros(n, n, dtype=dtype).index_put_((rows, cols), vals)
    adj = sgnn.SparseTensor.from_dense(dense)
    r = torch.repeat_interleave(torch.arange(n), torch.diff(adj.pos[1].long()))
    c = adj.crd[1].long()
    return (adj if weighted else adj.with_values(None)), r, c, adj.values


def torch_extreme(z, rows, cols, vals, n, op, weighted):
    msg = z.index_select(0, cols) * (vals.view(-1, 1) if weighted else 1)
    idx = rows.view(-1, 1).expand_as(msg)
    return msg.new_zeros((n, z.shape[1])).scatter_reduce(0, idx, msg, "a" + op, include_self=False)


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradcheck(op, weighted):
    adj, *_ = graph(12, 40, 1, empty=(3,), weighted=weighted)
    z = torch.randn(12, 5, dtype=torch.float64, requires_grad=True)
    if weighted:
        v = adj.values.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda z, v: extreme(adj.with_values(v), z, op), (z, v))
    else:
        assert torch.autograd.gradcheck(lambda z: extreme(adj, z, op), (z,))


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("weighted", [False, True])
def test_ties_split_as_torch(op, weighted):
    """Integer-valued inputs: many ties, and extremes exactly 0 (torch counts its zero start too)."""
    n = 30
    adj, rows, cols, vals = graph(n, 150, 2, empty=(0, 7), weighted=weighted, ints=True)
    z = torch.randint(-1, 2, (n, 6)).double()
    assert ((z.unsqueeze(0) == z.unsqueeze(1)).sum() > n * 6)
    _compare(adj, z, rows, cols, vals, op, weighted, atol=1e-12)


def _compare(adj, z, rows, cols, vals, op, weighted, atol, rtol=0.0):
    n = adj.shape[0]
    z1 = z.clone().requires_grad_(True)
    v1 = vals.clone().requires_grad_(True) if weighted else None
    out = extreme(adj.with_values(v1) if weighted else adj, z1, op)
    z2 = z.clone().requires_grad_(True)
    v2 = vals.clone().requires_grad_(True) if weighted else None
    ref = torch_extreme(z2, rows, cols, v2, n, op, weighted)
    assert torch.allclose(out, ref, atol=atol, rtol=rtol)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
    leaves = (z1, v1) if weighted else (z1,)
    got = torch.autograd.grad(out, leaves, g)
    want = torch.autograd.grad(ref, (z2, v2) if weighted else (z2,), g)
    deg = torch.bincount(cols, minlength=n).max().item()  # a source's gradient sums over its targets
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=atol * max(1, deg), rtol=rtol), (a - b).abs().max()


def test_empty_rows_get_no_gradient():
    adj, rows, cols, vals = graph(10, 30, 3, empty=(1, 2))
    z = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    out = extreme(adj, z, "max")
    assert (out[1] == 0).all() and (out[2] == 0).all()
    g = torch.zeros_like(out)
    g[1] = g[2] = 1.0  # only the empty rows' upstream gradient
    (gz,) = torch.autograd.grad(out, z, g)
    assert (gz == 0).all()


@settings(max_examples=12)
@given(n=st.integers(2, 40), density=st.floats(0.5, 4.0), k=st.integers(1, 9), seed=st.integers(0, 2**16),
       op=st.sampled_from(["max", "min"]), weighted=st.booleans(), ints=st.booleans())
def test_power_law_against_torch(n, density, k, seed, op, weighted, ints):
    m = min(n * (n - 1), max(1, int(density * n)))
    adj, rows, cols, vals = graph(n, m, seed, weighted=weighted, ints=ints)
    g = torch.Generator().manual_seed(seed)
    z = (torch.randint(-2, 3, (n, k), generator=g) if ints else torch.randn(n, k, generator=g)).double()
    _compare(adj, z, rows, cols, vals, op, weighted, atol=1e-12)


@pytest.mark.parametrize("op", ["max", "min"])
def test_float32_against_torch(op):
    n = 400
    adj, rows, cols, vals = graph(n, 4000, 4, weighted=True, dtype=torch.float32)
    z = torch.randn(n, 16, generator=torch.Generator().manual_seed(1))
    _compare(adj, z, rows, cols, vals, op, True, atol=1e-6, rtol=1e-5)


def test_max_statements_share_intermediates_and_need_no_per_edge_tensor():
    stmt = extreme_statement("max", True)
    b = derivatives(stmt, {"Z": False, "A": True})
    assert len(b.pre) == 1  # the tie count, read by both gradients; the maximum is the saved output
    assert set(b.pre[0][1].idx) == {"i", "k"}
    assert "out_value" in str(b.pre[0][1]) and "grad_out" in str(b.stmts["Z"])


def test_explain_shows_the_backward_statements():
    adj, *_ = graph(12, 40, 1, weighted=True)
    z = torch.randn(12, 4, dtype=torch.float64)
    shown = autodiff.explain_backward(extreme_statement("max", True), {"A": adj, "Z": z},
                                      lambda s, o: sgnn.evaluate(s, **o))
    names = [n for n, _, _ in shown]
    assert names[0] == "_t0" and sorted(names[1:]) == ["A", "Z"]
    ex = {n: e for n, _, e in shown}
    assert any("convert" in str(d) and "csc" in str(d).lower() for d in ex["Z"].decisions)  # Aᵀ: a CSC
    assert ex["A"].output == "sampled"  # SDDMM for the values
    assert "step" in ex["_t0"].cpp and str(shown[0][1]) in str(ex["_t0"])
