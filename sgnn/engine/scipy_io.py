"""``SparseTensor.from_scipy``: any scipy.sparse matrix or array, checked in full.

scipy's ``has_sorted_indices`` / ``has_canonical_format`` flags are hints about order only: they
say nothing about bounds, index dtypes or contiguity, and are wrong after in-place edits. So every
input runs the O(nnz) checks ``from_csr`` runs before any native code sees it.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import UserError
from .formats import CSC, CSR
from . import convert
from .validate import I32_MAX, check_compressed_bounds, check_no_nan, rows_canonical

_WHERE = "from_scipy"


def _array(a, what: str) -> np.ndarray:
    """A 1-D, C-contiguous, native-endian copy of ``a`` when it is not one already."""
    a = np.asarray(a)
    if a.ndim != 1:
        raise UserError(f"{_WHERE}: expected one-dimensional {what} (got shape {a.shape})")
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a)


def _values(data: np.ndarray) -> torch.Tensor:
    """float32 / float64 kept; integers and bool → float32, longdouble → float64; complex refused."""
    kind = data.dtype.kind
    if kind == "c":
        raise UserError(f"{_WHERE}: complex values ({data.dtype}) are not supported; take .real or abs() first")
    if kind not in "fiub":
        raise UserError(f"{_WHERE}: expected numeric values (got dtype {data.dtype})")
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64 if kind == "f" and data.dtype.itemsize > 8 else np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.from_numpy(data)


def _index(a: np.ndarray, what: str) -> torch.Tensor:
    """``a`` as a torch integer tensor (shared when int32 / int64; unsigned or narrow types copied)."""
    if a.dtype.kind not in "iu":
        raise UserError(f"{_WHERE}: expected integer {what} (got dtype {a.dtype})")
    if a.dtype not in (np.int32, np.int64):
        a = a.astype(np.int64)  # uint64 past 2**63 wraps negative: the bounds check reports it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a read-only array: sgnn never writes to it
        return torch.from_numpy(a)


def from_scipy(cls, m):
    """A ``cls`` (SparseTensor) from scipy matrix ``m``: the docstring is ``SparseTensor.from_scipy``'s."""
    import scipy.sparse as sp
    if not sp.issparse(m):
        raise UserError(f"{_WHERE}: expected a scipy.sparse matrix or array (got {type(m).__name__})")
    if m.ndim != 2:
        raise UserError(f"{_WHERE}: expected a matrix (got {m.ndim} dimensions)")
    if m.dtype.kind == "c":
        raise UserError(f"{_WHERE}: complex values ({m.dtype}) are not supported; take .real or abs() first")
    if m.format not in ("csr", "csc"):
        m = m.tocsr()  # coo, bsr, lil, dok, dia, ...: scipy sums repeated coordinates
    rows, cols = (int(s) for s in m.shape)
    outer = (rows, cols) if m.format == "csr" else (cols, rows)  # the storage's (pointers, coordinates)
    indptr, indices, data = _array(m.indptr, "indptr"), _array(m.indices, "indices"), _array(m.data, "data")
    nnz = int(indptr[-1]) if indptr.size else 0
    if 0 <= nnz < indices.size and data.size >= nnz:  # scipy allows spare capacity past indptr[-1]
        indices, data = indices[:nnz], data[:nnz]
    pos, crd = _index(indptr, "indptr"), _index(indices, "indices")
    check_compressed_bounds(pos, crd, outer, _WHERE)  # before narrowing: a huge index must not wrap
    idt = torch.int32 if max(rows, cols, crd.numel()) <= I32_MAX else torch.int64
    pos, crd, values = pos.to(idt), crd.to(idt), _values(data)
    if values.numel() != crd.numel():
        raise UserError(f"{_WHERE}: expected {crd.numel()} values, one per stored entry (got {values.numel()})")
    check_no_nan(values, _WHERE)
    if not rows_canonical(pos, crd):  # unsorted rows (e.g. A[p][:, p]) or repeats: a sorted, summed copy
        pos, crd, values = convert.sum_duplicates(*convert.sort_rows(pos, crd, values, outer), outer)
    fmt = CSR if m.format == "csr" else CSC
    return cls((rows, cols), fmt, [None, pos], [None, crd], values, check=False)


__all__ = ["from_scipy"]
