"""Node partitions: METIS through pymetis, or contiguous degree-balanced ranges (no dependency)."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .common import as_csr

METHODS = ("metis", "range")
BALANCE = ("edges", "nodes")


def partition(graph, num_nodes: int, num_parts: int, method: str = "metis", *, balance: str = "edges",
              symmetric: bool = False, seed: int = 0) -> torch.Tensor:
    """The part (in ``[0, num_parts)``) of every node, int64 ``[num_nodes]``.

    ``graph``: an ``edge_index`` [2, E] or a CSR ``(rowptr, col)`` (see ``as_csr``). ``method``:
    ``"metis"`` (pymetis k-way, minimising the edge cut on the symmetrised graph without self loops) or
    ``"range"`` (contiguous id ranges). ``balance="edges"`` weighs each node by its degree + 1 (the
    sparse product's work per rank), ``"nodes"`` counts nodes. ``symmetric=True`` promises that a CSR
    input is already symmetric and duplicate-free (the products stand-in): METIS then reads it as is,
    with no symmetrisation pass. Deterministic for a given ``seed``.
    """
    if method not in METHODS:
        raise UserError(f"partition: expected method in {METHODS} (got {method!r})")
    if balance not in BALANCE:
        raise UserError(f"partition: expected balance in {BALANCE} (got {balance!r})")
    if int(num_parts) < 1:
        raise UserError(f"partition: expected num_parts >= 1 (got {num_parts})")
    rowptr, col = as_csr(graph, num_nodes)
    if num_parts == 1 or num_nodes == 0:
        return torch.zeros(num_nodes, dtype=torch.int64)
    weight = _weights(rowptr, balance)
    if method == "range":
        return range_parts(weight, num_parts)
    return _metis(rowptr, col, num_parts, weight, symmetric, seed)


def _weights(rowptr: torch.Tensor, balance: str) -> torch.Tensor:
    deg = rowptr[1:] - rowptr[:-1]
    return deg + 1 if balance == "edges" else torch.ones_like(deg)


def range_parts(weight: torch.Tensor, num_parts: int) -> torch.Tensor:
    """Contiguous id ranges of about equal total ``weight``: node i goes to the part holding the middle
    of its weight interval."""
    cum = torch.cumsum(weight.to(torch.float64), 0)
    mid = cum - weight.to(torch.float64) / 2
    return (mid * num_parts / cum[-1]).long().clamp_(0, num_parts - 1)


def metis_graph(rowptr: torch.Tensor, col: torch.Tensor, symmetric: bool):
    """METIS's ``xadj, adjncy`` (numpy int64): symmetric, no self loops, no duplicates."""
    n = rowptr.numel() - 1
    rows = torch.repeat_interleave(torch.arange(n), rowptr[1:] - rowptr[:-1])
    if symmetric:
        keep = rows != col
        counts = torch.bincount(rows[keep], minlength=n)
        adjncy = col[keep].long()
    else:
        c = col.long()
        a, b = torch.minimum(rows, c), torch.maximum(rows, c)
        keys = torch.unique((a * n + b)[a != b])
        del a, b, c
        keys = torch.cat([keys, (keys % n) * n + keys // n]).numpy()
        keys.sort()
        counts = torch.bincount(torch.from_numpy(keys // n), minlength=n)
        adjncy = torch.from_numpy(keys % n)
    xadj = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=xadj[1:])
    return xadj.numpy(), np.ascontiguousarray(adjncy.numpy())


def _metis(rowptr, col, num_parts: int, weight: torch.Tensor, symmetric: bool, seed: int) -> torch.Tensor:
    try:
        import pymetis
    except ImportError as e:
        raise UserError("partition: method='metis' needs pymetis, which sgnn's 'distributed' extra installs "
                        "(pip install 'sgnn[distributed]', or pip install pymetis); method='range' needs "
                        "nothing") from e
    xadj, adjncy = metis_graph(rowptr, col, symmetric)
    opts = pymetis.Options(seed=int(seed))
    res = pymetis.part_graph(int(num_parts), pymetis.CSRAdjacency(adj_starts=xadj, adjacent=adjncy),
                             vweights=weight.numpy().astype(np.int64), options=opts)
    return torch.from_numpy(np.asarray(res.vertex_part, dtype=np.int64))
