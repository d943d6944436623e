"""Per-graph vectors the layers' formulas read: GCN's symmetric normalisation, inverse degrees.

Everything here is derived from an immutable ``Graph`` and cached on it (``Graph.derived``).
GCN's normalisation is folded into the kernel as vectors: ``d = deg^-1/2`` of the targets, ``d``
of every source column, and ``e`` the weight of an added self loop times ``d_i^2``, so the
normalised adjacency never gets a value array (except for max/min, see ``explicit``).
"""
from __future__ import annotations

import torch

from ..engine import SparseTensor, operands
from .graph import Graph


def inv_sqrt(deg: torch.Tensor) -> torch.Tensor:
    """``deg^-1/2``, 0 where the degree is 0 (PyG's rule; differentiable, as in PyG)."""
    dinv = deg.pow(-0.5)
    return dinv.masked_fill(torch.isinf(dinv), 0.0)


def inv(deg: torch.Tensor, dtype) -> torch.Tensor:
    """``1 / deg`` (0 where the degree is 0) as ``dtype``."""
    r = 1.0 / deg
    r.masked_fill_(torch.isinf(r), 0.0)
    return r.to(dtype)


def inv_count(g: Graph, dtype) -> torch.Tensor:
    """1 / (messages per target), 0 for a target without any (cached on the graph)."""
    return g.derived(("inv_count", dtype), lambda: inv(g.counts().to(torch.float64), dtype))


def pattern(g: Graph) -> SparseTensor:
    """The adjacency without its values (cached: kernels keep per-tensor state on it)."""
    a = g.adj
    return a if a.values is None else g.derived("pattern", lambda: a.with_values(None))


def values_as(g: Graph, dtype) -> SparseTensor:
    """The adjacency with its values (if any) in ``dtype``."""
    a = g.adj
    if a.values is None or a.values.dtype == dtype:
        return a
    return g.derived(("values", dtype), lambda: a.with_values(a.values.to(dtype)))


def gcn(g: Graph, improved: bool, add_self_loops: bool):
    """(d of the targets, d of every source column, e, message count) in float64.

    The kernel sums every stored entry, stored self loops included; ``e_i Z_i`` then adds the
    loop PyG's rule gives and takes away the stored ones (no loop-free copy of the graph).
    The loop weight: for an ``edge_index``, an existing loop's weight (with edge weights) or 1,
    else 2 if ``improved`` (and edge weights are given); for a sparse ``adj_t``, the stored
    diagonal plus 1 (2 if ``improved``)."""
    return g.derived(("gcn", improved, add_self_loops), lambda: _gcn(g, None, improved, add_self_loops))


def gcn_live(g: Graph, values: torch.Tensor, improved: bool, add_self_loops: bool):
    """``gcn``'s vectors as differentiable functions of the adjacency ``values`` (CSR order; not
    cached), in the values' dtype as PyG's ``gcn_norm``: the degrees, the loop weights and ``d``
    carry the values' gradient."""
    return _gcn(g, values, improved, add_self_loops)


def _gcn(g: Graph, w, improved: bool, add_self_loops: bool):
    """``gcn`` from the graph's stored values (``w`` None, float64) or from ``w`` (CSR order, its dtype)."""
    cnt = g.in_degree(weighted=False)
    if w is None:
        deg = g.in_degree()
    else:
        deg = w.new_zeros(g.num_dst).index_add(0, g.rows(), w)
    if not add_self_loops:
        d = inv_sqrt(deg)
        return d, g.sources(d), None, cnt
    has, last, stored, nloops = g.loop_weights()
    if w is not None:
        at, node = g.loops()
        lw = w.index_select(0, at)
        stored = w.new_zeros(g.num_dst).index_add(0, node, lw)
        order = g.loop_order()  # PyG writes the loops' weights in edge order: the last one wins
        last = w.new_zeros(g.num_dst).index_put((node[order],), lw[order])
    fill = 2.0 if improved else 1.0
    if g.from_sparse:
        loop = stored + fill
    elif w is None and g.adj.values is None:  # PyG: no edge weights, loops weigh 1 even if improved
        loop = torch.ones_like(stored)
    else:
        loop = torch.where(has, last, torch.full_like(stored, fill))
    d = inv_sqrt(deg - stored + loop)
    return d, g.sources(d), (loop - stored) * d * d, cnt - nloops + 1


