"""Every expression kind against a dense torch reference, on every input format.

Three layers, after TACO's test suite:

1. property tests (hypothesis): random shapes (0 rows / columns included), empty rows, a single
   nonzero, power-law degrees, repeated COO coordinates; one pytest case per
   (expression, input variant, value dtype, index dtype), so hypothesis varies only data and
   shapes and each case compiles one kernel;
2. a table: expression × format × awkward shape (0×0, 0×5, 5×0, 33×127 with an empty and a
   full row) on integer-valued floats, compared for exact equality;
3. the automatic schedule against a plain one (no tiles, one thread) and across thread counts,
   and wide features that take the register and cache tiling paths.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sgnn
from engine_cases import (Sparse, assert_close, attention_ref, coos, dense_rand, make_sparse, masked_max_ref,
                          random_coo, seeds)

f32, f64, i32, i64 = torch.float32, torch.float64, torch.int32, torch.int64

i, j, k, h, c = sgnn.indices("i j k h c")
A, B, X, AD, AS = sgnn.tensors("A B X ad as_")
ATTENTION = sgnn.compute((i, h, c), sgnn.sum_(j, sgnn.softmax(
    j, sgnn.leaky_relu(AD[i, h] + AS[j, h], 0.2), over=A[i, j]) * X[j, h, c]))
MAX = sgnn.compute((i, k), sgnn.max_(j, sgnn.pattern(A[i, j]) * X[j, k]))
RELU = sgnn.compute((i, k), sgnn.relu(sgnn.sum_(j, A[i, j] * X[j, k])))
EXP = sgnn.compute((i, k), sgnn.exp(sgnn.sum_(j, A[i, j] * X[j, k])))
ADD = sgnn.compute((i, j), A[i, j] + B[i, j])
MUL = sgnn.compute((i, j), A[i, j] * B[i, j])


# ---------------------------------------------------------------- expression kinds
# Each takes the sparse operand(s), a seed for the dense operands and a feature width, and
# returns (result, float64 reference, reference on |inputs| or None, expected stored pattern or None).


def _spmm(S: Sparse, seed, F, dt, integer=False):
    x = dense_rand(seed, S.dense.shape[1], F, dtype=dt, integer=integer)
    out = sgnn.einsum("ik,kj->ij", S.operand, x)
    return out, S.dense @ x.double(), S.magnitude @ x.double().abs(), None


def _spmv(S, seed, F, dt, integer=False):
    x = dense_rand(seed, S.dense.shape[1], dtype=dt, integer=integer)
    out = sgnn.einsum("ij,j->i", S.operand, x)
    return out, S.dense @ x.double(), S.magnitude @ x.double().abs(), None


def _sddmm(S, seed, F, dt, integer=False):
    m, n = S.dense.shape
    x = dense_rand(seed, m, F, dtype=dt, integer=integer).double()
    y = dense_rand(seed + 1, n, F, dtype=dt, integer=integer).double()
    out = sgnn.einsum("ij,ik,jk->ij", S.operand, x.to(dt), y.to(dt))
    return out, S.dense * (x @ y.T), S.magnitude * (x.abs() @ y.abs().T), S.mask


def _scaling(S, seed, F, dt, integer=False):
    m, n = S.dense.shape
    d0 = dense_rand(seed, m, dtype=dt, integer=integer).double()
    d1 = dense_rand(seed + 1, n, dtype=dt, integer=integer).double()
    x = dense_rand(seed + 2, n, F, dtype=dt, integer=integer).double()
    out = sgnn.einsum("i,ij,j,jk->ik", d0.to(dt), S.operand, d1.to(dt), x.to(dt))
    ref = (d0[:, None] * S.dense * d1[None, :]) @ x
    scale = (d0.abs()[:, None] * S.magnitude * d1.abs()[None, :]) @ x.abs()
    return out, ref, scale, None


def _hadamard(S, seed, F, dt, integer=False):
    y = dense_rand(seed, *S.dense.shape, dtype=dt, integer=integer).double()
    out = sgnn.einsum("ij,ij->ij", S.operand, y.to(dt))
    return out, S.dense * y, S.magnitude * y.abs(), S.mask


def _rowsum(S, seed, F, dt, integer=False):
    return sgnn.einsum("ij->i", S.operand), S.dense.sum(1), S.magnitude.sum(1), None


def _colsum(S, seed, F, dt, integer=False):
    return sgnn.einsum("ij->j", S.operand), S.dense.sum(0), S.magnitude.sum(0), None


def _total(S, seed, F, dt, integer=False):
    return sgnn.einsum("ij->", S.operand), S.dense.sum(), S.magnitude.sum(), None


def _transpose(S, seed, F, dt, integer=False):
    return sgnn.einsum("ij->ji", S.operand), S.dense.T, None, S.mask.T


def _attention(S, seed, F, dt, integer=False):
    m, n = S.dense.shape
    heads = 1 + seed % 3
    ad = dense_rand(seed, m, heads, dtype=dt).double()
    as_ = dense_rand(seed + 1, n, heads, dtype=dt).double()
    x = dense_rand(seed + 2, n, heads, F, dtype=dt).double()
    out = sgnn.evaluate(ATTENTION, A=S.operand, ad=ad.to(dt), as_=as_.to(dt), X=x.to(dt))
    return out, attention_ref(S.counts, ad, as_, x), None, None


def _max(S, seed, F, dt, integer=False):
    x = dense_rand(seed, S.dense.shape[1], F, dtype=dt, integer=integer).double()
    return sgnn.evaluate(MAX, A=S.operand, X=x.to(dt)), masked_max_ref(S.mask, x), None, None


def _relu(S, seed, F, dt, integer=False):
    x = dense_rand(seed, S.dense.shape[1], F, dtype=dt, integer=integer).double()
    out = sgnn.evaluate(RELU, A=S.operand, X=x.to(dt))
    return out, torch.relu(S.dense @ x), S.magnitude @ x.abs(), None


def _exp(S, seed, F, dt, integer=False):
    x = dense_rand(seed, S.dense.shape[1], F, dtype=dt, integer=integer).double() / 4
    return sgnn.evaluate(EXP, A=S.operand, X=x.to(dt)), torch.exp(S.dense @ x), None, None


def _add(S, T, integer=False):
    out = sgnn.evaluate(ADD, A=S.operand, B=T.operand)
    return out, S.dense + T.dense, S.magnitude + T.dense.abs(), S.mask | T.mask


def _mul(S, T, integer=False):
    out = sgnn.evaluate(MUL, A=S.operand, B=T.operand)
    return out, S.dense * T.dense, None, S.mask & T.mask


ONE_SPARSE = {"spmm": _spmm, "spmv": _spmv, "sddmm": _sddmm, "scaling": _scaling, "hadamard": _hadamard,
              "rowsum": _rowsum, "colsum": _colsum, "total": _total, "transpose": _transpose,
              "attention": _attention, "max": _max, "relu": _relu, "exp": _exp}
TWO_SPARSE = {"add": _add, "mul": _mul}
ONLY_SPARSE = {"rowsum", "colsum", "total", "transpose", "add", "mul"}  # no dense operand fixes the dtype

# (variant, value dtype, index dtype, feature width): every variant once, every dtype pairing
# several times. The register tile is exactly the feature width, so a kernel specialises on it:
# it is fixed per case (hypothesis varies only data and shapes); widths 0 and 300 have own tests.
VARIANTS = [("csr", f32, i32, 5), ("csr", f64, i64, 8), ("csc", f64, i32, 3), ("coo", f32, i64, 1),
            ("dcsr", f64, i32, 7), ("torch_csr", f32, i64, 4), ("torch_coo", f64, i64, 2),
            ("pattern", f32, i32, 6)]
PAIRS = [("csr", i32, "csr", i32, f32), ("csr", i64, "csc", i32, f64), ("coo", i32, "dcsr", i64, f32),
         ("pattern", i64, "csr", i64, f64), ("torch_csr", i32, "torch_coo", i64, f32)]


def _vid(p) -> str:
    return "-".join(str(x).replace("torch.", "") for x in p)


def expected_dtype(kind: str, variants, vdt: torch.dtype) -> torch.dtype:
    """Pattern-only operands carry no dtype; an expression of nothing else computes in float32."""
    if kind in ONLY_SPARSE and all(v == "pattern" for v in variants):
        return f32
    return vdt


def stored_mask(out: sgnn.SparseTensor) -> torch.Tensor:
    r, cc = out.coordinates()
    mask = torch.zeros(tuple(out.shape), dtype=torch.bool)
    mask[r.long(), cc.long()] = True
    assert int(mask.sum()) == out.nnz, "sparse output stores a coordinate twice"
    return mask


def check(got, dtype, what=""):
    """A kind's (result, reference, scale, pattern) against the reference."""
    out, ref, scale, pattern = got
    if pattern is not None:
        assert isinstance(out, sgnn.SparseTensor), f"{what}: got {type(out).__name__}, not sparse"
        assert torch.equal(stored_mask(out), pattern), f"{what}: output pattern is not the expected one"
    assert_close(out, ref, dtype, scale, what)


