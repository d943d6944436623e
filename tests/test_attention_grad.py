"""The fused attention op under autograd: gradcheck in float64, PyG's GATConv gradients (same
weights), float32 tolerances that grow with the degree, and the backward's statements."""
from __future__ import annotations

import pytest
import torch

import sgnn
from sgnn.engine import autodiff
from sgnn.engine.derive import derivatives
from sgnn.engine.expr import compute, exp, indices, softmax, sum_, tensors
from sgnn.errors import NotSupported, UserError
from sgnn.harness.data import power_law_edges
from sgnn.layers.attention import _edge_tensor, attention, attention_statement

torch_geometric = pytest.importorskip("torch_geometric")


def csr(n: int, edge_index: torch.Tensor, dtype=torch.float64):
    """(pattern-only CSR adjacency [target, source], CSR order of the edges)."""
    src, dst = edge_index
    order = torch.argsort(dst * n + src)
    dense = torch.zeros(n, n, dtype=dtype).index_put_((dst, src), torch.ones(src.numel(), dtype=dtype))
    return sgnn.SparseTensor.from_dense(dense).with_values(None), order


def small_graph(n=9, seed=0):
    """Edges with an empty row (node 2), a node with one neighbour (node 4), and a self loop."""
    g = torch.Generator().manual_seed(seed)
    ei = power_law_edges(n, 3 * n, g)
    keep = (ei[1] != 2) & (ei[1] != 4)
    ei = torch.cat([ei[:, keep], torch.tensor([[0, 5], [4, 5]])], 1)
    return ei


@pytest.mark.parametrize("heads,ch", [(1, 3), (3, 2)])
@pytest.mark.parametrize("dst,edge,bias", [(False, False, False), (True, False, True), (True, True, False),
                                           (False, True, True)])
def test_gradcheck(heads, ch, dst, edge, bias):
    n = 9
    ei = small_graph(n)
    adj, _ = csr(n, ei)
    g = torch.Generator().manual_seed(1)
    args = [torch.randn(n, heads, generator=g, dtype=torch.float64),
            torch.randn(n, heads, generator=g, dtype=torch.float64) if dst else None,
            torch.randn(n, heads, ch, generator=g, dtype=torch.float64),
            torch.randn(adj.nnz, heads, generator=g, dtype=torch.float64) if edge else None,
            torch.randn(heads, ch, generator=g, dtype=torch.float64) if bias else None]
    present = [k for k, a in enumerate(args) if a is not None]
    leaves = tuple(args[k].requires_grad_(True) for k in present)

    def fn(*xs):
        full = list(args)
        for k, x in zip(present, xs):
            full[k] = x
        a_src, a_dst, x, el, b = full
        return attention(adj, a_src, a_dst, x, 0.2, el, b)
    assert torch.autograd.gradcheck(fn, leaves)
    out = fn(*leaves)
    assert torch.equal(out[2], torch.zeros_like(out[2]) + (args[4] if bias else 0))  # no sources: bias only


def pyg_pair(n, ei, heads, ch, edge_dim=None, dtype=torch.float64, seed=0):
    from torch_geometric.nn import GATConv
    torch.manual_seed(seed)
    conv = GATConv(7, ch, heads=heads, add_self_loops=False, edge_dim=edge_dim).to(dtype)
    with torch.no_grad():  # PyG zero-initialises the bias; a random one exercises its gradient
        conv.bias.normal_()
    x = torch.randn(n, 7, dtype=dtype)
    ea = torch.randn(ei.shape[1], edge_dim, dtype=dtype) if edge_dim else None
    return conv, x, ea


def sgnn_gat(conv, adj, order, x, ea):
    """GATConv's math with the fused attention op: projections in torch, attention in sgnn."""
    H, C = conv.heads, conv.out_channels
    xp = conv.lin(x).view(-1, H, C)
    a_src, a_dst = (xp * conv.att_src).sum(-1), (xp * conv.att_dst).sum(-1)
    el = None
    if ea is not None:
        el = (conv.lin_edge(ea).view(-1, H, C) * conv.att_edge).sum(-1).index_select(0, order)
    out = attention(adj, a_src, a_dst, xp, conv.negative_slope, el, None)
    return out.reshape(-1, H * C) + conv.bias


