"""Sorting conversions between COO and CSR, run by the hand-written ``csrc/convert.cpp``.

Every function takes and returns plain torch tensors: ``pos`` (length rows + 1) and ``crd`` of one
index dtype (int32 or int64), and ``values`` (float32, float64, or None for a pattern-only matrix).
Inputs are never modified; outputs are freshly allocated by torch. Bounds are checked in torch
before native code runs, so a bad index raises :class:`~sgnn.errors.UserError`, never a crash;
every array passes ``native.pointer`` on its way to C++. Merging the repeats of a pattern-only
matrix returns their counts as float32 values (a repeated entry adds up, like a repeated edge).
Results do not depend on the thread count (``torch.get_num_threads()``): the sorts are stable,
so duplicates are summed in input order.
"""
from __future__ import annotations

import ctypes
import functools

import torch

from ..errors import UserError
from .compiler import build_csrc
from .native import plain, pointer, real_mode
from .validate import I32_MAX

_INDEX = {torch.int32: "i32", torch.int64: "i64"}
_VALUE = {torch.float32: "f32", torch.float64: "f64"}
_i64, _int, _ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
# argtypes and restype of each entry point, as declared in csrc/convert.cpp; each returns the
# resulting nnz, or -1 when the native side could not allocate scratch memory
_ABI = {
    "coo_to_csr": ([_i64, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _int, _int], _i64),
    "csr_transpose": ([_i64, _i64, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _int], _i64),
    "csr_sort_rows": ([_i64, _ptr, _ptr, _ptr, _int], _i64),
    "csr_sum_duplicates": ([_i64, _ptr, _ptr, _ptr, _int], _i64),
}


@functools.lru_cache(maxsize=32)
def _native(op: str, index_dtype: torch.dtype, value_dtype: torch.dtype | None):
    """The ctypes function ``sgnn_<op>_<i32|i64>_<f32|f64>``; pattern-only uses the f32 symbol."""
    name = f"sgnn_{op}_{_INDEX[index_dtype]}_{_VALUE[value_dtype or torch.float32]}"
    fn = getattr(build_csrc("convert.cpp"), name)
    fn.argtypes, fn.restype = _ABI[op]
    return fn


def _call(op: str, index_dtype: torch.dtype, values: torch.Tensor | None, *args) -> int:
    """Run one native conversion on ``torch.get_num_threads()`` threads; returns the resulting nnz.

    ``args`` are sizes (int), arrays (tensors of the index dtype or the value dtype) or None (NULL);
    every array is checked by ``native.pointer`` first."""
    real_mode(op)
    vdt = None if values is None else values.dtype
    raw = []
    for n, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            dt = index_dtype if a.dtype == index_dtype or vdt is None else vdt
            a = pointer(a, dt, f"{op} argument {n}") if a.numel() else None
        raw.append(a)
    k = _native(op, index_dtype, vdt)(*raw, torch.get_num_threads())
    if k < 0:
        raise MemoryError(f"{op}: out of memory for scratch arrays")
    return k


def _shape(shape, where: str) -> tuple[int, int]:
    try:
        m, n = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise UserError(f"{where}: expected a shape of two integers (got {shape!r})") from None
    if m < 0 or n < 0:
        raise UserError(f"{where}: expected non-negative dimensions (got {(m, n)})")
    return m, n