# ---------------------------------------------------------------- 1. property tests


@pytest.mark.parametrize("variant,vdt,idt,F", VARIANTS, ids=[_vid(v) for v in VARIANTS])
@pytest.mark.parametrize("kind", list(ONE_SPARSE))
@settings(max_examples=8)
@given(coo=coos(), seed=seeds)
def test_one_sparse_operand(kind, variant, vdt, idt, F, coo, seed):
    S = make_sparse(coo, variant, vdt, idt)
    dtype = expected_dtype(kind, [variant], vdt)
    check(ONE_SPARSE[kind](S, seed, F, vdt), dtype, f"{kind} on {variant} {tuple(coo.shape)}")


@pytest.mark.parametrize("va,ia,vb,ib,vdt", PAIRS, ids=[_vid(p) for p in PAIRS])
@pytest.mark.parametrize("kind", list(TWO_SPARSE))
@settings(max_examples=8)
@given(data=st.data(), m=st.integers(0, 30), n=st.integers(0, 30))
def test_two_sparse_operands(kind, va, ia, vb, ib, vdt, data, m, n):
    S = make_sparse(data.draw(coos(m=m, n=n)), va, vdt, ia)
    T = make_sparse(data.draw(coos(m=m, n=n)), vb, vdt, ib)
    what = f"{kind} of {va} and {vb} {(m, n)}"
    check(TWO_SPARSE[kind](S, T), expected_dtype(kind, [va, vb], vdt), what)


