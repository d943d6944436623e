"""GCNConv: Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks" (ICLR 2017)."""
from __future__ import annotations

import functools

import torch
from torch import nn

from ..engine import layerplan
from ..engine.explain import note
from ..engine.expr import Statement, compute, indices, max_, min_, sum_, tensors
from ..errors import NotSupported
from . import differentiable, edge_values, norm
from .activation import resolve
from .conv import Conv, make_linear, materialize, records
from .graph import Graph
from .inputs import check_x

AGGRS = ("add", "sum", "mean", "max", "min")


class GCNConv(Conv):
    r"""Graph convolution :math:`X' = \hat D^{-1/2} \hat A \hat D^{-1/2} X W + b`, with
    :math:`\hat A = A + I` (self loops added where missing, weight 2 if ``improved``).

    Same constructor, defaults and ``state_dict`` keys (``lin.weight``, ``bias``) as PyG's
    ``GCNConv``, including ``MessagePassing``'s options (``aggr`` = add/sum, mean, max or min,
    ``flow``, ``node_dim``). The normalisation is folded into the kernel as degree vectors; the
    layer is one statement (``statement``) that the engine's layer planner orders ``Â(XW)`` or
    ``(ÂX)W``, whichever moves fewer values through the sparse product. Self loops follow PyG's
    rule per input: an ``edge_index``'s loops are replaced by one per node; a sparse ``adj_t``'s
    diagonal gets the loop weight added. Under autograd, forward and
    backward of the aggregation run through sgnn kernels (``Âᵀ G`` for the gradient); an
    ``edge_weight`` (or a sparse ``adj_t``'s values) that requires grad gets PyG's gradient, in
    the caller's edge order: the normalisation is then computed from it by differentiable torch
    ops, the values' gradient is the derived SDDMM (``edge_values.py``).

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
        self._cached_live: tuple | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not isinstance(self.lin, nn.LazyLinear):
            nn.init.xavier_uniform_(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._cached_graph = self._cached_live = None

    @property
    def _cached_edge_index(self):
        """PyG's name for the kept graph of a ``cached`` conv (here the ``Graph`` itself, or None)."""
        return self._cached_graph

    def _graph(self, x, edge_index, edge_weight):
        """(graph, live) for this call: ``live`` is (values, d, e, count) when autograd records on
        the edge values (``edge_values.live``; ``d``, ``e`` then carry their gradient), else None.
        A ``cached`` conv keeps both from its first call, as PyG keeps its normalised weights
        (with their autograd graph: a second backward through them fails as in PyG)."""
        if self.cached and self._cached_graph is not None:
            return self._cached_graph, self._cached_live
        grad = edge_values.wanted(edge_index, edge_weight)
        pattern_only = grad and edge_values.from_edge_index(edge_index)  # values: edge_values.live
        g = self.graph(edge_index, x.shape[-2], x.shape[-2], None if pattern_only else edge_weight)
        values = edge_values.live(g, edge_index, edge_weight) if grad else None
        live = None
        if values is not None:
            d, _, e, cnt = norm.gcn_live(g, values, self.improved, self.add_self_loops)
            live = (values, d, e, cnt)
        if self.cached:
            self._cached_graph, self._cached_live = g, live
        return g, live

    def forward(self, x, edge_index, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        check_x(x, static=True)
        if isinstance(x, torch.Tensor):
            self.check_node_dim(x, (2, 3))
        materialize(self.lin, x, nn.init.xavier_uniform_)
        g, live = self._graph(x, edge_index, edge_weight)
        if live is not None or records(x, self.lin.weight, self.bias) or x.ndim == 3:
            note(lambda: "autograd or a static batch: the differentiable formulation "
                         "(differentiable.aggregate, derived backward)")
            if g.distributed:
                raise NotSupported("GCNConv: training on a partitioned graph is not supported yet")
            if live is not None:
                values, d, e, cnt = live
                return differentiable.gcn(self, x, g, d, e, cnt, values)
            d, _, e, cnt = norm.gcn(g, self.improved, self.add_self_loops)
            return differentiable.gcn(self, x, g, d, e, cnt)
        w = self.lin.weight
        ops = {"X": x, "W": w} if self.bias is None else {"X": x, "W": w, "b": self.bias.detach()}
        if self.aggr in ("max", "min"):
            ops["A"] = norm.explicit(g, self.improved, self.add_self_loops, self.normalize, w.dtype)
            return layerplan.run(statement(self.aggr, False, False, False, self.bias is not None, self.act), ops, g)
        d, r, loop = norm.kernel_scales(g, self.improved, self.add_self_loops, self.normalize, self.aggr == "mean",
                                        w.dtype)
        ops.update((k, v) for k, v in (("A", norm.values_as(g, w.dtype)), ("d", d), ("r", r), ("e", loop))
                   if v is not None)
        stmt = statement("sum", self.normalize, r is not None, loop is not None, self.bias is not None, self.act)
        return layerplan.run(stmt, ops, g)

    def __repr__(self) -> str:
        act = "" if self.act is None else f", act={self.act}"
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}{act})"


i, j, k, f = indices("i j k f")
A, X, W, b, d, r, e = tensors("A X W b d r e")


@functools.lru_cache(maxsize=None)
def statement(aggr: str, normalize: bool, scaled: bool, loops: bool, bias: bool, act) -> Statement:
    """``act(r_i Σ_j A_ij d_j (XW)_jk + e_i (XW)_ik + b_k)`` (``(XW)_nk = Σ_f X_nf W_kf``), or for
    max/min ``act(max_j Â_ij (XW)_jk + b_k)`` over the explicitly normalised ``Â``."""
    xw = lambda n: sum_(f, X[n, f] * W[k, f])  # noqa: E731
    if aggr in ("max", "min"):
        out = (max_ if aggr == "max" else min_)(j, A[i, j] * xw(j))
    else:
        out = sum_(j, A[i, j] * d[j] * xw(j)) if normalize else sum_(j, A[i, j] * xw(j))
        out = r[i] * out if scaled else out
        out = out + e[i] * xw(i) if loops else out
    out = out + b[k] if bias else out
    return compute((i, k), out if act is None else act.expr(out))
