"""Invariant checks for ``SparseTensor`` level arrays, vectorised in torch, run once per tensor.

Cheap checks run first; the costly diagnosis (which row, which coordinates) only after one fails.
"""
from __future__ import annotations

import torch

from ..errors import UserError

INDEX_DTYPES = (torch.int32, torch.int64)
VALUE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
I32_MAX = 2**31 - 1  # the largest dimension or nnz int32 indices can address


def _fail(msg: str):
    raise UserError(msg)


def check_tensor(t) -> None:
    """Check shape, dtypes, devices and every level's pos/crd invariants of ``t``."""
    fmt = t.format
    where = f"SparseTensor({fmt.name})"
    if len(t.shape) != len(fmt.levels):
        _fail(f"{where}: expected {len(fmt.levels)} dimensions for format {fmt!r} (got shape {tuple(t.shape)})")
    if any(s < 0 for s in t.shape):
        _fail(f"{where}: expected non-negative dimensions (got {tuple(t.shape)})")
    if len(t.pos) != len(fmt.levels) or len(t.crd) != len(fmt.levels):
        _fail(f"{where}: expected one pos and one crd entry per level ({len(fmt.levels)})")
    _check_index_arrays(t, where)
    parent = _check_levels(t, where)
    if t.values is not None:
        _check_values(t.values, parent, where)


def _check_index_arrays(t, where: str) -> None:
    arrays = [a for a in (*t.pos, *t.crd) if a is not None]
    for a in arrays:
        if not isinstance(a, torch.Tensor) or a.dtype not in INDEX_DTYPES:
            _fail(f"{where}: expected int32 or int64 pos/crd arrays (got {getattr(a, 'dtype', type(a))})")
        if a.device.type != "cpu":
            _fail(f"{where}: expected CPU tensors (got device {a.device}); call .cpu() first")
        if a.dim() != 1:
            _fail(f"{where}: expected one-dimensional pos/crd arrays (got shape {tuple(a.shape)})")
        if not a.is_contiguous():
            _fail(f"{where}: expected contiguous pos/crd arrays")
    if len({a.dtype for a in arrays}) > 1:
        _fail(f"{where}: expected pos and crd of one index dtype (got {sorted({str(a.dtype) for a in arrays})})")
    if arrays and arrays[0].dtype == torch.int32:
        big = max((t.level_dim(k) for k in range(len(t.format.levels))), default=0)
        if big > I32_MAX:
            _fail(f"{where}: int32 coordinates cannot hold dimension {big}; use int64 indices")


def _check_levels(t, where: str) -> int:
    """Each level's pos / crd invariants; the number of positions of the last level."""
    parent = 1  # number of positions of the level above
    for k, level in enumerate(t.format.levels):
        dim = t.level_dim(k)
        if level.kind == "dense":
            parent = parent * dim
            continue
        crd = t.crd[k]
        if crd is None:
            _fail(f"{where}: level {k} ({level.kind}) needs a crd array")
        if level.kind == "compressed":
            pos = t.pos[k]
            if pos is None:
                _fail(f"{where}: level {k} (compressed) needs a pos array")
            _check_pos(pos, parent, crd.numel(), f"{where} level {k}")
        else:
            if crd.numel() != parent:
                _fail(f"{where} level {k}: expected a singleton crd of length {parent} (got {crd.numel()})")
            pos = None
        _check_crd(crd, dim, f"{where} level {k}")
        if pos is not None and (level.ordered or level.unique):
            _check_sorted(pos, crd, level.unique, f"{where} level {k}")
        parent = crd.numel()
    return parent


def _check_values(v, parent: int, where: str) -> None:
    if not isinstance(v, torch.Tensor) or v.dtype not in VALUE_DTYPES:
        _fail(f"{where}: expected float32, float64, bfloat16 or float16 values (got {getattr(v, 'dtype', type(v))})")
    if v.device.type != "cpu":
        _fail(f"{where}: expected CPU values (got device {v.device}); call .cpu() first")
    if v.dim() != 1 or v.numel() != parent:
        _fail(f"{where}: expected {parent} values (got shape {tuple(v.shape)})")
    if not v.is_contiguous():
        _fail(f"{where}: expected contiguous values")
    check_no_nan(v, where)