NON_UNIQUE = ["spmm", "spmv", "sddmm", "scaling", "hadamard", "rowsum", "colsum", "total", "transpose",
              "attention", "max", "relu"]


@pytest.mark.parametrize("kind", NON_UNIQUE)
@settings(max_examples=6)
@given(coo=coos(dups=True), seed=seeds)
def test_non_unique_csr(kind, coo, seed):
    """``from_coo(sum_duplicates=False)`` keeps repeated coordinates: each copy is one more term
    (one more edge in a softmax); sampled outputs then repeat them too, so compare dense copies."""
    S = make_sparse(coo, "csr_nonunique", f32, i32)
    out, ref, scale, _ = ONE_SPARSE[kind](S, seed, 5, f32)
    assert_close(out, ref, f32, scale, f"{kind} on a non-unique CSR {tuple(coo.shape)}")


def test_implicit_einsum_output_is_numpy_rule():
    """Without '->' the output is the indices that appear once, sorted ('ik,kj' means 'ik,kj->ij')."""
    S = make_sparse(random_coo(3, 9, 7, "uniform"), "csr")
    x = dense_rand(4, 7, 5, dtype=f32)
    assert torch.equal(sgnn.einsum("ik,kj", S.operand, x), sgnn.einsum("ik,kj->ij", S.operand, x))


# ---------------------------------------------------------------- 2. the table (exact)

AWKWARD = {"0x0": (0, 0), "0x5": (0, 5), "5x0": (5, 0), "33x127": (33, 127)}
TABLE_FORMATS = [VARIANTS[0]] + [v for v in VARIANTS if v[0] in ("csc", "coo", "dcsr")]  # their kernels
EXACT = ["spmm", "spmv", "sddmm", "scaling", "hadamard", "rowsum", "colsum", "transpose", "max", "relu"]


