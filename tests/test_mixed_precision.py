"""Mixed precision: ``sgnn.config(precision="bf16")`` for float32 models, mixed kernels (narrow operands,
float32 result: ``evaluate(..., out_dtype=torch.float32)``), and float16 GEMMs computed in float32.

Bounds: a mixed kernel rounds nothing but its inputs (done before the call) and accumulates in float32,
so per element ``|out - ref| <= c·n·2^-24·Σ|terms|`` against float64 on the same inputs (``n`` the
reduction length). A mixed layer additionally rounds X (or X·W) to bfloat16 once each, so per element
``|y - y32| <= 2u·(|Â|·|X|·|W|^T) + c·n·2^-24·(...)`` with ``u = 2^-8``.
"""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings

import sgnn
from engine_cases import coos, make_sparse, random_coo, seeds
from sgnn.engine import layerplan, precision as prec
from sgnn.engine.expr import compute, indices, relu, sum_, tensors
from sgnn.engine.runtime import as_operand, evaluate, plan_for
from sgnn.errors import UserError
from sgnn.layers import GATConv, GCNConv, SAGEConv

bf16, f16, f32, f64 = torch.bfloat16, torch.float16, torch.float32, torch.float64
U = 2.0**-8  # bfloat16 unit roundoff
_i, _j, _k = indices("i j k")
_A, _X, _d, _b = tensors("A X d b")
GCN_LIKE = compute((_i, _k), relu(sum_(_j, _A[_i, _j] * _d[_j] * _X[_j, _k]) + _b[_k]))


def _operands(S, F: int, seed: int, narrow: torch.dtype, which: str):
    """A, X, d, b for GCN_LIKE; ``which`` operand ("X" or "A") stored ``narrow``, the others float32."""
    g = torch.Generator().manual_seed(seed)
    n = S.dense.shape[1]
    x = torch.randn(n, F, generator=g, dtype=f64).to(narrow if which == "X" else f32)
    d, b = torch.rand(n, generator=g).add(0.1), torch.randn(F, generator=g)
    a = S.operand
    ref = (S.dense * d.double()) @ x.double() + b.double()
    terms = (S.dense.abs() * d.double()) @ x.double().abs() + b.double().abs()
    return {"A": a, "X": x, "d": d, "b": b}, ref.clamp_min(0), terms, S.mask.sum(1, keepdim=True).double()


def _assert_within(out, ref, terms, n):
    bound = 2 * (n + 2) * 2.0**-24 * terms + 2.0**-30
    err = (out.double() - ref).abs()
    assert bool((err <= bound).all()), f"max excess {float((err - bound).max()):.3g}"


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("narrow,which", [(bf16, "X"), (f16, "X"), (bf16, "A")], ids=str)
@pytest.mark.parametrize("F", [16, 37])  # an exact register tile; a partial one (bounded loads)
@settings(max_examples=4, deadline=None)
@given(coo=coos(dups=False), seed=seeds)
def test_mixed_kernel_vs_dense(narrow, which, F, portable, coo, seed):
    """Narrow X (or A), float32 A / d / b: float32 output, accumulation bound, on both conversion paths."""
    S = make_sparse(coo, "csr", narrow if which == "A" else f32, torch.int32)
    ops, ref, terms, n = _operands(S, F, seed, narrow, which)
    with sgnn.config(portable_math=portable):
        out = evaluate(GCN_LIKE, ops, out_dtype=f32)
    assert out.dtype == f32 and out.shape == ref.shape
    _assert_within(out, ref, terms, n)


@pytest.mark.parametrize("narrow", [bf16, f16], ids=str)
@pytest.mark.parametrize("kind", ["powerlaw", "empty_rows"])
def test_mixed_kernel_long_rows_and_empty_rows(narrow, kind):
    S = make_sparse(random_coo(5, 400, 300, kind), "csr", f32, torch.int32)
    ops, ref, terms, n = _operands(S, 48, 7, narrow, "X")
    out = evaluate(GCN_LIKE, ops, out_dtype=f32)
    _assert_within(out, ref, terms, n)
    empty = S.mask.sum(1) == 0
    assert torch.equal(out[empty], ops["b"].clamp_min(0).expand(int(empty.sum()), -1))


def test_mixed_kernel_source_types_each_operand():
    """The mixed kernel's prototype: X narrow, d / b / A's values and the output float (T)."""
    S = make_sparse(random_coo(1, 30, 20, "uniform"), "csr", f32, torch.int32)
    ops, *_ = _operands(S, 16, 1, bf16, "X")
    p = plan_for(GCN_LIKE, {n: as_operand(t, n) for n, t in ops.items()}, out_dtype=f32)
    evaluate(GCN_LIKE, ops, out_dtype=f32)
    src = next(iter(p.kernels.values())).source
    assert "typedef sg::bf16 S;" in src and "const S* a_X" in src
    for name in ("a_d", "a_b", "a_A_val"):
        assert f"const T* {name}," in src, name
    assert "T* SG_RESTRICT out," in src