def check_no_nan(v: torch.Tensor, where: str) -> None:
    """Stored values must not be NaN: a NaN would silently spread through every sum it enters."""
    if bool(torch.isnan(v).any()):
        p = int(torch.nonzero(torch.isnan(v))[0])
        _fail(f"{where}: expected values without NaN (got NaN at position {p}); drop or replace them, "
              f"e.g. with torch.nan_to_num")


def _check_pos(pos: torch.Tensor, parent: int, nnz: int, where: str) -> None:
    if pos.numel() != parent + 1:
        _fail(f"{where}: expected pos of length {parent + 1} (got {pos.numel()})")
    if int(pos[0]) != 0:
        _fail(f"{where}: expected pos[0] == 0 (got {int(pos[0])})")
    if int(pos[-1]) != nnz:
        _fail(f"{where}: expected pos[-1] == len(crd) == {nnz} (got {int(pos[-1])})")
    if parent > 0:
        d = pos[1:] - pos[:-1]
        if bool((d < 0).any()):
            i = int(torch.nonzero(d < 0)[0])
            _fail(f"{where}: expected non-decreasing pos (got pos[{i}] = {int(pos[i])} > "
                  f"pos[{i + 1}] = {int(pos[i + 1])})")


def _check_crd(crd: torch.Tensor, dim: int, where: str) -> None:
    if crd.numel() == 0:
        return
    lo, hi = int(crd.min()), int(crd.max())
    if lo < 0 or hi >= dim:
        bad = lo if lo < 0 else hi
        p = int(torch.nonzero(crd == bad)[0])
        _fail(f"{where}: expected coordinates in [0, {dim}) (got {bad} at position {p})")


def _out_of_order(pos: torch.Tensor, crd: torch.Tensor, unique: bool) -> torch.Tensor:
    """Per adjacent pair of ``crd`` within one segment: whether it goes down (or repeats, ``unique``)."""
    n = crd.numel()
    bad = crd[1:] <= crd[:-1] if unique else crd[1:] < crd[:-1]
    starts = pos[1:-1]
    starts = starts[(starts > 0) & (starts < n)]
    bad[starts.long() - 1] = False  # a new segment may start lower
    return bad


def _check_sorted(pos: torch.Tensor, crd: torch.Tensor, unique: bool, where: str) -> None:
    if crd.numel() < 2:
        return
    bad = _out_of_order(pos, crd, unique)
    if bool(bad.any()):
        p = int(torch.nonzero(bad)[0])
        seg = int(torch.searchsorted(pos, torch.tensor(p, dtype=pos.dtype), right=True)) - 1
        what = "sorted and unique" if unique else "sorted"
        _fail(f"{where}: expected coordinates {what} within segment {seg} (got {int(crd[p])} before "
              f"{int(crd[p + 1])}); pass sort=True / sum_duplicates=True or build with from_coo")


def check_compressed_bounds(pos, crd, shape, where: str) -> None:
    """The checks that must hold before sorting a CSR: pos shape and monotone, crd in range."""
    _check_pos(pos, int(shape[0]), crd.numel(), where)
    _check_crd(crd, int(shape[1]), where)


def rows_canonical(pos: torch.Tensor, crd: torch.Tensor) -> bool:
    """Whether every segment of a (bounds-checked) compressed level is sorted and unique."""
    return crd.numel() < 2 or not bool(_out_of_order(pos, crd, True).any())



def mixed_dtypes(value_dtypes: dict, out_dtype) -> tuple[str, frozenset]:
    """The dtype rule of a kernel asked for a float32 result (``evaluate(..., out_dtype=float32)``): each
    operand is float32 or one narrow dtype S (bfloat16 / float16) and is read at its own width (no
    copy); the kernel accumulates and writes float32. Returns (S or "", names of the float32 operands)."""
    if out_dtype is not torch.float32:
        _fail(f"out_dtype: only torch.float32 (a float32 result from narrow operands) is supported (got {out_dtype})")
    floats = {n: d for n, d in value_dtypes.items() if d not in (None, "count")}
    narrow = set(floats.values()) - {"float32"}
    if len(narrow) > 1 or narrow - {"bfloat16", "float16"}:
        _fail(f"out_dtype=float32: operands must be float32 or one of bfloat16 / float16 "
              f"({', '.join(f'{n} is {d}' for n, d in floats.items())})")
    return (narrow.pop(), frozenset(n for n, d in floats.items() if d == "float32")) if narrow else ("", frozenset())