def _table_matrix(shape, seed=11):
    """Integer values; 33×127 has an empty row and a full row (``full_row``)."""
    return random_coo(seed, *shape, "full_row", dups=True, integer=True)


@pytest.mark.parametrize("shape", list(AWKWARD))
@pytest.mark.parametrize("fmt,vdt,idt,F", TABLE_FORMATS, ids=[_vid(v) for v in TABLE_FORMATS])
@pytest.mark.parametrize("kind", EXACT)
def test_table_exact(kind, fmt, vdt, idt, F, shape):
    S = make_sparse(_table_matrix(AWKWARD[shape]), fmt, vdt, idt)
    if shape == "33x127":
        per_row = S.mask.sum(1)
        assert (per_row == 0).any() and (per_row == 127).any()
    out, ref, _, pattern = ONE_SPARSE[kind](S, 5, F, vdt, integer=True)
    if pattern is not None:
        assert torch.equal(stored_mask(out), pattern)
    dense = out.to_dense() if isinstance(out, sgnn.SparseTensor) else out
    assert dense.dtype == vdt and tuple(dense.shape) == tuple(ref.shape)
    assert torch.equal(dense, ref.to(vdt)), f"{kind} on {fmt} {shape}: not exactly equal"


@pytest.mark.parametrize("shape", list(AWKWARD))
@pytest.mark.parametrize("kind", list(TWO_SPARSE))
def test_table_exact_two_operands(kind, shape):
    S = make_sparse(_table_matrix(AWKWARD[shape], 1), "csr", f32, i32)
    T = make_sparse(_table_matrix(AWKWARD[shape], 2), "csr", f32, i32)
    out, ref, _, pattern = TWO_SPARSE[kind](S, T)
    assert torch.equal(stored_mask(out), pattern)
    assert torch.equal(out.to_dense(), ref.to(f32))


def test_empty_row_gives_zero_for_max_and_softmax():
    """A row without stored entries: max → 0 and softmax-weighted sum → 0 (PyG's convention)."""
    row, col = torch.tensor([0, 0, 2]), torch.tensor([0, 1, 1])
    A_ = sgnn.SparseTensor.from_coo(row, col, torch.ones(3), (3, 2))
    x = torch.tensor([[-5.0, -1.0], [-2.0, -7.0]])
    out = sgnn.evaluate(MAX, A=A_, X=x)
    assert torch.equal(out, torch.tensor([[-2.0, -1.0], [0.0, 0.0], [-2.0, -7.0]]))
    ad, as_ = torch.zeros(3, 1), torch.zeros(2, 1)
    att = sgnn.evaluate(ATTENTION, A=A_, ad=ad, as_=as_, X=x[:, None, :])
    assert torch.allclose(att[:, 0], torch.tensor([[-3.5, -4.0], [0.0, 0.0], [-2.0, -7.0]]))


# ---------------------------------------------------------------- 3. schedules, threads, tiles


def _plain(spec_or_stmt, operands: dict):
    """The same expression with a plain schedule: no tiles, one thread."""
    from sgnn.engine import runtime
    from sgnn.engine.expr import parse_einsum
    ops = {n: runtime.as_operand(t, n) for n, t in operands.items()}
    if isinstance(spec_or_stmt, str):
        plan = runtime.plan_for(parse_einsum(spec_or_stmt, len(ops)), ops, memo_key=spec_or_stmt)
    else:
        plan = runtime.plan_for(spec_or_stmt, ops)
    by_slot, sizes, _, _ = plan.prepare(ops)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return plan.run(plan.kernel(None, None), by_slot, sizes)
    finally:
        torch.set_num_threads(old)


def _graph(n=300, m=None, seed=0, integer=True, dtype=f32):
    return make_sparse(random_coo(seed, n, m or n, "powerlaw", integer=integer), "csr", dtype, i32)


@pytest.mark.parametrize("F", [5, 300], ids=["F5", "F300"])
def test_spmm_automatic_schedule_equals_plain(F):
    """Register tiles (F=300: full tiles and a partial rest) change nothing."""
    S = _graph()
    x = dense_rand(1, 300, F, dtype=f32, integer=True)
    auto = sgnn.einsum("ik,kj->ij", S.operand, x)
    assert torch.equal(auto, _plain("ik,kj->ij", {"t0": S.operand, "t1": x}))
    assert torch.equal(auto, (S.dense @ x.double()).float())


