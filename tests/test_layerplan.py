"""The layer planner (``engine.layerplan``): decisions taken as documented, plans reused, one cache rule."""
from __future__ import annotations

import pytest
import torch

import sgnn
from sgnn.engine import layerplan, operands, runtime
from sgnn.engine.schedule import Decision
from sgnn.layers import GATConv, GCNConv, SAGEConv


def _graph(n=300, e=2400, seed=0):
    return torch.randint(0, n, (2, e), generator=torch.Generator().manual_seed(seed))


def _x(n, f, density=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=g)
    return x * (torch.rand(n, f, generator=g) < density) if density < 1 else x


def _whats(e) -> list[str]:
    assert all(isinstance(d, Decision) for d in e.decisions), e.decisions
    return [d.what for d in e.decisions]


def _reference(conv, x, ei):
    """The differentiable formulation (no planner): the same layer under autograd."""
    return conv(x.clone().requires_grad_(True), ei).detach()


@pytest.mark.parametrize("make", [GCNConv, SAGEConv])
@pytest.mark.parametrize("f_in,f_out,order", [(32, 8, "Â(XW)"), (8, 32, "(ÂX)W"), (16, 16, "(ÂX)W")])
def test_association_follows_the_widths(make, f_in, f_out, order):
    conv, x, ei = make(f_in, f_out).eval(), _x(300, f_in), _graph()
    e = sgnn.explain(conv, x, ei)
    assert f"association: {order}" in _whats(e)
    assert e.statements[0][1] == ("gemm" if order == "(ÂX)W" else "kernel")
    with torch.no_grad():
        torch.testing.assert_close(conv(x, ei), _reference(conv, x, ei), rtol=1e-4, atol=1e-5)


def test_max_keeps_the_written_order():
    e = sgnn.explain(SAGEConv(8, 32, aggr="max"), _x(300, 8), _graph())
    assert "association: (ÂX)W, as written" in _whats(e)
    e = sgnn.explain(GCNConv(8, 32, aggr="max"), _x(300, 8), _graph())
    assert "association: Â(XW), as written" in _whats(e)


@pytest.mark.parametrize("make", [GCNConv, SAGEConv, lambda i, o: GATConv(i, o, heads=2)])
def test_sparse_features_for_a_mostly_zero_matrix_only(make):
    ei = _graph(2000, 8000)
    sparse, dense = _x(2000, 64, density=0.02), _x(2000, 64)
    conv = make(64, 8).eval()
    picked = [w for w in _whats(sgnn.explain(conv, sparse, ei)) if w.startswith("X·W")]
    assert picked and all("sparse x dense" in w for w in picked), picked
    picked = [w for w in _whats(sgnn.explain(conv, dense, ei)) if w.startswith("X·W")]
    assert picked and all("torch GEMM" in w for w in picked), picked
    with torch.no_grad():
        torch.testing.assert_close(conv(sparse, ei), _reference(conv, sparse, ei), rtol=1e-4, atol=1e-5)


def test_bias_and_activation_placement():
    x, ei = _x(300, 16), _graph()
    e = sgnn.explain(GCNConv(16, 4, act="relu"), x, ei)  # the kernel writes the output
    assert "bias and activation: in the kernel's epilogue" in _whats(e)
    assert "relu(" in e.kernels[-1].expression and "b[k]" in e.kernels[-1].expression
    e = sgnn.explain(GCNConv(16, 64, act="relu"), x, ei)  # the GEMM writes it
    assert any(w.startswith("bias: in the GEMM (addmm)") for w in _whats(e))
    assert "relu(" not in e.kernels[-1].expression and "b[" not in e.kernels[-1].expression
    e = sgnn.explain(GATConv(16, 4, heads=3, concat=False, act="elu"), x, ei)  # heads averaged after
    assert any(w.startswith("bias and activation: after the kernel") for w in _whats(e))
    assert "= elu(" not in e.kernels[-1].expression


@pytest.mark.parametrize("make", [lambda: GCNConv(16, 32, act="relu"), lambda: SAGEConv(16, 32, act="tanh")])
def test_row_blocking_above_the_threshold(make, monkeypatch):
    conv, x, ei = make().eval(), _x(5000, 16), _graph(5000, 40000)
    with torch.no_grad():
        ref = conv(x, ei)
    assert "rows: one pass" in _whats(sgnn.explain(conv, x, ei))
    monkeypatch.setattr(layerplan, "BLOCK_MIN_BYTES", 0)
    monkeypatch.setattr(layerplan, "BLOCK_BYTES", 16 * 4 * 1500)  # 4 blocks of 1500 rows, the last one short
    layerplan.clear()
    try:
        e = sgnn.explain(conv, x, ei)
        with torch.no_grad():
            out = conv(x, ei)
    finally:
        layerplan.clear()
    assert "row-blocked (ÂX)W: 4 blocks of 1500 rows" in _whats(e)
    assert len(e.kernels) == 4
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: GCNConv(16, 8), lambda: SAGEConv(16, 32), lambda: GATConv(16, 4, heads=2)])
def test_warm_call_reuses_the_plan(make):
    conv, x, ei = make().eval(), _x(300, 16), _graph()
    with torch.no_grad():
        first = conv(x, ei)
        built, kernels = layerplan.STATS["built"], len(runtime._plans)
        again = conv(x, ei)
    assert layerplan.STATS["built"] == built, "a warm call plans again"
    assert len(runtime._plans) == kernels, "a warm call makes a new kernel plan"
    assert torch.equal(first, again)


def test_an_equal_statement_is_the_same_key():
    from sgnn.layers import gcn_conv
    a = gcn_conv.statement("sum", True, True, True, True, None)
    b = gcn_conv.statement.__wrapped__("sum", True, True, True, True, None)  # built anew, equal
    assert a is not b and a == b
    assert layerplan.canonical(a) == layerplan.canonical(b)


def test_explain_prints_the_whole_layer_call():
    e = sgnn.explain(GCNConv(16, 8, act="relu"), _x(300, 16), _graph())
    text = str(e)
    assert "== layer statement" in text and "sum_{f}((X[j,f] * W[k,f]))" in text  # X·W is in the statement
    assert "planned as: kernel" in text and "association: Â(XW)  (in=16, out=8" in text
    assert text.count("#### kernel") == len(e.kernels) == 1 and "== loop IR" in text


def test_edits_invalidate_derived_operands():
    """In-place edits of features and weights are seen (version counter): no stale sparse copy or transpose."""
    conv, ei = GCNConv(64, 8).eval(), _graph(2000, 8000)
    x = _x(2000, 64, density=0.02)
    with torch.no_grad():
        before = conv(x, ei)
        conv.lin.weight.mul_(2)
        torch.testing.assert_close(conv(x, ei), 2 * before, rtol=1e-5, atol=1e-5)
        x.mul_(0.5)
        torch.testing.assert_close(conv(x, ei), before, rtol=1e-5, atol=1e-5)


def test_inference_tensors_are_not_cached():
    with torch.inference_mode():
        x = _x(2000, 64, density=0.02)
        w = torch.randn(8, 64)
        assert operands.sparse_features(x) is None  # no version counter: never a cached CSR
        assert operands.transposed(w) is not operands.transposed(w)
    y = _x(2000, 64, density=0.02)
    assert operands.sparse_features(y) is operands.sparse_features(y)
