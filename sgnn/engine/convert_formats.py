"""Conversions between matrix formats: every format goes through canonical CSR.

The sorting work (COO → CSR, CSR ↔ CSC, duplicate summing) runs in ``csrc/convert.cpp``;
the rest are single vectorised torch ops (prefix sums, repeats).

Repeated coordinates keep adding up: a target with a non-unique level (``Format("du")`` in
either order, COO) keeps them; a unique target (CSR, CSC, DCSR) sums them, and a pattern-only
tensor then gets their counts as values (marked ``counts``).
"""
from __future__ import annotations

import torch

from ..errors import NotSupported
from . import convert
from .formats import COO, CSC, CSR, DCSR, DCSC, Format
from .native import real_mode


def _lengths(pos: torch.Tensor) -> torch.Tensor:
    return pos[1:] - pos[:-1]


def _expand(coords: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Repeat each parent coordinate once per child position."""
    return torch.repeat_interleave(coords, _lengths(pos).long()).to(pos.dtype)


def coordinates(t) -> tuple[torch.Tensor, torch.Tensor]:
    """(coordinate of dim 0, coordinate of dim 1) for every stored entry of a matrix, in storage order."""
    if t.ndim != 2:
        raise NotSupported(f"coordinates: only matrices (got {t.ndim} dimensions)")
    codes, idt = t.format.codes, t.index_dtype
    if codes in ("ds", "du"):
        outer = _expand(torch.arange(t.level_dim(0), dtype=idt), t.pos[1])
        inner = t.crd[1]
    elif codes in ("uq", "sq"):
        outer, inner = t.crd[0], t.crd[1]
    elif codes in ("ss", "su"):
        outer, inner = _expand(t.crd[0], t.pos[1]), t.crd[1]
    elif codes == "dd":
        n0, n1 = t.level_dim(0), t.level_dim(1)
        outer = torch.arange(n0, dtype=idt).repeat_interleave(n1)
        inner = torch.arange(n1, dtype=idt).repeat(n0)
    else:
        raise NotSupported(f"coordinates: format {t.format!r}")
    return (outer, inner) if t.format.order == (0, 1) else (inner, outer)


def level_coordinates(t) -> list[torch.Tensor]:
    """Per dimension, the int64 coordinate of every stored value, in storage order (any format,
    any number of dimensions: e.g. a sampled output with trailing dense levels)."""
    coords: list = []  # per level so far, one entry per position of the current level
    parents = 1
    for k, lv in enumerate(t.format.levels):
        n = t.level_dim(k)
        if lv.kind == "dense":
            coords = [c.repeat_interleave(n) for c in coords] + [torch.arange(n).repeat(parents)]
            parents *= n
            continue
        if lv.kind == "compressed":
            lengths = _lengths(t.pos[k]).long()
            coords = [c.repeat_interleave(lengths) for c in coords]
        coords.append(t.crd[k].long())
        parents = t.crd[k].numel()
    by_dim = [None] * len(coords)
    for k, d in enumerate(t.format.order):
        by_dim[d] = coords[k]
    return by_dim


def _to_csr(t):
    """Canonical CSR (sorted, unique) of a matrix in any format."""
    if t.format == CSR:
        return t
    if t.format.codes == "ds" and t.format.order == (1, 0):  # CSC: transpose its storage
        pos, crd, val = convert.widened(convert.csr_transpose, t.pos[1], t.crd[1], t.values, (t.shape[1], t.shape[0]))
    else:
        r, c = coordinates(t)
        pos, crd, val = convert.widened(convert.coo_to_csr, r, c, t.values, tuple(t.shape), sum_duplicates=True)
    return type(t)(t.shape, CSR, [None, pos], [None, crd], val, check=False)


def _from_csr(a, fmt: Format):
    pos, crd = a.pos[1], a.crd[1]
    if fmt == CSR:
        return a
    if fmt == CSC:
        p, c, v = convert.widened(convert.csr_transpose, pos, crd, a.values, tuple(a.shape))
        return type(a)(a.shape, CSC, [None, p], [None, c], v, check=False)
    if fmt == COO:
        rows = _expand(torch.arange(a.shape[0], dtype=pos.dtype), pos)
        top = torch.tensor([0, crd.numel()], dtype=pos.dtype)
        return type(a)(a.shape, COO, [top, None], [rows, crd], a.values, check=False)
    if fmt == DCSR:
        rows = torch.nonzero(_lengths(pos)).reshape(-1).to(pos.dtype)
        top = torch.tensor([0, rows.numel()], dtype=pos.dtype)
        inner = torch.cat([pos[rows.long()], pos[-1:]])
        return type(a)(a.shape, DCSR, [top, inner], [rows, crd], a.values, check=False)
    if fmt == DCSC:
        return _from_csr(_to_csr(a.transpose()), DCSR).transpose()
    raise NotSupported(f"convert: format {fmt!r} (supported: csr, csc, coo, dcsr, dcsc)")


def _non_unique(t, order: tuple):
    """``t`` as ``Format("du", order)``: sorted, every repeated coordinate kept (stable)."""
    r, c = coordinates(t)
    shape = tuple(t.shape) if order == (0, 1) else (t.shape[1], t.shape[0])
    outer, inner = (r, c) if order == (0, 1) else (c, r)
    pos, crd, val = convert.widened(convert.coo_to_csr, outer, inner, t.values, shape, sum_duplicates=False,
                                       index_dtype=t.index_dtype)
    return type(t)(t.shape, Format("du", order=order), [None, pos], [None, crd], val, check=False)


def _convert(t, fmt: Format):
    if fmt.codes == "du":
        return _non_unique(t, fmt.order)
    if fmt == COO and t.format.codes == "du" and t.format.order == (0, 1):
        return _from_csr(t, COO)  # expanding the rows keeps the repeats
    return _from_csr(_to_csr(t), fmt)


def convert_format(t, fmt: Format):
    """``t`` in format ``fmt`` (matrices only), keeping its index dtype (kernels specialise on it)."""
    if t.ndim != 2:
        raise NotSupported(f"convert: only matrices (got {t.ndim} dimensions)")
    real_mode("convert")  # a conversion is cached on the tensor: it must hold real arrays
    out = _convert(t, fmt)
    idt = t.index_dtype
    pos, crd = out.pos, out.crd
    if out.index_dtype != idt:
        pos, crd = [None if a is None else a.to(idt) for a in pos], [None if a is None else a.to(idt) for a in crd]
    counts = t.counts or (t.values is None and out.values is not None)
    return type(t)(out.shape, out.format, pos, crd, out.values, check=False, counts=counts)
