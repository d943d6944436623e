"""Shared data for the engine tests: random sparse matrices, input variants, dense references.

Every sparse input is described once as coordinates (``row``, ``col``, ``vals`` in float64,
possibly with repeated coordinates) and turned into each input *variant* (CSR, CSC, COO, DCSR,
torch sparse CSR / COO, pattern-only) by ``make_sparse``. References are computed with torch on
dense float64 copies of the exact (rounded) inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

import sgnn

KINDS = ("empty", "uniform", "empty_rows", "single", "powerlaw", "full_row", "dense")
VARIANTS = ("csr", "csc", "coo", "dcsr", "torch_csr", "torch_coo", "pattern", "csr_nonunique")
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@dataclass
class Coo:
    """Coordinates of a matrix; ``row``/``col`` may repeat (the entries then add up)."""

    row: torch.Tensor
    col: torch.Tensor
    vals: torch.Tensor  # float64
    shape: tuple[int, int]


@dataclass
class Sparse:
    """One sparse operand as sgnn sees it, and its dense float64 reference."""

    operand: object  # sgnn.SparseTensor or a torch sparse tensor
    dense: torch.Tensor  # float64 values (ones for pattern-only), zero outside the pattern
    mask: torch.Tensor  # bool: which coordinates are stored (explicit zeros included)
    counts: torch.Tensor  # float64: how often each coordinate is stored (> 1 only in a non-unique CSR)
    value_dtype: torch.dtype  # the dtype results come back in
    abs_dense: torch.Tensor | None = None  # float64 sum of |stored values| per coordinate (non-unique CSR)

    @property
    def magnitude(self) -> torch.Tensor:
        """|values| summed per coordinate: with repeated coordinates, the scale of their cancellation."""
        return self.abs_dense if self.abs_dense is not None else self.dense.abs()


def random_coo(seed: int, m: int, n: int, kind: str, *, dups: bool = False, integer: bool = False) -> Coo:
    """A random ``m × n`` matrix of the given ``kind``; ``dups`` repeats some entries (COO inputs)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "empty" or m == 0 or n == 0:
        mask = torch.zeros(m, n, dtype=torch.bool)
    elif kind == "single":
        mask = torch.zeros(m, n, dtype=torch.bool)
        mask[int(torch.randint(m, (1,), generator=g)), int(torch.randint(n, (1,), generator=g))] = True
    elif kind == "dense":
        mask = torch.ones(m, n, dtype=torch.bool)
    else:
        if kind == "powerlaw":  # row i keeps a share rank^-1.2 of its columns: a few hubs, a long tail
            rank = torch.randperm(m, generator=g).to(torch.float64) + 1
            p = rank.pow(-1.2)
        else:
            p = torch.full((m,), float(torch.rand(1, generator=g)) * 0.5, dtype=torch.float64)
        if kind == "empty_rows":
            p[torch.rand(m, generator=g) < 0.4] = 0
        mask = torch.rand(m, n, generator=g, dtype=torch.float64) < p[:, None]
        if kind == "full_row":
            r = torch.randperm(m, generator=g)
            mask[r[0]] = True
            if m > 1:
                mask[r[1]] = False
    row, col = torch.nonzero(mask, as_tuple=True)
    vals = _values(g, row.numel(), integer)
    if dups and row.numel():
        k = int(torch.randint(1, row.numel() + 1, (1,), generator=g))
        pick = torch.randint(row.numel(), (k,), generator=g)
        row, col = torch.cat([row, row[pick]]), torch.cat([col, col[pick]])
        vals = torch.cat([vals, _values(g, k, integer)])
    perm = torch.randperm(row.numel(), generator=g)  # COO inputs arrive unsorted
    return Coo(row[perm], col[perm], vals[perm], (m, n))


def _values(g: torch.Generator, k: int, integer: bool) -> torch.Tensor:
    if integer:
        return torch.randint(-3, 4, (k,), generator=g).to(torch.float64)
    return torch.rand(k, generator=g, dtype=torch.float64) * 2 - 1


