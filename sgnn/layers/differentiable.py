"""The differentiable formulations of GCN and SAGE (autograd, static batches, PyG aggregators).

Sum and mean run as one statement ``r_i Σ_j A_ij d_j Z_jk + e_i Z_ik`` (``aggregate``: GCN's
normalisation and self loops, SAGE's mean, in the kernel), max and min through
``attention.extreme``: sgnn kernels forward and backward, the backward derived by
``engine.derive`` (``Âᵀ G`` with the scalings; for max/min the gradient routed to the extreme
entries, ties split as torch's ``scatter_reduce``). Sum and mean aggregate whichever of ``X`` and
``XW`` is narrower. PyG's aggregation modules run as edge messages on torch ops, with PyG's
gradients. Edge values that require grad (``edge_values.live``) enter as the adjacency's values
(``operands.revalued``: the pattern's transposed twin and partitions are reused), differentiable
through the same kernels (an SDDMM sampled at the pattern). GAT's counterpart is ``edgewise.py``.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from ..engine import SparseTensor, autodiff, operands
from ..engine.expr import Statement, compute, indices, sum_, tensors
from ..engine.runtime import evaluate
from ..errors import NotSupported
from . import attention, norm, ops
from .graph import Graph

_i, _j, _k = indices("i j k")
_A, _Z, _D, _R, _E = tensors("A Z d r e")


def _flat(z: torch.Tensor) -> torch.Tensor:
    """[B, N, F] (a static graph's batch) as [N, B·F] for one aggregation; [N, F] as is."""
    return z.transpose(0, 1).reshape(z.shape[1], -1) if z.dim() == 3 else z


def _unflat(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return out.reshape(out.shape[0], like.shape[0], -1).transpose(0, 1) if like.dim() == 3 else out


@functools.lru_cache(maxsize=None)
def aggregation(inner: bool, left: bool, loop: bool) -> Statement:
    """``r_i Σ_j A_ij d_j Z_jk + e_i Z_ik`` (``d``, ``r``, ``e`` where flagged): GCN's and SAGE's
    sum/mean as one kernel, forward and (derived) backward, instead of an SpMM between row scalings."""
    out = sum_(_j, _A[_i, _j] * _D[_j] * _Z[_j, _k]) if inner else sum_(_j, _A[_i, _j] * _Z[_j, _k])
    out = _R[_i] * out if left else out
    return compute((_i, _k), out + _E[_i] * _Z[_i, _k] if loop else out)


def aggregate(adj: SparseTensor, z: torch.Tensor, inner=None, left=None, loop=None) -> torch.Tensor:
    """``aggregation``'s statement on ``adj`` [N_dst, N_src] and ``z`` [N_src, F], differentiable
    w.r.t. ``z``, the vectors and ``adj``'s values (its backward is what ``engine.derive`` derives)."""
    dt = z.dtype
    if adj.values is not None and adj.values.dtype != dt:
        adj = adj.with_values(adj.values.to(dt))
    if adj.values is None and "u" in adj.format.codes:  # repeated edges: keep their multiplicity
        adj = adj.derived(("ones", dt), lambda: adj.with_values(torch.ones(adj.nnz, dtype=dt)))
    ops_ = {"A": adj, "Z": z.contiguous()}
    for name, v in (("d", inner), ("r", left), ("e", loop)):
        if v is not None:
            ops_[name] = v.to(dt).contiguous()
    stmt = aggregation(inner is not None, left is not None, loop is not None)
    return autodiff.evaluate(stmt, ops_, _run) if autodiff.needs_grad(ops_) else _run(stmt, ops_)


def _run(stmt, ops_):
    return evaluate(stmt, ops_)


def _dense(x) -> bool:
    return isinstance(x, torch.Tensor) and x.layout == torch.strided


def gcn(conv, x, g: Graph, d, e, cnt, values=None) -> torch.Tensor:
    """GCNConv: sum/mean through ``aggregate`` (``(ÂX)W`` when that is narrower, as the planner
    orders inference), max/min through ``attention.extreme`` over the explicitly normalised
    adjacency (its self loops stored as values). ``values``: the adjacency's values in CSR order
    when they carry a gradient (``d``, ``e`` then come from ``norm.gcn_live``)."""
    w = conv.lin.weight
    if conv.aggr in ("max", "min"):
        z = ops.linear(x, w)
        zf = _flat(z)
        if values is None:
            adj = norm.explicit(g, conv.improved, conv.add_self_loops, conv.normalize, zf.dtype)
        else:
            adj = norm.explicit_live(g, values, (d, d, e, cnt), conv.improved, conv.add_self_loops,
                                     conv.normalize, zf.dtype)
        out = _unflat(attention.extreme(adj, zf, conv.aggr), z)
    else:
        narrow = _dense(x) and w.shape[1] < w.shape[0]  # in < out: aggregate the inputs
        z = x.to(w.dtype) if narrow else ops.linear(x, w)
        zf = _flat(z)
        if values is None:
            key = ("gcn-train-scales", conv.improved, conv.add_self_loops, conv.normalize, conv.aggr,
                   zf.dtype)
            inner, left, loop = g.derived(key, lambda: norm.scales(d, e, cnt, zf.dtype, conv.normalize,
                                                                   conv.aggr == "mean"))
            adj = norm.values_as(g, zf.dtype)
        else:
            inner, left, loop = norm.scales(d, e, cnt, zf.dtype, conv.normalize, conv.aggr == "mean")
            adj = operands.revalued(g.adj, values.to(zf.dtype))
        out = _unflat(aggregate(adj, zf, inner, left, loop), z)
        if narrow:
            out = ops.linear(out, w)
    if conv.bias is not None:
        out = out + conv.bias
    return out if conv.act is None else conv.act(out)


def sage(conv, g: Graph, adj, x_src, x_dst) -> torch.Tensor:
    """SAGEConv without normalisation and activation: ``W_l aggr(x) + b (+ W_r x_dst)``; sum and
    mean aggregate ``X W_l`` when that is narrower than ``X`` (they commute with ``W_l``)."""
    wl = conv.lin_l.weight
    aggr = "sum" if conv.aggr == "add" else conv.aggr
    if conv._native() and aggr in ("sum", "mean") and wl.shape[0] < wl.shape[1] and not g.distributed:
        z = _flat(ops.linear(x_src, wl))
        left = g.derived(("inv_deg", z.dtype), lambda: norm.inv(g.in_degree(weighted=False), z.dtype)) \
            if aggr == "mean" else None
        out = _unflat(aggregate(adj, z, left=left), x_src if _dense(x_src) else z)
        out = out if conv.lin_l.bias is None else out + conv.lin_l.bias
        return out if x_dst is None else out + ops.linear(x_dst, conv.lin_r.weight)
    x = x_src.to_dense() if not _dense(x_src) else x_src
    x = g.sources(x.to(wl.dtype))
    if conv._native():
        if aggr in ("max", "min"):
            agg = attention.extreme(_values_of(adj, x.dtype), _flat(x), aggr)
        else:
            left = g.derived(("inv_deg", x.dtype), lambda: norm.inv(g.in_degree(weighted=False), x.dtype)) \
                if aggr == "mean" else None
            agg = aggregate(adj, _flat(x), left=left)
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
    out = ops.linear(agg, wl, conv.lin_l.bias)
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