def kernel_scales(g: Graph, improved: bool, add_self_loops: bool, normalize: bool, mean: bool, dtype):
    """(d of every source column or None, r_i or None, e_i or None) as kernel operands (cached)."""
    def make():
        d, d_src, e, cnt = gcn(g, improved, add_self_loops)
        _, r, loop = scales(d, e, cnt, dtype, normalize, mean)
        return (d_src.to(dtype) if normalize else None), r, loop
    return g.derived(("gcn-scales", improved, add_self_loops, normalize, mean, dtype), make)


def scales(d, e, cnt, dtype, normalize: bool, mean: bool):
    """(inner d_j or None, left r_i or None, loop e_i or None) as kernel operands of ``dtype``."""
    inv_cnt = 1.0 / cnt.clamp(min=1) if mean else None
    left = d if not mean else (d * inv_cnt if normalize else inv_cnt)
    loop = (e * inv_cnt if mean else e) if e is not None else None
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return (cast(d) if normalize else None), (cast(left) if normalize or mean else None), cast(loop)


def coords(g: Graph, improved: bool, add_self_loops: bool, normalize: bool):
    """(target, source, weight) of every normalised message, PyG's self loops included (max/min)."""
    def make():
        d, d_src, e, _ = gcn(g, improved, add_self_loops)
        return _messages(g, None, d, d_src, e, add_self_loops, normalize)
    return g.derived(("gcn-coords", improved, add_self_loops, normalize), make)


def _messages(g: Graph, w, d, d_src, e, add_self_loops: bool, normalize: bool):
    """``coords`` from the stored values (``w`` None) or from ``w`` (CSR order) with the
    ``gcn`` vectors computed from it."""
    base = g.without_self_loops() if add_self_loops else g
    rows, cols = base.rows(), base.cols()
    if w is None:
        wb = torch.ones(rows.numel(), dtype=torch.float64) if base.adj.values is None \
            else base.adj.values.to(torch.float64)
        stored = g.loop_weights()[2]
    else:
        at, node = g.loops()
        keep = torch.ones(g.nnz, dtype=torch.bool)
        keep[at] = False
        wb = w[keep]
        stored = w.new_zeros(g.num_dst).index_add(0, node, w.index_select(0, at))
    vals = d[rows] * wb * d_src[cols] if normalize else wb
    if add_self_loops:
        loops = torch.arange(base.num_dst)
        loop_e = e + stored * d * d  # the loop's own weight
        rows, cols, vals = torch.cat([rows, loops]), torch.cat([cols, loops]), torch.cat([vals, loop_e])
    return rows, cols, vals


def explicit(g: Graph, improved: bool, add_self_loops: bool, normalize: bool, dtype) -> SparseTensor:
    """The normalised adjacency with its self loops as stored values (for max/min kernels)."""
    def make():
        rows, cols, vals = coords(g, improved, add_self_loops, normalize)
        return SparseTensor.from_coo(rows, cols, vals.to(dtype), tuple(g.adj.shape), sum_duplicates=False)
    return g.derived(("gcn-explicit", improved, add_self_loops, normalize, dtype), make)


def explicit_live(g: Graph, w: torch.Tensor, vectors, improved: bool, add_self_loops: bool, normalize: bool,
                  dtype) -> SparseTensor:
    """``explicit`` with values that are differentiable functions of the adjacency values ``w``
    (CSR order) through ``vectors = gcn_live(g, w, ...)``: the cached pattern, the messages'
    weights gathered into its order."""
    d, d_src, e, _ = vectors
    _, _, vals = _messages(g, w, d, d_src, e, add_self_loops, normalize)

    def perm():  # storage position in explicit -> message number (the same sort, run on ids)
        rows, cols, _ = coords(g, improved, add_self_loops, normalize)
        ids = torch.arange(rows.numel(), dtype=torch.float64)
        return SparseTensor.from_coo(rows, cols, ids, tuple(g.adj.shape), sum_duplicates=False).values.long()
    order = g.derived(("gcn-explicit-order", improved, add_self_loops, normalize), perm)
    pattern_ = explicit(g, improved, add_self_loops, normalize, dtype)
    return operands.revalued(pattern_, vals.index_select(0, order).to(dtype))
