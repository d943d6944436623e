"""Per-edge values that carry gradients: an ``edge_weight``, or a sparse ``adj_t``'s values.

A ``Graph`` holds its values detached (it is cached across calls). When autograd records on the
caller's per-edge tensor, ``live`` gives the graph's values again, in its CSR order, as a
differentiable function of that tensor: a gather by ``edge_perm`` for an ``edge_index``
(its backward scatters the gradient back to the caller's edge order; a repeated edge is its own
entry), the tensor's own values for a CSR input, a coalesce for a torch COO (a repeated
coordinate's entries share the summed entry's gradient, as torch's ``coalesce`` gives), a gather
by the conversion's permutation for other formats.
"""
from __future__ import annotations

import torch

from ..engine import SparseTensor
from ..engine.formats import CSR, Format
from ..errors import NotSupported, UserError
from .graph import Graph


def _source(edge_index, edge_weight):
    """The tensor whose gradient is wanted (the edge weights, or a sparse adjacency), or None."""
    if isinstance(edge_index, SparseTensor):
        return edge_index.values
    if isinstance(edge_index, torch.Tensor) and edge_index.layout != torch.strided:
        return edge_index
    if isinstance(edge_index, torch.Tensor):
        return edge_weight
    return None


def from_edge_index(edge_index) -> bool:
    """True for an ``edge_index`` [2, E] (a dense tensor): its graph's values can come from ``live``
    alone, so the layers then take the pattern-only graph (no CSR rebuilt per step of training
    edge weights)."""
    return isinstance(edge_index, torch.Tensor) and edge_index.layout == torch.strided


def wanted(edge_index, edge_weight) -> bool:
    """True when autograd records on the per-edge values of this call."""
    t = _source(edge_index, edge_weight)
    return torch.is_grad_enabled() and isinstance(t, torch.Tensor) and t.requires_grad


def live(g: Graph, edge_index, edge_weight) -> torch.Tensor | None:
    """``g``'s adjacency values (CSR order) as a differentiable function of the caller's per-edge
    tensor, or None when autograd does not record on it."""
    if not wanted(edge_index, edge_weight):
        return None
    if g.distributed:
        raise NotSupported("gradients w.r.t. edge values of a partitioned graph are not supported yet")
    if isinstance(edge_index, SparseTensor):
        return _reordered(g, edge_index, edge_index.values)
    if isinstance(edge_index, torch.Tensor) and edge_index.layout != torch.strided:
        return _torch_sparse(g, edge_index)
    w = edge_weight
    if w.dim() != 1 or w.numel() != g.nnz:
        raise UserError(f"Expected 'edge_weight' of shape [{g.nnz}] (got {list(w.shape)})")
    if w.device.type != "cpu":
        raise UserError(f"Expected 'edge_weight' on the CPU (got device {w.device})")
    if w.dtype not in (torch.float32, torch.float64):
        raise UserError(f"Expected 'edge_weight' to hold float32 or float64 values when it requires grad "
                        f"(got {w.dtype})")
    if bool(torch.isnan(w.detach()).any()):
        raise UserError("Expected 'edge_weight' without NaN values")
    return w.index_select(0, g.edge_perm)


def _torch_sparse(g: Graph, t: torch.Tensor) -> torch.Tensor:
    if t.layout == torch.sparse_coo:
        return t.coalesce().values()  # row-major, repeats summed: the graph's CSR order
    if t.layout == torch.sparse_csr:
        return t.values()
    if t.layout == torch.sparse_csc:
        return _reordered(g, SparseTensor.from_torch(t.detach()), t.values())
    raise NotSupported(f"gradients w.r.t. the values of a {t.layout} adjacency are not supported")


def _reordered(g: Graph, t: SparseTensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` (``t``'s storage order) in the graph's CSR order."""
    if t.format in (CSR, Format("du")):
        return values
    def perm():
        ids = SparseTensor(t.shape, t.format, t.pos, t.crd, torch.arange(t.nnz, dtype=torch.float64),
                           check=False).to(CSR)
        if ids.nnz != t.nnz:
            raise NotSupported(f"gradients w.r.t. the values of a {t.format.name} adjacency with repeated "
                               f"coordinates are not supported; pass it as CSR")
        return ids.values.long()
    return values.index_select(0, g.derived("value-perm", perm))
