"""Aggregate first, then transform, one block of target rows at a time: ``(ÂX)W`` without an N×F
intermediate.

When a layer aggregates raw features (``F_in ≤ F_out``), the aggregation ``ÂX`` is as large as the
input. At products scale (2.45M nodes, F = 256) that is 2.3 GiB next to the input and the output.
Here the kernel runs on a row slice of the CSR (``pos`` shifted, ``crd``/values shared) into a
block of ``BLOCK_BYTES``, and the GEMM writes that block's rows of the output directly: the peak
is the input, the output and one block. Small layers (aggregation below ``MIN_BYTES``) take one
pass, as before.
"""
from __future__ import annotations

import torch

from ..engine import SparseTensor, memory
from ..engine.explain import note
from . import kernels

BLOCK_BYTES = 32 << 20
MIN_BYTES = 256 << 20


def row_slice(a: SparseTensor, r0: int, r1: int) -> SparseTensor:
    """Rows ``[r0, r1)`` of a CSR (or non-unique CSR) matrix, sharing its coordinates and values."""
    pos = a.pos[1]
    p0, p1 = int(pos[r0]), int(pos[r1])
    vals = None if a.values is None else a.values[p0:p1]
    return SparseTensor((r1 - r0, a.shape[1]), a.format, [None, pos[r0:r1 + 1] - p0], [None, a.crd[1][p0:p1]],
                        vals, check=False)


def aggregate_linear(stmt, key, tensors: dict, row_names: tuple[str, ...], weight: torch.Tensor,
                     bias: torch.Tensor | None, finish=None) -> torch.Tensor:
    """``agg @ weight.T + bias`` with ``agg = stmt(**tensors)`` (its rows = the CSR ``A``'s rows);
    operands in ``row_names`` are indexed by target row. ``finish(out_rows, r0, r1)`` adds per-block
    terms (SAGE's root weight) in place."""
    adj = tensors["A"]
    n, f_in = adj.shape[0], tensors["Z"].shape[1]
    w = weight.detach()
    b = None if bias is None else bias.detach()
    if n * f_in * w.element_size() < MIN_BYTES:
        agg = kernels.run(stmt, key, **tensors)
        out = memory.empty((n, w.shape[0]), w.dtype)
        out = torch.mm(agg, w.t(), out=out) if b is None else torch.addmm(b, agg, w.t(), out=out)
        if finish is not None:
            finish(out, 0, n)
        return out
    out = memory.empty((n, w.shape[0]), w.dtype)
    step = max(1024, BLOCK_BYTES // (f_in * w.element_size()))
    note(lambda: f"row-blocked (ÂX)W: {-(-n // step)} blocks of {step} rows (no {n}x{f_in} intermediate)")
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        part = dict(tensors, A=row_slice(adj, r0, r1))
        for name in row_names:
            part[name] = tensors[name][r0:r1]
        agg = kernels.run(stmt, key, **part)
        rows = out[r0:r1]
        torch.mm(agg, w.t(), out=rows) if b is None else torch.addmm(b, agg, w.t(), out=rows)
        if finish is not None:
            finish(rows, r0, r1)
    return out