def _vector(t, what: str, where: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise UserError(f"{where}: expected {what} to be a torch.Tensor (got {type(t).__name__})")
    t = plain(t, what, where)
    if t.layout != torch.strided:
        raise UserError(f"{where}: expected {what} to be a dense tensor (got layout {t.layout})")
    if t.dim() != 1:
        raise UserError(f"{where}: expected {what} to be one-dimensional (got shape {tuple(t.shape)})")
    return t.contiguous()


def _index(t, what: str, where: str) -> torch.Tensor:
    t = _vector(t, what, where)
    if t.dtype not in _INDEX:
        raise UserError(f"{where}: expected {what} of dtype int32 or int64 (got {t.dtype})")
    return t


def _values(v, nnz: int, where: str) -> torch.Tensor | None:
    if v is None:
        return None
    v = _vector(v, "values", where)
    if v.dtype not in _VALUE:
        raise UserError(f"{where}: expected values of dtype float32 or float64 (got {v.dtype}); "
                        f"convert with .float() or .double()")
    if v.numel() != nnz:
        raise UserError(f"{where}: expected {nnz} values, one per stored entry (got {v.numel()})")
    return v


def _in_range(t: torch.Tensor, dim: int, what: str, where: str) -> None:
    if t.numel() == 0:
        return
    lo, hi = (int(x) for x in torch.aminmax(t))
    if lo < 0:
        raise UserError(f"{where}: expected {what} in [0, {dim}) (got min {lo})")
    if hi >= dim:
        raise UserError(f"{where}: expected {what} in [0, {dim}) (got max {hi})")


def _csr(pos, crd, values, shape, where: str):
    """Checked, contiguous (pos, crd, values, (rows, cols)) of a CSR matrix."""
    m, n = _shape(shape, where)
    pos, crd = _index(pos, "pos", where), _index(crd, "crd", where)
    if pos.dtype != crd.dtype:
        raise UserError(f"{where}: expected pos and crd of one index dtype (got {pos.dtype} and {crd.dtype})")
    if pos.numel() != m + 1:
        raise UserError(f"{where}: expected pos of length rows + 1 = {m + 1} (got {pos.numel()})")
    if int(pos[0]) != 0 or int(pos[-1]) != crd.numel():
        raise UserError(f"{where}: expected pos[0] == 0 and pos[-1] == len(crd) == {crd.numel()} "
                        f"(got {int(pos[0])} and {int(pos[-1])})")
    down = pos[1:] < pos[:-1]
    if bool(down.any()):
        r = int(torch.nonzero(down)[0])
        raise UserError(f"{where}: expected non-decreasing pos (got pos[{r}] = {int(pos[r])} > "
                        f"pos[{r + 1}] = {int(pos[r + 1])})")
    _in_range(crd, n, "column coordinates", where)
    return pos, crd, _values(values, crd.numel(), where), (m, n)


def coo_to_csr(row, col, values, shape, *, sum_duplicates: bool = True, index_dtype=None):
    """CSR ``(pos, crd, values)`` of the COO matrix with entries ``(row[i], col[i], values[i])``.

    Entries are counting-sorted by row, then each row is sorted by column, stably.
    With ``sum_duplicates=True`` repeated coordinates are merged, their values summed in input
    order; a pattern-only input (``values=None``) with repeats gets their counts as float32
    values (without repeats it stays pattern-only: ``values=None``). With
    ``sum_duplicates=False`` repeats are kept in input order.

    Args:
        row, col (Tensor): integer coordinates, 1-D, equal length.
        values (Tensor, optional): float32 or float64, one per entry, or None.
        shape (tuple[int, int]): (rows, cols).
        sum_duplicates (bool): merge repeated coordinates (default: ``True``).
        index_dtype (torch.dtype, optional): int32 or int64 for ``pos`` and ``crd``
            (default: int32 when rows, cols and nnz fit, else int64).

    >>> pos, crd, val = coo_to_csr(torch.tensor([1, 0, 1]), torch.tensor([2, 1, 2]),
    ...                            torch.tensor([1., 2., 3.]), (2, 3))
    >>> pos.tolist(), crd.tolist(), val.tolist()
    ([0, 1, 2], [1, 2], [2.0, 4.0])
    """
    where = "coo_to_csr"
    m, n = _shape(shape, where)
    row, col = _vector(row, "row indices", where), _vector(col, "column indices", where)
    for t, what in ((row, "row indices"), (col, "column indices")):
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise UserError(f"{where}: expected integer {what} (got {t.dtype})")
    if row.numel() != col.numel():
        raise UserError(f"{where}: expected row and column indices of one length (got {row.numel()} "
                        f"and {col.numel()})")
    nnz = row.numel()
    values = _values(values, nnz, where)
    _in_range(row, m, "row indices", where)
    _in_range(col, n, "column indices", where)
    fits = max(m, n, nnz) <= I32_MAX
    idt = index_dtype if index_dtype is not None else (torch.int32 if fits else torch.int64)
    if idt not in _INDEX or (idt == torch.int32 and not fits):
        raise UserError(f"{where}: expected index_dtype int64{' or int32' if fits else ''} for shape "
                        f"{(m, n)} with {nnz} entries (got {idt})")
    row, col = row.to(idt).contiguous(), col.to(idt).contiguous()
    pos, crd = torch.empty(m + 1, dtype=idt), torch.empty(nnz, dtype=idt)
    out = torch.empty(nnz, dtype=values.dtype) if values is not None else None
    k = _call("coo_to_csr", idt, values, nnz, m, n, row, col, values, pos, crd, out, int(sum_duplicates))
    if k < nnz and values is None:  # repeats merged: they must still add up, so count them
        return coo_to_csr(row, col, torch.ones(nnz), (m, n), index_dtype=idt)
    return pos, _shrink(crd, k), _shrink(out, k)


def _shrink(t: torch.Tensor | None, k: int) -> torch.Tensor | None:
    """The first ``k`` entries: a view, or a copy when that releases over a quarter of the memory."""
    if t is None or k == t.numel():
        return t
    return t[:k].clone() if 4 * k < 3 * t.numel() else t[:k]


def csr_transpose(pos, crd, values, shape):
    """CSR of the transpose of the ``shape`` CSR matrix (equivalently: its CSC storage).

    The result has shape ``(shape[1], shape[0])``; each of its rows lists the source rows in
    increasing order (duplicates, if any, stay in their original order).

    >>> p, c, v = csr_transpose(torch.tensor([0, 2, 3]), torch.tensor([0, 2, 1]),
    ...                         torch.tensor([1., 2., 3.]), (2, 3))
    >>> p.tolist(), c.tolist(), v.tolist()
    ([0, 1, 2, 3], [0, 1, 0], [1.0, 3.0, 2.0])
    """
    pos, crd, values, (m, n) = _csr(pos, crd, values, shape, "csr_transpose")
    idt = pos.dtype
    if idt == torch.int32 and n > I32_MAX:
        raise UserError(f"csr_transpose: int32 pos cannot index {n} rows of the transpose; use int64")
    pos_t, crd_t = torch.empty(n + 1, dtype=idt), torch.empty(crd.numel(), dtype=idt)
    out = torch.empty_like(values) if values is not None else None
    _call("csr_transpose", idt, values, m, n, pos, crd, values, pos_t, crd_t, out)
    return pos_t, crd_t, out


def sort_rows(pos, crd, values, shape):
    """Copies of ``(pos, crd, values)`` with each row sorted by column, stably (duplicates kept).

    >>> _, c, v = sort_rows(torch.tensor([0, 3]), torch.tensor([2, 0, 2]),
    ...                     torch.tensor([1., 2., 3.]), (1, 3))
    >>> c.tolist(), v.tolist()
    ([0, 2, 2], [2.0, 1.0, 3.0])
    """
    pos, crd, values, (m, _) = _csr(pos, crd, values, shape, "sort_rows")
    crd = crd.clone()
    values = values.clone() if values is not None else None
    _call("csr_sort_rows", pos.dtype, values, m, pos, crd, values)
    return pos.clone(), crd, values


def sum_duplicates(pos, crd, values, shape):
    """Copies with repeated coordinates in each row merged (values summed in order).

    Rows must already be sorted (see :func:`sort_rows`); only adjacent repeats are merged.
    Pattern-only input (``values=None``) with repeats gets their counts as float32 values.

    >>> p, c, v = sum_duplicates(torch.tensor([0, 3]), torch.tensor([0, 2, 2]),
    ...                          torch.tensor([1., 2., 3.]), (1, 3))
    >>> p.tolist(), c.tolist(), v.tolist()
    ([0, 2], [0, 2], [1.0, 5.0])
    """
    pos, crd, values, (m, _) = _csr(pos, crd, values, shape, "sum_duplicates")
    pos0, crd0 = pos, crd
    pos, crd = pos.clone(), crd.clone()
    values = values.clone() if values is not None else None
    k = _call("csr_sum_duplicates", pos.dtype, values, m, pos, crd, values)
    if k < crd0.numel() and values is None:  # repeats merged: count them
        return sum_duplicates(pos0, crd0, torch.ones(crd0.numel()), shape)
    return pos, _shrink(crd, k), _shrink(values, k)


def widened(fn, a, b, values, *rest, **kw):
    """``fn(a, b, values, ...)`` for bfloat16 / float16 values too: the native code runs on a float32
    copy (exact), merged repeats are summed in float32 and rounded once, results are cast back."""
    if values is None or values.dtype in _VALUE:
        return fn(a, b, values, *rest, **kw)
    *out, v = fn(a, b, values.float(), *rest, **kw)
    return (*out, None if v is None else v.to(values.dtype))


__all__ = ["widened", "coo_to_csr", "csr_transpose", "sort_rows", "sum_duplicates"]