@pytest.mark.parametrize("heads,ch,edge_dim", [(1, 4, None), (4, 3, None), (2, 3, 5)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_against_pyg_gatconv(heads, ch, edge_dim, dtype):
    n = 60 if dtype == torch.float64 else 500
    g = torch.Generator().manual_seed(3)
    ei = power_law_edges(n, 6 * n, g)
    ei = ei[:, ei[1] != 0]  # node 0: no sources
    adj, order = csr(n, ei, dtype)
    conv, x, ea = pyg_pair(n, ei, heads, ch, edge_dim, dtype)
    x.requires_grad_(True)
    params = [x] + [p for p in conv.parameters()]
    want_out = conv(x, ei, ea)
    w = torch.randn(want_out.shape, generator=g, dtype=dtype)
    want = torch.autograd.grad(want_out, params, w, allow_unused=True)
    got_out = sgnn_gat(conv, adj, order, x, ea)
    got = torch.autograd.grad(got_out, params, w, allow_unused=True)
    deg = int(torch.bincount(ei[0], minlength=n).max()) + int(torch.bincount(ei[1], minlength=n).max())
    tol = 1e-10 if dtype == torch.float64 else 2e-6 * deg
    assert torch.allclose(got_out, want_out, atol=tol, rtol=tol)
    for (name, _), a, b in zip([("x", None)] + list(conv.named_parameters()), got, want):
        if b is None:
            assert a is None, name
            continue
        scale = max(1.0, float(b.abs().max()))
        assert torch.allclose(a, b, atol=tol * scale, rtol=tol), (name, float((a - b).abs().max()))


def test_backward_stores_no_per_edge_tensor():
    """Every intermediate statement of GAT's backward is indexed by nodes (N×H, N×H×C): none by an
    edge (i and j together). Only the edge logits' own gradient is per edge."""
    stmt = attention_statement(True, True, True, 0.2)
    b = derivatives(stmt, {"as_": False, "ad": False, "X": False, "ae": True, "b": False})
    for name, st in b.pre:
        assert not {"i", "j"} <= set(st.idx), (name, str(st))
    assert {n: len(st.idx) for n, st in b.stmts.items()} == {"as_": 2, "ad": 2, "X": 3, "ae": 3, "b": 2}
    assert len(b.pre) == 5  # row max, normaliser, beta, and the two exchanged sums (N×H×C)


def test_explain_shows_attention_backward():
    n = 9
    adj, _ = csr(n, small_graph(n))
    g = torch.Generator().manual_seed(2)
    ops = {"A": adj, "as_": torch.randn(n, 2, generator=g, dtype=torch.float64),
           "ad": torch.randn(n, 2, generator=g, dtype=torch.float64),
           "X": torch.randn(n, 2, 3, generator=g, dtype=torch.float64)}
    shown = autodiff.explain_backward(attention_statement(True, False, False, 0.2), ops,
                                      lambda s, o: sgnn.evaluate(s, **o))
    names = [n for n, _, _ in shown]
    assert sorted(names[-3:]) == ["X", "ad", "as_"] and all(n.startswith("_t") for n in names[:-3])
    for _, st, ex in shown:
        assert ex.expression == str(st) and ex.cpp
    by = {n: ex for n, _, ex in shown}
    assert any("csc" in str(d).lower() for d in by["X"].decisions)  # dX: the transposed pattern


def test_edge_logit_backward_explains_with_its_column_ordered_twin():
    n = 9
    adj, _ = csr(n, small_graph(n))
    el = torch.randn(adj.nnz, 2, dtype=torch.float64)
    ops = {"ae": _edge_tensor(adj, el), "as_": torch.randn(n, 2, dtype=torch.float64),
           "X": torch.randn(n, 2, 3, dtype=torch.float64)}
    shown = autodiff.explain_backward(attention_statement(False, True, False, 0.2), ops,
                                      lambda s, o: sgnn.evaluate(s, **o))
    by = {n: ex for n, _, ex in shown}
    assert by["ae"].output in ("sampled", "assembled")  # in ae's pattern (a 3-d driver assembles today)
    assert "ae[i,_d0,_d1]" in by["X"].formats  # dX reads the edge logits by column
    assert shown[-1][0] in ("X", "ae", "as_")


def test_repeated_edges_each_count():
    """A ``du`` adjacency (repeated edges): each repeat is one more softmax term, as in an edge list."""
    n, heads, ch = 5, 2, 3
    rows, cols = torch.tensor([0, 0, 0, 1, 3, 3, 3, 4]), torch.tensor([1, 1, 2, 0, 0, 4, 4, 3])
    pos = torch.zeros(n + 1, dtype=torch.int32)
    pos[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    adj = sgnn.SparseTensor((n, n), sgnn.Format("du"), [None, pos], [None, cols.to(torch.int32)], None)
    g = torch.Generator().manual_seed(4)
    args = [torch.randn(n, heads, generator=g, dtype=torch.float64).requires_grad_(True),
            torch.randn(n, heads, generator=g, dtype=torch.float64).requires_grad_(True),
            torch.randn(n, heads, ch, generator=g, dtype=torch.float64).requires_grad_(True),
            torch.randn(rows.numel(), heads, generator=g, dtype=torch.float64).requires_grad_(True)]
    s = torch.nn.functional.leaky_relu(args[0][cols] + args[1][rows] + args[3], 0.2)
    alpha = torch_geometric.utils.softmax(s, rows, num_nodes=n)
    want = torch.zeros(n, heads, ch, dtype=torch.float64).index_add(0, rows, alpha[..., None] * args[2][cols])
    got = attention(adj, args[0], args[1], args[2], 0.2, args[3])
    w = torch.randn(got.shape, generator=g, dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, args, w), torch.autograd.grad(want, args, w)):
        assert torch.allclose(a, b, atol=1e-12)


def test_unsupported_softmax_shapes_are_named():
    i, j, k = indices("i j k")
    A, X, Y = tensors("A X Y")
    with pytest.raises(NotSupported, match="softmax"):  # not a factor of a sum over its index
        derivatives(compute((i, j), exp(softmax(j, X[i, j], over=A[i, j]))), {"X": False})
    with pytest.raises(NotSupported, match="softmax"):  # under another reduction
        stmt = compute((i,), sum_(k, sum_(j, softmax(j, X[j, k], over=A[i, j]) * Y[j, k])))
        derivatives(stmt, {"X": False})


def test_bad_input_is_refused_by_name():
    adj, _ = csr(5, torch.tensor([[0, 1], [1, 2]]))
    x = torch.randn(5, 2, 3)
    with pytest.raises(UserError, match="a_src"):
        attention(adj, torch.randn(4, 2), None, x)
    with pytest.raises(UserError, match="edge_logits"):
        attention(adj, torch.randn(5, 2), None, x, 0.2, torch.randn(3, 2))
    with pytest.raises(UserError, match="dtype"):
        attention(adj, torch.randn(5, 2, dtype=torch.float64), None, x)


def test_double_backward_refused_and_inference_mode_records_nothing():
    n = 9
    adj, _ = csr(n, small_graph(n))
    a = torch.randn(n, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(n, 2, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(attention(adj, a, None, x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="twice|once_differentiable"):
        g.sum().backward()
    with torch.inference_mode():
        out = attention(adj, a, None, x)
    assert not out.requires_grad and out.grad_fn is None


def test_inline_float_exp_is_accurate():
    """sgnn_runtime.h's float exp (inline, so SIMD loops vectorise it): within 2 ulp of exp in float64,
    and libm's values at the edges (overflow to inf, gradual underflow, -inf -> 0, NaN)."""
    from sgnn.engine.runtime import evaluate
    (k,), (O,) = indices("k"), tensors("O")
    x = torch.cat([torch.linspace(-103.9, 88.7, 1_000_003), torch.randn(100_000) * 5,
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, 88.72283, 88.7229, 89.0, -87.4, -95.0, -104.5,
                                 float("inf"), float("-inf"), float("nan")])]).float()
    got = evaluate(compute((k,), exp(O[k])), {"O": x})
    want = torch.exp(x.double())
    normal = (want >= torch.finfo(torch.float32).tiny) & (want <= torch.finfo(torch.float32).max)
    rel = ((got.double() - want).abs() / want)[normal]
    assert float(rel.max()) < 2 * 2.0 ** -23, float(rel.max())
    sub = want < torch.finfo(torch.float32).tiny  # gradual underflow: within 2 denormal steps
    assert bool(sub.sum() > 1000) and float((got.double()[sub] - want[sub]).abs().max()) <= 2 * 2.0 ** -149
    assert torch.equal(got[-3:-1], torch.tensor([float("inf"), 0.0])) and got[-1].isnan()
    assert got[(x > 88.7229) & x.isfinite()].isinf().all()
