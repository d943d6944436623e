"""The differentiable formulations of GCN and SAGE (autograd, static batches, PyG aggregators).

Sum and mean run through ``ops.spmm``, max and min through ``attention.extreme``: sgnn kernels
forward and backward, the backward derived by ``engine.derive`` (``Âᵀ G``; for max/min the
gradient routed to the extreme entries, ties split as torch's ``scatter_reduce``). PyG's
aggregation modules run as edge messages on torch ops, with PyG's gradients. Edge values that
require grad (``edge_values.live``) enter as the adjacency's values, differentiable through
``ops.spmm`` / ``attention.extreme`` (an SDDMM sampled at the pattern). GAT's counterpart is
``edgewise.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import NotSupported
from . import attention, norm, ops
from .graph import Graph


def _flat(z: torch.Tensor) -> torch.Tensor:
    """[B, N, F] (a static graph's batch) as [N, B·F] for one aggregation; [N, F] as is."""
    return z.transpose(0, 1).reshape(z.shape[1], -1) if z.dim() == 3 else z


def _unflat(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return out.reshape(out.shape[0], like.shape[0], -1).transpose(0, 1) if like.dim() == 3 else out


def gcn(conv, x, g: Graph, d, e, cnt, values=None) -> torch.Tensor:
    """GCNConv: sum/mean through ``ops.spmm``, max/min through ``attention.extreme`` over the
    explicitly normalised adjacency (its self loops stored as values). ``values``: the adjacency's
    values in CSR order when they carry a gradient (``d``, ``e`` then come from ``norm.gcn_live``)."""
    z = ops.linear(x, conv.lin.weight)
    zf = _flat(z)
    dt = zf.dtype
    if conv.aggr in ("max", "min"):
        if values is None:
            adj = norm.explicit(g, conv.improved, conv.add_self_loops, conv.normalize, dt)
        else:
            adj = norm.explicit_live(g, values, (d, d, e, cnt), conv.improved, conv.add_self_loops,
                                     conv.normalize, dt)
        out = attention.extreme(adj, zf, conv.aggr)
    else:
        inner, left, loop = norm.scales(d, e, cnt, dt, conv.normalize, conv.aggr == "mean")
        src = zf * inner.view(-1, 1) if inner is not None else zf
        adj = norm.values_as(g, dt) if values is None else g.adj.with_values(values.to(dt))
        out = ops.spmm(adj, src)
        if left is not None:
            out = out * left.view(-1, 1)
        if loop is not None:
            out = out + zf * loop.view(-1, 1)
    out = _unflat(out, z)
    if conv.bias is not None:
        out = out + conv.bias
    return out if conv.act is None else conv.act(out)


def sage(conv, g: Graph, adj, x_src, x_dst) -> torch.Tensor:
    """SAGEConv without normalisation and activation: ``W_l aggr(x) + b (+ W_r x_dst)``."""
    x = x_src.to_dense() if not isinstance(x_src, torch.Tensor) or x_src.layout != torch.strided else x_src
    x = g.sources(x.to(conv.lin_l.weight.dtype))
    aggr = "sum" if conv.aggr == "add" else conv.aggr
    if conv._native():
        if aggr in ("max", "min"):
            agg = attention.extreme(_values_of(adj, x.dtype), _flat(x), aggr)
        else:
            agg = ops.spmm(adj, _flat(x))
        if aggr == "mean":
            agg = agg * norm.inv(g.in_degree(weighted=False), agg.dtype).view(-1, 1)
        agg = _unflat(agg, x)
    else:
        rows, cols = g.rows(), g.cols()
        if g.edge_perm is not None:  # PyG's module sees the edges as given
            order = torch.argsort(g.edge_perm)
            rows, cols = rows[order], cols[order]
        msg = x.index_select(-2, cols)
        if adj.values is not None:
            msg = msg * adj.values.to(msg.dtype).view(-1, 1)
        agg = conv.aggr_module(msg, rows, dim_size=g.num_dst, dim=-2)
    out = ops.linear(agg, conv.lin_l.weight, conv.lin_l.bias)
    if x_dst is not None:
        out = out + ops.linear(x_dst, conv.lin_r.weight)
    return out


def _values_of(adj, dtype):
    """``adj`` with its values (if any) in ``dtype`` (``extreme`` wants one dtype)."""
    if adj.values is None or adj.values.dtype == dtype:
        return adj
    return adj.with_values(adj.values.to(dtype))


def pyg_aggregation(aggr, kwargs: dict, native: tuple) -> nn.Module:
    """PyG's aggregation module for ``aggr`` (lists, modules and names sgnn has no kernel for)."""
    try:
        from torch_geometric.nn.aggr import Aggregation, MultiAggregation
        from torch_geometric.nn.resolver import aggregation_resolver
    except ImportError as e:
        raise NotSupported(f"SAGEConv: aggr={aggr!r} runs as PyG's aggregation module; install "
                           f"torch-geometric, or use one of {native}") from e
    if isinstance(aggr, Aggregation):
        return aggr
    if isinstance(aggr, (list, tuple)):
        return MultiAggregation(list(aggr), **kwargs)
    return aggregation_resolver(aggr, **kwargs)
