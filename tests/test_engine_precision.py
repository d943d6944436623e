"""bfloat16 / float16 operands: every expression kind against a float64 reference on the same
(rounded) inputs, on the native conversion path and the portable one (``portable_math``).

The rule under test: operands stay narrow, kernels accumulate in float32, the result comes back in
the operands' dtype, rounded once to nearest even. So per element
``|out - ref| <= u·|ref| + c·n·2^-24·Σ|terms|`` (``u`` the narrow unit roundoff, ``n`` the reduction
length), and norm-wise the relative error stays within about ``u``. Mixed dtypes are refused.
Kernels per case are fixed (hypothesis varies only data and shapes) to bound compile time.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

import sgnn
from engine_cases import coos, dense_rand, make_sparse, random_coo, rel_error, seeds
from sgnn.errors import UserError
from test_engine_expressions import ONE_SPARSE, TWO_SPARSE, stored_mask

bf16, f16, f32, i32 = torch.bfloat16, torch.float16, torch.float32, torch.int32
UNIT = {bf16: 2.0**-8, f16: 2.0**-11}  # unit roundoff of the output rounding
NATIVE_KINDS = list(ONE_SPARSE)
PORTABLE_KINDS = ["spmm", "sddmm", "attention", "max"]  # the kinds with vector loads of gathered rows
WIDTH = {"spmm": 16, "attention": 16, "max": 32}  # whole register tiles (vector loads), else 5


def _check(got, dtype, what):
    out, ref, scale, pattern = got
    if pattern is not None:
        assert isinstance(out, sgnn.SparseTensor), what
        assert torch.equal(stored_mask(out), pattern), f"{what}: wrong output pattern"
    if isinstance(out, sgnn.SparseTensor):
        assert out.dtype == dtype, f"{what}: values {out.dtype}"
        out = out.to_dense()
    assert out.dtype == dtype, f"{what}: dtype {out.dtype} != {dtype}"
    assert out.shape == ref.shape
    if out.numel():
        err = rel_error(out, ref, scale)
        assert err <= 2 * UNIT[dtype], f"{what}: relative error {err:.3g} > {2 * UNIT[dtype]:g}"


CASES = [(k, dt, False) for k in NATIVE_KINDS for dt in (bf16, f16)] + \
        [(k, dt, True) for k in PORTABLE_KINDS for dt in (bf16, f16)]


@pytest.mark.parametrize("kind,dt,portable", CASES, ids=lambda x: str(x).replace("torch.", ""))
@settings(max_examples=4, deadline=None)
@given(coo=coos(dups=False), seed=seeds)
def test_one_sparse_operand(kind, dt, portable, coo, seed):
    S = make_sparse(coo, "csr", dt, i32)
    with sgnn.config(portable_math=portable):
        _check(ONE_SPARSE[kind](S, seed, WIDTH.get(kind, 5), dt), dt, kind)


@pytest.mark.parametrize("kind", list(TWO_SPARSE))
@pytest.mark.parametrize("dt", [bf16, f16], ids=str)
@settings(max_examples=4, deadline=None)
@given(a=coos(m=12, n=9, dups=False), b=coos(m=12, n=9, dups=False))
def test_two_sparse_operands(kind, dt, a, b):
    _check(TWO_SPARSE[kind](make_sparse(a, "csr", dt), make_sparse(b, "csc", dt)), dt, kind)


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("dt", [bf16, f16], ids=str)
@pytest.mark.parametrize("F", [16, 37])  # an exact register tile; a partial one (bounded loads)
def test_spmm_elementwise_bound(dt, portable, F):
    """Power-law rows (long reductions), empty rows: the per-element bound, both paths."""
    S = make_sparse(random_coo(3, 300, 200, "powerlaw"), "csr", dt)
    x = dense_rand(4, 200, F, dtype=dt)
    with sgnn.config(portable_math=portable):
        out = sgnn.einsum("ik,kj->ij", S.operand, x)
    ref, terms = S.dense @ x.double(), S.dense.abs() @ x.double().abs()
    n = S.mask.sum(1, keepdim=True).double()
    bound = UNIT[dt] * ref.abs() + 2 * n * 2.0**-24 * terms + 2.0**-24
    assert out.dtype == dt
    assert bool(((out.double() - ref).abs() <= bound).all())
    assert bool((out[S.mask.sum(1) == 0] == 0).all())


@pytest.mark.parametrize("dt", [bf16, f16], ids=str)
def test_empty_matrix(dt):
    A = sgnn.SparseTensor.from_coo(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long),
                                   torch.empty(0, dtype=dt), (4, 3))
    out = sgnn.einsum("ik,kj->ij", A, torch.ones(3, 16, dtype=dt))
    assert out.dtype == dt and bool((out == 0).all())
    assert sgnn.einsum("ik,kj->ij", A.with_values(None), torch.ones(3, 2, dtype=dt)).dtype == dt


def test_float16_overflow_is_inf_like_torch():
    A = sgnn.SparseTensor.from_dense(torch.tensor([[60000.0, 60000.0], [1.0, 0.0]], dtype=f16))
    x = torch.ones(2, 16, dtype=f16)
    out = sgnn.einsum("ik,kj->ij", A, x)
    assert torch.equal(out, (A.to_dense().float() @ x.float()).to(f16))
    assert bool(torch.isinf(out[0]).all()) and bool((out[1] == 1).all())


def test_mixed_dtypes_are_refused():
    A = sgnn.SparseTensor.from_dense(torch.eye(3, dtype=bf16))
    with pytest.raises(UserError, match=r"dtype mismatch.*bfloat16.*float32|dtype mismatch.*float32.*bfloat16"):
        sgnn.einsum("ik,kj->ij", A, torch.ones(3, 2))
    with pytest.raises(UserError, match=r"dtype mismatch"):
        sgnn.einsum("ik,kj->ij", A, torch.ones(3, 2, dtype=f16))
    # a pattern-only operand takes the dense operand's dtype
    assert sgnn.einsum("ik,kj->ij", A.with_values(None), torch.ones(3, 2, dtype=f16)).dtype == f16


def test_conversions_keep_narrow_values():
    """Format conversions and merged duplicates keep the dtype (sums rounded once)."""
    r, c = torch.tensor([0, 0, 1, 2]), torch.tensor([1, 1, 0, 2])
    v = torch.tensor([1.0, 2.0**-9, 3.0, 4.0], dtype=bf16)
    A = sgnn.SparseTensor.from_coo(r, c, v, (3, 3))
    assert A.dtype == bf16 and A.nnz == 3
    assert float(A.values[0]) == float(torch.tensor(1.0 + 2.0**-9).to(bf16))
    for fmt in ("csc", "coo", "dcsr"):
        assert torch.equal(A.to(fmt).to_dense(), A.to_dense())


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("dt", [bf16, f16], ids=str)
def test_output_rounds_to_nearest_even_like_torch(dt, portable):
    """Exact float32 sums (small integers, ties included) round exactly as torch's cast does."""
    g = torch.Generator().manual_seed(5)
    A = sgnn.SparseTensor.from_dense(torch.randint(0, 40, (64, 64), generator=g).to(dt))
    x = torch.randint(-100, 100, (64, 32), generator=g).to(dt)
    with sgnn.config(portable_math=portable):
        out = sgnn.einsum("ik,kj->ij", A, x)
        sd = sgnn.einsum("ij,ik,jk->ij", A, x, x)
    assert torch.equal(out, (A.to_dense().double() @ x.double()).to(dt))
    assert torch.equal(sd.to_dense(), (A.to_dense().double() * (x.double() @ x.double().T)).to(dt))