def test_out_dtype_rule_refuses_clearly():
    S = make_sparse(random_coo(1, 10, 8, "uniform"), "csr", f32, torch.int32)
    ops, *_ = _operands(S, 16, 1, bf16, "X")
    with pytest.raises(UserError, match="only torch.float32"):
        evaluate(GCN_LIKE, ops, out_dtype=f64)
    with pytest.raises(UserError, match="one of bfloat16 / float16"):
        evaluate(GCN_LIKE, {**ops, "d": ops["d"].to(f16)}, out_dtype=f32)  # two narrow dtypes
    with pytest.raises(UserError, match="one of bfloat16 / float16"):
        evaluate(GCN_LIKE, {**ops, "b": ops["b"].double()}, out_dtype=f32)
    with pytest.raises(UserError, match="dtype mismatch"):  # without out_dtype: refused as before
        evaluate(GCN_LIKE, ops)
    plain = evaluate(GCN_LIKE, {**ops, "X": ops["X"].float()}, out_dtype=f32)  # nothing narrow: float32
    torch.testing.assert_close(plain, evaluate(GCN_LIKE, {**ops, "X": ops["X"].float()}))


# ---------------------------------------------------------------- layers
N, E = 1500, 12000
LAYERS = {
    "gcn_kernel": lambda: GCNConv(48, 16),  # Â(XW)
    "gcn_gemm": lambda: GCNConv(16, 48),  # (ÂX)W
    "sage_kernel": lambda: SAGEConv(48, 16),
    "sage_gemm": lambda: SAGEConv(16, 48),
    "gcn_act": lambda: GCNConv(48, 16, act="relu"),
    "gat": lambda: GATConv(32, 16, heads=2),
    "gat_mean": lambda: GATConv(32, 16, heads=2, concat=False),
}
LINEAR = ("gcn_kernel", "gcn_gemm", "sage_kernel", "sage_gemm")


@pytest.fixture(scope="module")
def graph():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(0, N, (E,), generator=g)
    dst = (torch.rand(E, generator=g).pow(3) * N).long()  # power-law in-degrees, empty rows
    return torch.stack([src, dst]), g


def _abs_bound(m, x, ei):
    """|Â|·|X|·|W|^T (+ |root|): the same linear layer on |X| with |weights|, no bias."""
    a = copy.deepcopy(m)
    with torch.no_grad():
        for name, p in a.named_parameters():
            p.copy_(p.abs() if "bias" not in name else torch.zeros_like(p))
        return a(x.abs(), ei)


def _mixed(m, x, ei, **cfg):
    with torch.no_grad(), sgnn.config(precision="bf16", **cfg):
        return m(x, ei)


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("name", list(LAYERS))
def test_mixed_layer_vs_float32(graph, name, portable):
    ei, g = graph
    torch.manual_seed(3)
    m = LAYERS[name]().eval()
    x = torch.randn(N, m.in_channels, generator=g)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        ref = m(x, ei)
    out = _mixed(m, x, ei, portable_math=portable)
    assert out.dtype == f32 and out.shape == ref.shape
    assert not torch.equal(out, ref)  # bfloat16 rounding did happen
    assert all(v.dtype == f32 for v in m.state_dict().values())
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # parameters untouched
    err = (out - ref).abs()
    if name in LINEAR:  # per element, scaled by the reduction lengths (features, then neighbours)
        deg = torch.bincount(ei[1], minlength=N).double().add(m.in_channels + 2)[:, None]
        bound = 2 * U * _abs_bound(m, x, ei).double() * (1 + deg * 2.0**-16) + 1e-6
        assert bool((err.double() <= bound).all()), f"max excess {float((err.double() - bound).max()):.3g}"
    else:  # softmax: norm-wise
        assert float(err.max() / ref.abs().max()) <= 4 * U
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    assert agree >= 0.99, agree


def _whats(m, x, ei, **cfg):
    with sgnn.config(**cfg):
        return [d.what for d in sgnn.explain(m, x, ei).decisions]


def test_explain_shows_the_one_decision(graph):
    ei, g = graph
    x = torch.randn(N, 48, generator=g)
    on = _whats(GCNConv(48, 16).eval(), x, ei, precision="bf16")
    assert sum(w.startswith("precision: mixed bf16") for w in on) == 1, on
    assert any(w.startswith("X·W: a float32 GEMM, its output rounded to bfloat16") for w in on), on
    off = _whats(GCNConv(48, 16).eval(), x, ei, precision="fp32")
    assert not any("bf16" in w or "bfloat16" in w for w in off), off
    gemm = _whats(GCNConv(16, 48).eval(), x[:, :16].contiguous(), ei, precision="bf16")
    assert any(w.startswith("precision: mixed bf16: X stored bfloat16") for w in gemm), gemm


