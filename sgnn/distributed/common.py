"""Shared pieces: errors, graph inputs as CSR, collective agreement on errors."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import UserError


class PartitionError(UserError):
    """A partition that cannot be used: missing or corrupted files, another partitioning, wrong world size."""


class PeerError(RuntimeError):
    """A collective with the other ranks failed (a peer died, or did not arrive within the timeout)."""


def as_tensor(a) -> torch.Tensor:
    """A torch view of a tensor or numpy array (read-only memmaps included: never written through)."""
    if isinstance(a, torch.Tensor):
        return a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)    # "non-writable": these arrays are only read
        return torch.from_numpy(np.asarray(a))


def as_csr(graph, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rowptr int64, col)`` of ``A[target, source]`` from an ``edge_index`` [2, E] (row 0 = source) or
    a CSR ``(rowptr, col)`` (rows = targets, as PyG's ``adj_t``); validated. Repeated edges are kept."""
    if isinstance(graph, (tuple, list)) and len(graph) == 2:
        rowptr, col = as_tensor(graph[0]), as_tensor(graph[1])
        _check_index(col, "col")
        if rowptr.dim() != 1 or rowptr.numel() != num_nodes + 1:
            raise UserError(f"Expected a CSR rowptr of {num_nodes + 1} entries (got {list(rowptr.shape)})")
        rowptr = rowptr.long()
        if int(rowptr[0]) != 0 or int(rowptr[-1]) != col.numel() or bool((rowptr[1:] < rowptr[:-1]).any()):
            raise UserError("Expected a CSR rowptr starting at 0, non-decreasing, ending at len(col)")
    elif isinstance(graph, torch.Tensor):
        if graph.dim() != 2 or graph.size(0) != 2:
            raise UserError(f"Expected 'edge_index' of shape [2, num_edges] (got {list(graph.shape)})")
        _check_index(graph, "edge_index")
        src, dst = graph[0], graph[1].long()
        _check_range(dst, num_nodes, "edge_index")
        order = torch.argsort(dst, stable=True)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0, out=rowptr[1:])
        col = src[order]
    else:
        raise UserError(f"Expected an edge_index tensor [2, E] or a CSR tuple (rowptr, col) "
                        f"(got {type(graph).__name__})")
    _check_range(col, num_nodes, "source")
    return rowptr, col


def _check_index(t: torch.Tensor, what: str) -> None:
    if t.dtype not in (torch.int32, torch.int64):
        raise UserError(f"Expected {what} to hold int32 or int64 indices (got {t.dtype})")


def _check_range(t: torch.Tensor, n: int, what: str) -> None:
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise UserError(f"Expected {what} node ids in [0, {n}) (got [{int(t.min())}, {int(t.max())}])")


def world(group=None) -> tuple[int, int]:
    """(rank, world size) of ``group``; (0, 1) without an initialised process group."""
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def agree(error: BaseException | None, group=None, what: str = "distributed setup") -> None:
    """Every rank raises if any rank had ``error`` (one message naming the failing ranks), so that a bad
    input on one rank never leaves the others waiting in a collective."""
    import torch.distributed as dist
    rank, size = world(group)
    msg = None if error is None else f"{type(error).__name__}: {error}"
    if size == 1:
        msgs = [msg]
    else:
        msgs = [None] * size
        try:
            dist.all_gather_object(msgs, msg, group=group)
        except Exception as e:
            raise PeerError(f"rank {rank}: could not agree with the other ranks on {what} (a peer died or "
                            f"timed out): {e}") from (error or e)
    bad = [(r, m) for r, m in enumerate(msgs) if m is not None]
    if bad:
        text = "; ".join(f"rank {r}: {m}" for r, m in bad)
        raise PartitionError(f"{what} failed on {len(bad)} of {size} "
                             f"rank(s): {text}") from error
