"""``SparseTensor``: a shape, a per-level ``Format`` and level arrays, all plain ``torch.Tensor``s.

Level ``k`` of a tensor stores dimension ``format.order[k]``. A compressed level has ``pos[k]``
(length parent positions + 1) and ``crd[k]``; a singleton level has only ``crd[k]``; a dense
level has neither. ``values`` is optional: a pattern-only tensor reads as all ones and costs no
value bytes. Constructors check the invariants (monotone ``pos``, coordinates in range, sorted
and unique where the level promises it) once, before any native code sees the arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import NotSupported, UserError
from .formats import COO, CSC, CSR, DCSR, Format, parse_format

INDEX_DTYPES = (torch.int32, torch.int64)
VALUE_DTYPES = (torch.float32, torch.float64)
_I32_MAX = 2**31 - 1


def index_dtype_for(*sizes: int) -> torch.dtype:
    """int32 when every size (dimensions, nnz) fits, int64 otherwise."""
    return torch.int32 if max((0, *sizes)) <= _I32_MAX else torch.int64


@dataclass(frozen=True)
class Signature:
    """What a compiled kernel specialises on: format, index and value dtypes, whether values exist."""

    format: Format
    index_dtype: torch.dtype
    value_dtype: torch.dtype | None

    def __str__(self) -> str:
        v = str(self.value_dtype).replace("torch.", "") if self.value_dtype else "pattern"
        return f"{self.format.name}[{str(self.index_dtype).replace('torch.', '')},{v}]"


class SparseTensor:
    """A sparse tensor in any per-level format (CSR, CSC, COO, DCSR, ...).

    Args:
        shape: the dimensions of the mathematical tensor.
        format: a ``Format`` or a name (``"csr"``, ``"csc"``, ``"coo"``, ``"dcsr"``).
        pos, crd: one entry per level (``None`` where the level has no such array).
        values: the stored values, or ``None`` for a pattern-only tensor.
        check: validate invariants (default: True). Skip only for arrays sgnn produced itself.

    >>> A = SparseTensor.from_dense(torch.tensor([[0., 2.], [3., 0.]]))
    >>> A.format.name, A.nnz
    ('csr', 2)
    """

    def __init__(self, shape, format, pos, crd, values=None, *, check: bool = True):
        self.shape = torch.Size(int(s) for s in shape)
        self.format = parse_format(format)
        self.pos = list(pos)
        self.crd = list(crd)
        self.values = values
        self._derived: dict = {}  # cached conversions and partitions, keyed by purpose
        if check:
            from .validate import check_tensor
            check_tensor(self)

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nnz(self) -> int:
        last = self.crd[-1] if self.crd and self.crd[-1] is not None else None
        if last is not None:
            return int(last.numel())
        n = 1
        for s in self.shape:
            n *= s
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

    @property
    def signature(self) -> Signature:
        return Signature(self.format, self.index_dtype,
                         self.values.dtype if self.values is not None else None)

    def level_dim(self, k: int) -> int:
        """The size of the dimension stored at level ``k``."""
        return self.shape[self.format.order[k]]

    def __repr__(self) -> str:
        return (f"SparseTensor(shape={tuple(self.shape)}, format={self.format.name}, nnz={self.nnz}, "
                f"index={str(self.index_dtype).replace('torch.', '')}, "
                f"values={str(self.values.dtype).replace('torch.', '') if self.values is not None else None})")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_csr(cls, pos, crd, values=None, shape=None, *, sort: bool = False,
                 sum_duplicates: bool = False, check: bool = True) -> "SparseTensor":
        """CSR from row pointers ``pos`` and column coordinates ``crd`` (zero-copy when valid).

        ``sort=True`` sorts each row first; ``sum_duplicates=True`` merges repeated coordinates.
        """
        pos, crd = _as_index(pos, "pos"), _as_index(crd, "crd")
        if pos.dtype != crd.dtype:
            dt = torch.promote_types(pos.dtype, crd.dtype)
            pos, crd = pos.to(dt), crd.to(dt)
        if shape is None:
            ncols = int(crd.max()) + 1 if crd.numel() else 0
            shape = (pos.numel() - 1, ncols)
        if sort or sum_duplicates:
            from . import convert
            from .validate import check_compressed_bounds
            check_compressed_bounds(pos, crd, shape, "from_csr")
            pos, crd, values = convert.sort_rows(pos, crd, _as_values(values), shape)
            if sum_duplicates:
                pos, crd, values = convert.sum_duplicates(pos, crd, values, shape)
        return cls(shape, CSR, [None, pos], [None, crd], _as_values(values), check=check)

    @classmethod
    def from_coo(cls, row, col, values=None, shape=None, *, format="csr",
                 sum_duplicates: bool = True) -> "SparseTensor":
        """From coordinate lists; converted (sorted, duplicates summed) to ``format`` in C++."""
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
            return cls._coo_sorted(row, col, values, shape, sum_duplicates)
        if fmt not in (CSR, CSC, DCSR):
            raise NotSupported(f"from_coo: cannot build format {fmt.name}; use csr, csc, coo or dcsr")
        from . import convert
        transpose = fmt == CSC
        r, c, s = (col, row, (shape[1], shape[0])) if transpose else (row, col, shape)
        pos, crd, vals = convert.coo_to_csr(r, c, values, s, sum_duplicates=sum_duplicates)
        fmt_out = CSR if sum_duplicates else Format("du")
        out = cls(s, fmt_out, [None, pos], [None, crd], vals, check=False)
        if transpose:
            out = SparseTensor(shape, Format(fmt_out.codes, order=(1, 0)), out.pos, out.crd, out.values,
                               check=False)
        return out.to(DCSR) if fmt == DCSR else out

    @classmethod
    def _coo_sorted(cls, row, col, values, shape, sum_duplicates):
        csr = cls.from_coo(row, col, values, shape, sum_duplicates=sum_duplicates)
        return csr.to(COO)

    @classmethod
    def from_edge_index(cls, edge_index, num_nodes=None, values=None, *,
                        sum_duplicates: bool = True) -> "SparseTensor":
        """The adjacency of a PyG ``edge_index`` ([2, E]; row 0 = source, row 1 = target).

        Returns CSR of ``A[target, source]``, so ``A @ X`` aggregates messages at targets.
        ``sum_duplicates=False`` keeps repeated edges (a non-unique CSR, as message passing sees them).
        """
        if not isinstance(edge_index, torch.Tensor):
            raise UserError(f"from_edge_index: expected a torch.Tensor (got {type(edge_index).__name__})")
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
        if t.device.type != "cpu":
            raise UserError(f"from_torch: expected a CPU tensor (got device {t.device}); call .cpu() first")
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
        """From a scipy.sparse matrix or array (CSR / CSC share its memory; others go through COO)."""
        import scipy.sparse as sp
        if not sp.issparse(m):
            raise UserError(f"from_scipy: expected a scipy.sparse matrix (got {type(m).__name__})")
        if m.format in ("csr", "csc"):
            fmt = CSR if m.format == "csr" else CSC
            pos, crd = torch.from_numpy(m.indptr), torch.from_numpy(m.indices)
            out = cls(m.shape, fmt, [None, pos], [None, crd], torch.from_numpy(m.data), check=False)
            from .validate import check_no_nan, check_tensor
            if not m.has_sorted_indices or not m.has_canonical_format:
                check_tensor(out)
            elif out.values is not None:
                check_no_nan(out.values, "from_scipy")
            return out
        c = m.tocoo()
        return cls.from_coo(torch.from_numpy(c.row), torch.from_numpy(c.col), torch.from_numpy(c.data), c.shape)

    @classmethod
    def from_dense(cls, t: torch.Tensor, format="csr") -> "SparseTensor":
        """The nonzeros of a dense matrix."""
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
        key = ("format", fmt)
        if key not in self._derived:
            from .convert_formats import convert_format
            self._derived[key] = convert_format(self, fmt)
        return self._derived[key]

    def transpose(self) -> "SparseTensor":
        """The transpose, sharing memory (a CSR becomes a CSC of the swapped shape)."""
        order = tuple(1 - o for o in self.format.order) if self.ndim == 2 else None
        if order is None:
            raise NotSupported("transpose: only matrices")
        fmt = Format(self.format.codes, order=order)
        return SparseTensor((self.shape[1], self.shape[0]), fmt, self.pos, self.crd, self.values, check=False)

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
        from .convert_formats import coordinates
        return coordinates(self)

    def value_array(self) -> torch.Tensor:
        """The values, materialising ones for a pattern-only tensor."""
        if self.values is not None:
            return self.values
        return torch.ones(self.nnz, dtype=torch.float32)

    def to_dense(self) -> torch.Tensor:
        r, c = self.coordinates()
        out = torch.zeros(tuple(self.shape), dtype=self.dtype)
        out.index_put_((r.long(), c.long()), self.value_array(), accumulate=True)
        return out

    def to_torch(self, layout=torch.sparse_csr) -> torch.Tensor:
        """A torch sparse tensor (``sparse_csr`` shares memory with a CSR of int64 or int32 indices)."""
        if layout == torch.sparse_csr:
            a = self.to(CSR)
            return torch.sparse_csr_tensor(a.pos[1], a.crd[1], a.value_array(), tuple(self.shape))
        if layout == torch.sparse_csc:
            a = self.to(CSC)
            return torch.sparse_csc_tensor(a.pos[1], a.crd[1], a.value_array(), tuple(self.shape))
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
        """A value computed once from this (immutable) tensor and cached on it."""
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]


def _as_index(a, what: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        try:
            a = torch.as_tensor(a)
        except (TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"expected {what} to be an integer tensor (got {type(a).__name__})") from e
    if a.device.type != "cpu":
        raise UserError(f"expected {what} on the CPU (got device {a.device}); call .cpu() first")
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
    if v.device.type != "cpu":
        raise UserError(f"expected values on the CPU (got device {v.device}); call .cpu() first")
    if v.dtype not in VALUE_DTYPES:
        if v.dtype.is_floating_point or not v.dtype.is_complex:
            v = v.to(torch.float32)
        else:
            raise UserError(f"expected float32 or float64 values (got {v.dtype})")
    from .validate import check_no_nan
    v = v.contiguous().reshape(-1)
    check_no_nan(v, "SparseTensor")
    return v


__all__ = ["SparseTensor", "Signature", "index_dtype_for"]