def test_gemm_side_follows_widths_and_cpu(graph, monkeypatch):
    """X converted before the GEMM when in <= out and the CPU has AVX512-BF16, else after."""
    ei, g = graph
    m, x = GATConv(16, 32, heads=2).eval(), torch.randn(N, 16, generator=g)
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    layerplan.clear()
    assert any("X converted to bfloat16 before the GEMM" in w for w in _whats(m, x, ei, precision="bf16"))
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset())
    layerplan.clear()
    whats = _whats(m, x, ei, precision="bf16")
    assert any("a float32 GEMM, its output rounded" in w for w in whats), whats
    with torch.no_grad():
        ref = m(x, ei)
    assert float((_mixed(m, x, ei) - ref).abs().max() / ref.abs().max()) <= 4 * U
    layerplan.clear()


def test_env_var_and_bad_values(graph, monkeypatch):
    ei, g = graph
    m, x = GCNConv(48, 16).eval(), torch.randn(N, 48, generator=g)
    for bad in ("fp16", "half", "int8", 16):
        with pytest.raises(UserError, match="expected 'bf16'"):
            with sgnn.config(precision=bad):
                pass
    with pytest.raises(UserError, match="float16 is not offered"):
        with sgnn.config(precision="fp16"):
            pass
    monkeypatch.setenv("SGNN_PRECISION", "bf16")
    assert any(w.startswith("precision: mixed bf16") for w in [d.what for d in sgnn.explain(m, x, ei).decisions])
    monkeypatch.setenv("SGNN_PRECISION", "bogus")
    with pytest.raises(UserError, match="SGNN_PRECISION"), torch.no_grad():
        m(x, ei)


def test_training_stays_float32(graph):
    """Under autograd the differentiable formulation runs, unaffected by the mixed mode."""
    ei, g = graph
    m, x = GCNConv(48, 16), torch.randn(N, 48, generator=g)
    y32 = m(x.clone().requires_grad_(True), ei)
    with sgnn.config(precision="bf16"):
        xb = x.clone().requires_grad_(True)
        y = m(xb, ei)
        y.sum().backward()
    assert y.dtype == f32 and torch.equal(y.detach(), y32.detach()) and xb.grad.dtype == f32


def test_narrow_models_are_left_alone(graph):
    ei, g = graph
    m, x = GCNConv(48, 16).eval().bfloat16(), torch.randn(N, 48, generator=g).bfloat16()
    whats = _whats(m, x, ei, precision="bf16")
    assert "precision: as the layer's dtype (mixed bf16 not applied)" in whats
    with torch.no_grad(), sgnn.config(precision="bf16"):
        assert m(x, ei).dtype == bf16


def test_mixed_row_blocked(graph, monkeypatch):
    ei, g = graph
    monkeypatch.setattr(layerplan, "BLOCK_MIN_BYTES", 0)
    monkeypatch.setattr(layerplan, "BLOCK_BYTES", 16 * 4 * 400)  # blocks of 1024 rows (the minimum)
    layerplan.clear()
    m, x = SAGEConv(16, 48).eval(), torch.randn(N, 16, generator=g)
    with torch.no_grad():
        ref = m(x, ei)
    out = _mixed(m, x, ei)
    layerplan.clear()
    assert out.dtype == f32 and float((out - ref).abs().max() / ref.abs().max()) <= 2 * U


# ---------------------------------------------------------------- float16 GEMMs without AVX512-FP16
def test_float16_product_is_float32_rounded_once():
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(700, 64, generator=g).half(), torch.randn(24, 64, generator=g).half()
    z = layerplan.product(x, w, cast=(f32, f16))
    assert z.dtype == f16 and torch.equal(z, (x.float() @ w.float().t()).half())


@pytest.mark.parametrize("name", ["gcn_kernel", "gcn_gemm", "sage_gemm", "gat"])
def test_float16_decision_follows_the_cpu(graph, monkeypatch, name):
    ei, g = graph
    m = LAYERS[name]().eval().half()
    x = torch.randn(N, m.in_channels, generator=g).half()
    with torch.no_grad():
        ref = copy.deepcopy(m).float()(x.float(), ei)
    for flags, upcast in ((frozenset(), True), (frozenset({"avx512_fp16"}), False)):
        monkeypatch.setattr(prec, "cpu_flags", lambda flags=flags: flags)
        layerplan.clear()
        whats = _whats(m, x, ei)
        assert any(w.startswith("float16 GEMMs: in float32") for w in whats) == upcast, whats
        with torch.no_grad():
            out = m(x, ei)
        assert out.dtype == f16
        assert float((out.float() - ref).abs().max() / ref.abs().max()) <= 4e-3
    layerplan.clear()
