"""``SparseTensor``: a shape, a per-level ``Format`` and level arrays, all plain ``torch.Tensor``s.

Level ``k`` of a tensor stores dimension ``format.order[k]``. A compressed level has ``pos[k]``
(length parent positions + 1) and ``crd[k]``; a singleton level has only ``crd[k]``; a dense
level has neither. ``values`` is optional: a pattern-only tensor reads as all ones and costs no
value bytes. Constructors check the invariants (monotone ``pos``, coordinates in range, sorted
and unique where the level promises it) once, before any native code sees the arrays.

**Repeated coordinates** (a non-unique level, e.g. ``from_coo(..., sum_duplicates=False)``) add
up: an entry stored twice counts twice. A conversion that merges them sums their values; a
pattern-only tensor then gets its multiplicities as values, and is marked ``counts``: such values
take the dtype of the expression they enter instead of fixing it.

**Value dtypes**: float32, float64, bfloat16, float16. Kernels read bfloat16 / float16 values
narrow, accumulate in float32 and return results in that dtype, rounded once to nearest even
(float16 overflow gives inf, as in torch). Operands of different value dtypes are refused, never
promoted silently (a pattern-only or counts operand takes the others' dtype), except in a mixed
kernel (``evaluate(..., out_dtype=torch.float32)``): float32 operands next to one narrow dtype, each
read at its own width, a float32 result (``validate.mixed_dtypes``).

A tensor is immutable; values derived from it (conversions, partitions, pointers) are cached on
it by ``derived`` and built once even when threads race (``caches.BUILD_LOCK``).
"""
from __future__ import annotations

import torch

from ..errors import NotSupported, UserError
from .caches import BUILD_LOCK
from . import convert, convert_formats
from .formats import COO, CSC, CSR, DCSR, Format, parse_format
from .native import plain
from .scipy_io import from_scipy
from .validate import INDEX_DTYPES, VALUE_DTYPES, check_compressed_bounds, check_no_nan, check_tensor