def test_scaling_and_relu_automatic_schedule_equals_plain():
    S = _graph(200, 150, seed=3)
    d0, d1 = dense_rand(1, 200, integer=True), dense_rand(2, 150, integer=True)
    x = dense_rand(3, 150, 300, dtype=f32, integer=True)
    ops = {"t0": d0.float(), "t1": S.operand, "t2": d1.float(), "t3": x}
    assert torch.equal(sgnn.einsum("i,ij,j,jk->ik", *ops.values()), _plain("i,ij,j,jk->ik", ops))
    named = {"A": S.operand, "X": x}
    assert torch.equal(sgnn.evaluate(RELU, **named), _plain(RELU, named))


def test_attention_automatic_schedule_equals_plain():
    S = _graph(120, seed=4, integer=False, dtype=f64)
    named = {"A": S.operand, "ad": dense_rand(1, 120, 2), "as_": dense_rand(2, 120, 2),
             "X": dense_rand(3, 120, 2, 300)}
    auto, plain = sgnn.evaluate(ATTENTION, **named), _plain(ATTENTION, named)
    assert (auto - plain).abs().max() <= 1e-13 * plain.abs().max()
    assert_close(auto, attention_ref(S.mask, named["ad"], named["as_"], named["X"]), f64)


@pytest.mark.parametrize("kind", ["spmm", "sddmm", "attention", "max", "colsum", "transpose"])
def test_results_do_not_depend_on_thread_count(kind, threads):
    S = _graph(500, seed=7, integer=False)
    runs = []
    for n in (1, 2):
        with threads(n):
            out = ONE_SPARSE[kind](S, 9, 5, f32)[0]
        runs.append(out.to_dense() if isinstance(out, sgnn.SparseTensor) else out)
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("dtype", [f32, f64])
def test_wide_features_register_tile(dtype):
    S = _graph(100, 80, seed=5, integer=False, dtype=dtype)
    x = dense_rand(6, 80, 300, dtype=dtype)
    e = sgnn.explain("ik,kj->ij", S.operand, x)
    assert e.tile.var == "j" and not e.tile.outer
    assert 300 % e.tile.size != 0, f"F=300 should leave a partial tile (tile {e.tile.size})"
    ref, scale = S.dense @ x.double(), S.magnitude @ x.double().abs()
    assert_close(sgnn.einsum("ik,kj->ij", S.operand, x), ref, dtype, scale)


def test_wide_features_cache_tile(monkeypatch):
    """A gathered operand past the outer-tiling threshold moves the tile loop outermost; same result.

    The threshold is lowered to the panel budget so a test-sized operand crosses it."""
    from sgnn.engine import tiling
    from sgnn.engine.tiling import CACHE_SHARE, cache_sizes
    monkeypatch.setattr(tiling, "OUTER_TILE_FACTOR", CACHE_SHARE)
    llc = cache_sizes()[max(cache_sizes())]
    F = 300
    rows = int(CACHE_SHARE * llc // (F * 4)) + 64
    if rows > 200_000:
        pytest.skip(f"last-level cache of {llc >> 20} MiB needs a {rows}-row operand")
    S = make_sparse(random_coo(8, 64, rows, "uniform", integer=True), "csr", f32, i32)
    x = dense_rand(9, rows, F, dtype=f32, integer=True)
    e = sgnn.explain("ik,kj->ij", S.operand, x)
    assert e.tile.outer and 300 % e.tile.size != 0
    assert torch.equal(sgnn.einsum("ik,kj->ij", S.operand, x), (S.dense @ x.double()).float())


@pytest.mark.parametrize("kind", ["spmm", "attention"])
def test_zero_feature_width(kind):
    """A dense operand with 0 columns gives an empty result of the right shape."""
    S = make_sparse(random_coo(2, 6, 4, "uniform"), "csr", f32, i32)
    out, ref, _, _ = ONE_SPARSE[kind](S, 3, 0, f32)
    assert out.shape == ref.shape and out.numel() == 0