def dense_rand(seed: int, *shape, dtype=torch.float64, integer: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if integer:
        return torch.randint(-3, 4, shape, generator=g).to(dtype)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def make_sparse(c: Coo, variant: str, value_dtype=torch.float32, index_dtype=torch.int32) -> Sparse:
    """``c`` as one input variant (see ``VARIANTS``) with the given value and index dtypes."""
    vals = c.vals.to(value_dtype)
    canon = sgnn.SparseTensor.from_coo(c.row, c.col, vals, c.shape)  # sorted, duplicates summed
    if index_dtype == torch.int64:
        canon = sgnn.SparseTensor.from_csr(canon.pos[1].long(), canon.crd[1].long(), canon.values, c.shape)
    assert canon.index_dtype == index_dtype
    mask = torch.zeros(c.shape, dtype=torch.bool)
    mask[c.row, c.col] = True
    dense = torch.zeros(c.shape, dtype=torch.float64)
    dense.index_put_((c.row, c.col), vals.to(torch.float64), accumulate=True)
    if variant == "csr":
        op = canon
    elif variant == "csc":  # from_coo's own path for int32, a conversion for int64
        op = (sgnn.SparseTensor.from_coo(c.row, c.col, vals, c.shape, format="csc")
              if index_dtype == torch.int32 else canon.to("csc"))
    elif variant == "coo":
        op = canon.to("coo")
    elif variant == "dcsr":
        op = (sgnn.SparseTensor.from_coo(c.row, c.col, vals, c.shape, format="dcsr")
              if index_dtype == torch.int32 else canon.to("dcsr"))
    elif variant == "torch_csr":
        op = torch.sparse_csr_tensor(canon.pos[1], canon.crd[1], canon.values, c.shape)
    elif variant == "torch_coo":  # uncoalesced, int64 indices: sgnn sums the duplicates
        op = torch.sparse_coo_tensor(torch.stack([c.row, c.col]), vals, c.shape)
    elif variant == "pattern":
        op = canon.with_values(None)
        dense = mask.to(torch.float64)
    elif variant == "csr_nonunique":  # repeated coordinates kept, as message passing sees repeated edges
        op = sgnn.SparseTensor.from_coo(c.row, c.col, vals, c.shape, sum_duplicates=False)
        assert op.index_dtype == torch.int32
        counts = torch.zeros(c.shape, dtype=torch.float64).index_put_(
            (c.row, c.col), torch.ones(c.row.numel(), dtype=torch.float64), accumulate=True)
        absd = torch.zeros(c.shape, dtype=torch.float64).index_put_(
            (c.row, c.col), vals.to(torch.float64).abs(), accumulate=True)
        return Sparse(op, dense, mask, counts, value_dtype, absd)
    else:
        raise ValueError(variant)
    return Sparse(op, dense, mask, mask.to(torch.float64), value_dtype)


@st.composite
def coos(draw, max_m: int = 40, max_n: int = 40, *, m=None, n=None, kinds=KINDS, dups=None):
    """Hypothesis: a random ``Coo`` (shapes include 0 rows and 0 columns)."""
    # an empty dimension in about one case in eight (hypothesis alone would draw it far more often)
    m = draw(st.sampled_from([0] + [None] * 15)) if m is None else m
    m = draw(st.integers(1, max_m)) if m is None else m
    n = draw(st.sampled_from([0] + [None] * 15)) if n is None else n
    n = draw(st.integers(1, max_n)) if n is None else n
    dups = draw(st.booleans()) if dups is None else dups
    return random_coo(draw(st.integers(0, 2**31 - 1)), m, n, draw(st.sampled_from(kinds)), dups=dups)


seeds = st.integers(0, 2**31 - 1)


# ---------------------------------------------------------------- comparison


def rel_error(out: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor | None = None,
              floor: float = 1e-6) -> float:
    """``‖out − ref‖ / max(‖ref‖, ‖scale‖, floor)``.

    ``scale`` is the reference computed on |inputs|: it bounds the rounding error of sums that cancel.
    """
    out, ref = out.to(torch.float64), ref.to(torch.float64)
    denom = max(float(ref.norm()), float(scale.norm()) if scale is not None else 0.0, floor)
    return float((out - ref).norm()) / denom


def assert_close(out, ref: torch.Tensor, dtype: torch.dtype, scale=None, what: str = "") -> None:
    """Shape, dtype and a norm-based relative error within ``TOL[dtype]`` (NaN never passes)."""
    if isinstance(out, sgnn.SparseTensor):
        out = out.to_dense()
    assert isinstance(out, torch.Tensor), f"{what}: expected a tensor (got {type(out).__name__})"
    assert tuple(out.shape) == tuple(ref.shape), f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert out.dtype == dtype, f"{what}: dtype {out.dtype} != {dtype}"
    if out.numel() == 0:
        return
    err = rel_error(out, ref, scale)
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]:g}"


# ---------------------------------------------------------------- dense references


def masked_softmax(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 of ``scores`` [i, j, ...] over the stored entries of [i, j] (an entry
    stored twice counts twice, like a repeated edge); empty rows give 0."""
    if scores.shape[1] == 0:
        return torch.zeros_like(scores)
    w = counts.to(scores.dtype).reshape(*counts.shape, *([1] * (scores.dim() - 2)))
    s = scores.masked_fill(w == 0, float("-inf"))
    mx = s.amax(dim=1, keepdim=True).nan_to_num(neginf=0.0)
    e = torch.exp(s - mx) * w
    z = e.sum(dim=1, keepdim=True)
    return torch.where(z > 0, e / z.clamp_min(1e-300), torch.zeros_like(e))


def attention_ref(counts, ad, as_, x, slope: float = 0.2) -> torch.Tensor:
    """``out[i,h,c] = Σ_j softmax_j(leaky_relu(ad[i,h] + as_[j,h])) over A[i,:] · x[j,h,c]``
    (``counts``: the stored entries of A, as a bool mask or multiplicities)."""
    scores = torch.nn.functional.leaky_relu(ad[:, None, :] + as_[None, :, :], slope)  # [i, j, h]
    alpha = masked_softmax(scores, counts)
    return torch.einsum("ijh,jhc->ihc", alpha, x)


def masked_max_ref(mask, x) -> torch.Tensor:
    """``out[i,k] = max over stored j of x[j,k]`` (0 for a row without entries)."""
    s = x[None, :, :].expand(mask.shape[0], -1, -1).masked_fill(~mask[:, :, None], float("-inf"))
    if mask.shape[1] == 0:
        return torch.zeros(mask.shape[0], x.shape[1], dtype=x.dtype)
    out = s.amax(dim=1)
    return torch.where(mask.any(dim=1)[:, None], out, torch.zeros_like(out))