class SparseTensor:
    """A sparse tensor in any per-level format (CSR, CSC, COO, DCSR, ...).

    Args:
        shape: the dimensions of the mathematical tensor.
        format: a ``Format`` or a name (``"csr"``, ``"csc"``, ``"coo"``, ``"dcsr"``).
        pos, crd: one entry per level (``None`` where the level has no such array).
        values: the stored values, or ``None`` for a pattern-only tensor.
        check: validate invariants (default: True). Skip only for arrays sgnn produced itself.
        counts: the values are multiplicities of a pattern (whole numbers; see the module notes).

    >>> A = SparseTensor.from_dense(torch.tensor([[0., 2.], [3., 0.]]))
    >>> A.format.name, A.nnz
    ('csr', 2)
    """

    def __init__(self, shape, format, pos, crd, values=None, *, check: bool = True, counts: bool = False):
        self.shape = torch.Size(int(s) for s in shape)
        self.format = parse_format(format)
        self.pos = list(pos)
        self.crd = list(crd)
        self.values = values
        self.counts = bool(counts) and values is not None
        self._derived: dict = {}  # cached conversions and partitions, keyed by purpose
        if check:
            self.pos, self.crd = _plain_arrays(self.pos, "pos"), _plain_arrays(self.crd, "crd")
            if isinstance(values, torch.Tensor):
                self.values = plain(values, "values", "SparseTensor")
            check_tensor(self)

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nnz(self) -> int:
        """Stored positions (times the extents of trailing dense levels)."""
        last = self.crd[-1] if self.crd and self.crd[-1] is not None else None
        if last is not None:
            return int(last.numel())
        n = 1
        for k, lv in enumerate(self.format.levels):
            n = n * self.level_dim(k) if lv.kind == "dense" else int(self.crd[k].numel())
        return n

    @property
    def index_dtype(self) -> torch.dtype:
        arrays = [a for a in (*self.pos, *self.crd) if a is not None]
        return arrays[0].dtype if arrays else torch.int32

    @property
    def dtype(self) -> torch.dtype:
        """The value dtype (float32 for a pattern-only tensor)."""
        return self.values.dtype if self.values is not None else torch.float32

    @property
    def device(self) -> torch.device:
        arrays = [a for a in (*self.pos, *self.crd, self.values) if a is not None]
        return arrays[0].device if arrays else torch.device("cpu")

    def level_dim(self, k: int) -> int:
        """The size of the dimension stored at level ``k``."""
        return self.shape[self.format.order[k]]

    def __repr__(self) -> str:
        vals = str(self.values.dtype).replace("torch.", "") if self.values is not None else None
        return (f"SparseTensor(shape={tuple(self.shape)}, format={self.format.name}, nnz={self.nnz}, "
                f"index={str(self.index_dtype).replace('torch.', '')}, values={vals}"
                f"{' (counts)' if self.counts else ''})")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_csr(cls, pos, crd, values=None, shape=None, *, sort: bool = False,
                 sum_duplicates: bool = False, check: bool = True) -> "SparseTensor":
        """CSR from row pointers ``pos`` and column coordinates ``crd`` (zero-copy when valid).

        ``sort=True`` sorts each row first; ``sum_duplicates=True`` merges repeated coordinates
        (a pattern-only matrix with repeats then gets their counts as values).
        """
        pos, crd = _as_index(pos, "pos"), _as_index(crd, "crd")
        if pos.dtype != crd.dtype:
            dt = torch.promote_types(pos.dtype, crd.dtype)
            pos, crd = pos.to(dt), crd.to(dt)
        if shape is None:
            ncols = int(crd.max()) + 1 if crd.numel() else 0
            shape = (pos.numel() - 1, ncols)
        values = _as_values(values)
        counts = False
        if sort or sum_duplicates:
            check_compressed_bounds(pos, crd, shape, "from_csr")
            pos, crd, vals = convert.widened(convert.sort_rows, pos, crd, values, shape)
            if sum_duplicates:
                pos, crd, vals = convert.widened(convert.sum_duplicates, pos, crd, vals, shape)
            values, counts = vals, values is None and vals is not None
        return cls(shape, CSR, [None, pos], [None, crd], values, check=check, counts=counts)

    @classmethod
    def from_coo(cls, row, col, values=None, shape=None, *, format="csr",
                 sum_duplicates: bool = True) -> "SparseTensor":
        """From coordinate lists; converted (sorted, duplicates summed) to ``format`` in C++.

        Pattern-only input (``values=None``) with repeated coordinates and ``sum_duplicates=True``
        gets the repeat counts as values. ``sum_duplicates=False`` keeps the repeats (csr, csc, coo;
        dcsr is unique, so it always sums them).
        """
        row, col = _as_index(row, "row"), _as_index(col, "col")
        if row.shape != col.shape:
            raise UserError(f"from_coo: expected row and col of the same length (got {row.numel()} and "
                            f"{col.numel()})")
        if shape is None:
            shape = (int(row.max()) + 1 if row.numel() else 0, int(col.max()) + 1 if col.numel() else 0)
        values = _as_values(values)
        if values is not None and values.shape != row.shape:
            raise UserError(f"from_coo: expected {row.numel()} values (got shape {tuple(values.shape)})")
        fmt = parse_format(format)
        if fmt == COO:
            return cls.from_coo(row, col, values, shape, sum_duplicates=sum_duplicates).to(COO)
        if fmt not in (CSR, CSC, DCSR):
            raise NotSupported(f"from_coo: cannot build format {fmt.name}; use csr, csc, coo or dcsr")
        transpose = fmt == CSC
        r, c, s = (col, row, (shape[1], shape[0])) if transpose else (row, col, shape)
        pos, crd, vals = convert.widened(convert.coo_to_csr, r, c, values, s, sum_duplicates=sum_duplicates)
        fmt_out = CSR if sum_duplicates else Format("du")
        counts = values is None and vals is not None
        out = cls(s, fmt_out, [None, pos], [None, crd], vals, check=False, counts=counts)
        if transpose:
            out = SparseTensor(shape, Format(fmt_out.codes, order=(1, 0)), out.pos, out.crd, out.values,
                               check=False, counts=counts)
        return out.to(DCSR) if fmt == DCSR else out

    @classmethod
    def from_edge_index(cls, edge_index, num_nodes=None, values=None, *,
                        sum_duplicates: bool = True) -> "SparseTensor":
        """The adjacency of a PyG ``edge_index`` ([2, E]; row 0 = source, row 1 = target).

        Returns CSR of ``A[target, source]``, so ``A @ X`` aggregates messages at targets.
        ``sum_duplicates=False`` keeps repeated edges (a non-unique CSR, as message passing sees them).
        """
        if not isinstance(edge_index, torch.Tensor):
            raise UserError(f"from_edge_index: expected a torch.Tensor (got {type(edge_index).__name__})")
        edge_index = plain(edge_index, "edge_index", "from_edge_index")  # e.g. PyG's EdgeIndex: its data
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise UserError(f"from_edge_index: expected edge_index of shape [2, E] (got {list(edge_index.shape)})")
        if num_nodes is None:
            num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
        return cls.from_coo(edge_index[1], edge_index[0], values, (num_nodes, num_nodes),
                            sum_duplicates=sum_duplicates)

    @classmethod
    def from_torch(cls, t: torch.Tensor) -> "SparseTensor":
        """From a torch sparse COO / CSR / CSC tensor (CSR and CSC share its memory)."""
        if not isinstance(t, torch.Tensor):
            raise UserError(f"from_torch: expected a torch.Tensor (got {type(t).__name__})")
        t = plain(t, "the tensor", "from_torch")
        if t.layout == torch.sparse_csr:
            return cls(t.shape, CSR, [None, t.crow_indices()], [None, t.col_indices()], t.values())
        if t.layout == torch.sparse_csc:
            return cls(t.shape, CSC, [None, t.ccol_indices()], [None, t.row_indices()], t.values())
        if t.layout == torch.sparse_coo:
            if t.dim() != 2:
                raise NotSupported(f"from_torch: sparse COO with {t.dim()} dimensions; only matrices")
            idx = t._indices()
            return cls.from_coo(idx[0], idx[1], t._values(), t.shape, format=COO)
        if t.layout == torch.strided:
            return cls.from_dense(t)
        raise NotSupported(f"from_torch: layout {t.layout} is not supported")

    @classmethod
    def from_scipy(cls, m) -> "SparseTensor":
        """From any scipy.sparse matrix or array (csr, csc, coo, bsr, lil, dok, dia, ...).

        Every input is checked in full (scipy's ``has_canonical_format`` flags are not trusted):
        bounds, pointer monotonicity, index and value dtypes. A canonical CSR / CSC with contiguous
        native-endian arrays shares their memory; anything else is copied: other formats go
        through CSR, unsorted rows are sorted, repeated coordinates summed. Indices become int32
        when they fit, else int64. Values: float32 / float64 are kept; integer and bool
        data become float32 (exact up to 2**24), longdouble float64; complex is refused.
        """
        return from_scipy(cls, m)

    @classmethod
    def from_dense(cls, t: torch.Tensor, format="csr") -> "SparseTensor":
        """The nonzeros of a dense matrix."""
        if not isinstance(t, torch.Tensor):
            raise UserError(f"from_dense: expected a torch.Tensor (got {type(t).__name__})")
        t = plain(t, "the matrix", "from_dense")
        if t.dim() != 2:
            raise NotSupported(f"from_dense: expected a matrix (got {t.dim()} dimensions)")
        r, c = torch.nonzero(t, as_tuple=True)
        return cls.from_coo(r, c, t[r, c], t.shape, format=format)

    # ------------------------------------------------------------------ conversions
    def to(self, format) -> "SparseTensor":
        """This tensor in another format (cached: converting twice costs nothing)."""
        fmt = parse_format(format)
        if fmt == self.format:
            return self
        return self.derived(("format", fmt), lambda: convert_formats.convert_format(self, fmt))

    def transpose(self) -> "SparseTensor":
        """The transpose, sharing memory (a CSR becomes a CSC of the swapped shape)."""
        order = tuple(1 - o for o in self.format.order) if self.ndim == 2 else None
        if order is None:
            raise NotSupported("transpose: only matrices")
        fmt = Format(self.format.codes, order=order)
        return SparseTensor((self.shape[1], self.shape[0]), fmt, self.pos, self.crd, self.values, check=False,
                            counts=self.counts)

    @property
    def T(self) -> "SparseTensor":
        return self.transpose()

    def with_values(self, values) -> "SparseTensor":
        """The same pattern with new values (``None``: pattern only)."""
        values = _as_values(values)
        if values is not None and values.numel() != self.nnz:
            raise UserError(f"with_values: expected {self.nnz} values (got {values.numel()})")
        return SparseTensor(self.shape, self.format, self.pos, self.crd, values, check=False)

    def coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, col) coordinate arrays of a matrix in storage order."""
        return convert_formats.coordinates(self)

    def value_array(self) -> torch.Tensor:
        """The values, materialising ones for a pattern-only tensor."""
        if self.values is not None:
            return self.values
        return torch.ones(self.nnz, dtype=torch.float32)

    def to_dense(self) -> torch.Tensor:
        """A dense copy; repeated coordinates add up."""
        if self.ndim == 2:
            idx = tuple(a.long() for a in self.coordinates())
        else:
            idx = tuple(convert_formats.level_coordinates(self))
        out = torch.zeros(tuple(self.shape), dtype=self.dtype)
        out.index_put_(idx, self.value_array(), accumulate=True)
        return out

    def to_torch(self, layout=torch.sparse_csr) -> torch.Tensor:
        """A torch sparse tensor (``sparse_csr`` shares memory with a CSR of int64 or int32 indices)."""
        if layout in (torch.sparse_csr, torch.sparse_csc):
            csr = layout == torch.sparse_csr
            a = self.to(CSR if csr else CSC)
            make = torch.sparse_csr_tensor if csr else torch.sparse_csc_tensor
            return make(a.pos[1], a.crd[1], a.value_array(), tuple(self.shape))
        if layout == torch.sparse_coo:
            r, c = self.coordinates()
            return torch.sparse_coo_tensor(torch.stack([r.long(), c.long()]), self.value_array(),
                                           tuple(self.shape))
        raise NotSupported(f"to_torch: layout {layout}")

    def to_scipy(self):
        import scipy.sparse as sp
        a = self.to(CSR)
        return sp.csr_matrix((a.value_array().numpy(), a.crd[1].numpy(), a.pos[1].numpy()),
                             shape=tuple(self.shape))

    def derived(self, key, make):
        """A value computed once from this (immutable) tensor and cached on it (it dies with it).

        Hits take no lock; a miss builds under ``caches.BUILD_LOCK``, so racing threads get the
        same object (one whose memory a plan may hold a raw pointer to)."""
        hit = self._derived.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
        with BUILD_LOCK:
            hit = self._derived.get(key, _MISSING)
            if hit is _MISSING:
                hit = self._derived[key] = make()
        return hit

    def with_counts(self, dtype: torch.dtype) -> "SparseTensor":
        """This tensor with its stored multiplicities as ``dtype`` values (ones when pattern-only)."""
        if self.values is not None and self.values.dtype == dtype:
            return self
        return self.derived(("counts", dtype), lambda: SparseTensor(
            self.shape, self.format, self.pos, self.crd,
            self.value_array().to(dtype) if self.values is not None else torch.ones(self.nnz, dtype=dtype),
            check=False, counts=True))


_MISSING = object()


def _plain_arrays(arrays: list, what: str) -> list:
    return [plain(a, what, "SparseTensor") if isinstance(a, torch.Tensor) else a for a in arrays]


def _as_index(a, what: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        try:
            a = torch.as_tensor(a)
        except (TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"expected {what} to be an integer tensor (got {type(a).__name__})") from e
    a = plain(a, what, "SparseTensor")
    if a.dtype not in INDEX_DTYPES:
        if a.dtype.is_floating_point or a.dtype == torch.bool or a.dtype.is_complex:
            raise UserError(f"expected {what} to be int32 or int64 (got {a.dtype})")
        a = a.to(torch.int64)
    if a.dim() != 1:
        raise UserError(f"expected {what} to be one-dimensional (got {a.dim()} dimensions)")
    return a.contiguous()


def _as_values(v) -> torch.Tensor | None:
    if v is None:
        return None
    if not isinstance(v, torch.Tensor):
        v = torch.as_tensor(v)
    v = plain(v, "values", "SparseTensor")
    if v.dtype not in VALUE_DTYPES:
        if not v.dtype.is_complex:  # integers, bool: float32 (exact up to 2**24)
            v = v.to(torch.float32)
        else:
            raise UserError(f"expected float32, float64, bfloat16 or float16 values (got {v.dtype})")
    v = v.contiguous().reshape(-1)
    check_no_nan(v, "SparseTensor")
    return v


__all__ = ["SparseTensor"]
