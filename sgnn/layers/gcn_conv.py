"""GCNConv: Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks" (ICLR 2017)."""
from __future__ import annotations

import torch
from torch import nn

from ..engine import SparseTensor
from ..errors import NotSupported
from . import blocked, kernels, ops
from ._common import check_x, dense_features, matmul_t
from .activation import resolve
from ..engine.explain import note
from .conv import Conv, make_linear, materialize, records, refuse_grad
from .graph import Graph

AGGRS = ("add", "sum", "mean", "max", "min")


class GCNConv(Conv):
    r"""Graph convolution :math:`X' = \hat D^{-1/2} \hat A \hat D^{-1/2} X W + b`, with
    :math:`\hat A = A + I` (self loops added where missing, weight 2 if ``improved``).

    Same constructor, defaults and ``state_dict`` keys (``lin.weight``, ``bias``) as PyG's
    ``GCNConv``, including ``MessagePassing``'s options (``aggr`` = add/sum, mean, max or min,
    ``flow``, ``node_dim``). The normalisation is folded into the kernel as degree vectors; the
    product is ordered ``Â(XW)`` or ``(ÂX)W``, whichever moves fewer values through the sparse
    product. Self loops follow PyG's rule per input: an ``edge_index``'s loops are replaced by one
    per node; a sparse ``adj_t``'s diagonal gets the loop weight added. Under autograd, forward and
    backward of the aggregation run through sgnn kernels (``Âᵀ G`` for the gradient).

    Args:
        in_channels (int): input features per node (-1: inferred at the first call).
        out_channels (int): output features per node.
        improved (bool): self-loop weight 2 instead of 1. (default: :obj:`False`)
        cached (bool): keep the first graph's normalisation for all later calls (PyG's
            semantics; sgnn caches per graph anyway). (default: :obj:`False`)
        add_self_loops (bool): add remaining self loops. (default: :obj:`True`)
        normalize (bool): apply the symmetric normalisation. (default: :obj:`True`)
        bias (bool): learn an additive bias. (default: :obj:`True`)
        act (str or nn.Module, optional): sgnn extension: an activation applied in the same pass
            (``"relu"``, ``"elu"``, ``"leaky_relu"``, ``"sigmoid"``, ``"tanh"`` or the torch.nn
            module); ``from_pyg`` sets it where a model applies one right after the conv.
            (default: :obj:`None`)

    Shapes: x [N, in] (dense, torch sparse or ``sgnn.SparseTensor``) or [B, N, in] (a static
    graph), edge_index [2, E] or a sparse adjacency ``adj_t`` [N, N], edge_weight [E] → [N, out].

    >>> conv = GCNConv(16, 32)
    >>> conv(torch.randn(4, 16), torch.tensor([[0, 1, 2], [1, 2, 3]])).shape
    torch.Size([4, 32])
    """

    _extra_name = "edge_weight"

    def __init__(self, in_channels: int, out_channels: int, improved: bool = False, cached: bool = False,
                 add_self_loops: bool | None = None, normalize: bool = True, bias: bool = True,
                 act=None, **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        if self.aggr not in AGGRS:
            raise NotSupported(f"GCNConv: aggr={self.aggr!r} is not supported (use one of {AGGRS})")
        self.act = resolve(act)
        if add_self_loops is None:
            add_self_loops = normalize
        if add_self_loops and not normalize:
            raise ValueError(f"'{self.__class__.__name__}' does not support adding self-loops to the graph "
                             f"when no on-the-fly normalization is applied")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.improved, self.cached = improved, cached
        self.add_self_loops, self.normalize = add_self_loops, normalize
        self.lin = make_linear(in_channels, out_channels, bias=False)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self._cached_graph: Graph | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not isinstance(self.lin, nn.LazyLinear):
            nn.init.xavier_uniform_(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._cached_graph = None

    @property
    def _cached_edge_index(self):
        """PyG's name for the kept graph of a ``cached`` conv (here the ``Graph`` itself, or None)."""
        return self._cached_graph

    def _norm(self, g: Graph):
        """(d = deg^-1/2 of the targets, d of every source column, e, message count) in float64.

        The kernel sums every stored entry, stored self loops included; ``e_i Z_i`` then adds the
        loop PyG's rule gives and takes away the stored ones (no loop-free copy of the graph).
        The loop weight: for an ``edge_index``, an existing loop's weight (with edge weights) or 1,
        else 2 if ``improved`` (and edge weights are given); for a sparse ``adj_t``, the stored
        diagonal plus 1 (2 if ``improved``)."""
        def make():
            deg, cnt = g.in_degree(), g.in_degree(weighted=False)
            if not self.add_self_loops:
                d = _inv_sqrt(deg)
                return d, g.sources(d), None, cnt
            has, last, stored, nloops = g.loop_weights()
            fill = 2.0 if self.improved else 1.0
            if g.from_sparse:
                loop = stored + fill
            elif g.adj.values is None:
                loop = torch.ones_like(stored)
            else:
                loop = torch.where(has, last, torch.full_like(stored, fill))
            d = _inv_sqrt(deg - stored + loop)
            return d, g.sources(d), (loop - stored) * d * d, cnt - nloops + 1
        return g.derived(("gcn", self.improved, self.add_self_loops), make)

    def _graph(self, x, edge_index, edge_weight) -> Graph:
        n = x.shape[-2]
        if self.cached and self._cached_graph is not None:
            return self._cached_graph
        g = self.graph(edge_index, n, n, edge_weight)
        if self.cached:
            self._cached_graph = g
        return g

    def forward(self, x, edge_index, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        check_x(x, static=True)
        if isinstance(x, torch.Tensor):
            self.check_node_dim(x, (2, 3))
        materialize(self.lin, x, nn.init.xavier_uniform_)
        refuse_grad("edge_weight", edge_weight)
        g = self._graph(x, edge_index, edge_weight)
        d, d_src, e, cnt = self._norm(g)
        if records(x, self.lin.weight, self.bias) or x.dim() == 3:
            note(lambda: "autograd or a static batch: the differentiable formulation (ops.spmm, derived backward)")
            if g.distributed:
                raise NotSupported("GCNConv: training on a partitioned graph is not supported yet")
            return self._autograd(x, g, d, e, cnt)
        if self.aggr in ("max", "min"):
            z = g.sources(matmul_t(x, self.lin.weight))
            out = kernels.run(kernels.extreme(self.aggr, True, self.bias is not None),
                              ("gcn-ext", self.aggr, self.bias is not None), A=self._explicit(g, z.dtype),
                              Z=z, **({} if self.bias is None else {"b": self.bias.detach()}))
            return out if self.act is None else self.act.inplace(out)
        _, r, loop = self._scales(d, e, cnt, self.lin.weight.dtype)
        return self._sum(x, g, d_src.to(self.lin.weight.dtype) if self.normalize else None, r, loop)

    def _scales(self, d, e, cnt, dtype):
        """(inner d_j or None, left r_i or None, loop e_i or None) as kernel operands of ``dtype``."""
        mean = self.aggr == "mean"
        inv = 1.0 / cnt.clamp(min=1) if mean else None
        left = d if not mean else (d * inv if self.normalize else inv)
        loop = (e * inv if mean else e) if e is not None else None
        cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
        return (cast(d) if self.normalize else None), (cast(left) if self.normalize or mean else None), cast(loop)

    def _sum(self, x, base: Graph, d, r, e) -> torch.Tensor:
        """The fused sum/mean kernel: ``act(r_i Σ_j A_ij d_j Z_jk + e_i Z_ik + b_k)``."""
        w = self.lin.weight
        adj = _values_as(base, w.dtype)
        reassociate = self.lin.in_features <= self.out_channels  # (ÂX)W: the sparse product moves `in` values
        note(lambda: f"association: {'(ÂX)W' if reassociate else 'Â(XW)'} (in={self.lin.in_features}, "
             f"out={self.out_channels}: the sparse product moves min(in, out) values per edge)")
        note(lambda: "bias and activation: " + ("after the GEMM (addmm, activation in place)" if reassociate
                                        else "in the kernel's epilogue"))
        z = base.sources(dense_features(x, w.dtype) if reassociate
                         else matmul_t(x, w, base.source_rows((x.shape[0], w.shape[0]), w.dtype)))
        tensors = {"A": adj, "Z": z}
        for name, t in (("d", d), ("r", r), ("e", e)):
            if t is not None:
                tensors[name] = t
        if e is not None:
            tensors["Y"] = z[:base.num_dst]  # the loop term reads target rows only (a view)
        key = ("gcn", d is not None, e is not None, r is not None)
        if reassociate:  # (ÂX)W, row block by row block; bias and act follow the GEMM
            stmt = kernels.gcn(d is not None, e is not None, False, None, r is not None)
            rows = tuple(n for n in ("r", "e", "Y") if n in tensors)
            out = blocked.aggregate_linear(stmt, key + (False, None), tensors, rows, w, self.bias)
            return out if self.act is None else self.act.inplace(out)
        if self.bias is not None:
            tensors["b"] = self.bias.detach()
        has_bias = self.bias is not None
        stmt = kernels.gcn(d is not None, e is not None, has_bias, self.act, r is not None)
        return kernels.run(stmt, key + (has_bias, self.act), **tensors)

    def _autograd(self, x, g: Graph, d, e, cnt) -> torch.Tensor:
        """Differentiable formulation: sum/mean through ``ops.spmm`` (sgnn kernels both ways),
        max/min as edge messages with torch's scatter (PyG's gradients)."""
        z = ops.linear(x, self.lin.weight)
        static = z.dim() == 3
        zf = z.transpose(0, 1).reshape(z.shape[1], -1) if static else z
        dt = zf.dtype
        if self.aggr in ("max", "min"):
            rows, cols, vals = self._coords(g, d, d)
            out = ops.scatter(zf[cols] * vals.to(dt).view(-1, 1), rows, zf.shape[0], self.aggr)
        else:
            inner, left, loop = self._scales(d, e, cnt, dt)
            src = zf * inner.view(-1, 1) if inner is not None else zf
            out = ops.spmm(_values_as(g, dt), src)
            if left is not None:
                out = out * left.view(-1, 1)
            if loop is not None:
                out = out + zf * loop.view(-1, 1)
        if static:
            out = out.reshape(out.shape[0], z.shape[0], -1).transpose(0, 1)
        if self.bias is not None:
            out = out + self.bias
        return out if self.act is None else self.act(out)

    def _coords(self, g: Graph, d, d_src):
        """(target, source, weight) of every normalised message, PyG's self loops included (max/min)."""
        def make():
            base = g.without_self_loops() if self.add_self_loops else g
            rows, cols = base.rows(), base.cols()
            w = torch.ones(rows.numel(), dtype=torch.float64) if base.adj.values is None \
                else base.adj.values.to(torch.float64)
            vals = d[rows] * w * d_src[cols] if self.normalize else w
            if self.add_self_loops:
                _, last, stored, _ = g.loop_weights()
                loop_e = self._norm(g)[2] + stored * d * d  # the loop's own weight, stored ones taken back
                loops = torch.arange(base.num_dst)
                rows, cols, vals = torch.cat([rows, loops]), torch.cat([cols, loops]), torch.cat([vals, loop_e])
            return rows, cols, vals
        return g.derived(("gcn-coords", self.improved, self.add_self_loops, self.normalize), make)

    def _explicit(self, g: Graph, dtype) -> SparseTensor:
        """The normalised adjacency with its self loops as stored values (for max/min kernels)."""
        def make():
            d, d_src, _, _ = self._norm(g)
            rows, cols, vals = self._coords(g, d, d_src)
            return SparseTensor.from_coo(rows, cols, vals.to(dtype), tuple(g.adj.shape), sum_duplicates=False)
        return g.derived(("gcn-explicit", self.improved, self.add_self_loops, self.normalize, dtype), make)

    def __repr__(self) -> str:
        act = "" if self.act is None else f", act={self.act}"
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}{act})"


def _inv_sqrt(deg: torch.Tensor) -> torch.Tensor:
    dinv = deg.pow(-0.5)
    return dinv.masked_fill_(torch.isinf(dinv), 0.0)


def _values_as(g: Graph, dtype) -> SparseTensor:
    a = g.adj
    if a.values is None or a.values.dtype == dtype:
        return a
    return g.derived(("values", dtype), lambda: a.with_values(a.values.to(dtype)))
