"""SAGEConv: Hamilton et al., "Inductive Representation Learning on Large Graphs" (NeurIPS 2017)."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import layerplan, operands
from ..engine.expr import Statement, compute, indices, max_, min_, pattern, sum_, tensors
from ..errors import NotSupported
from . import differentiable, edge_values, norm, ops
from .activation import resolve
from .conv import Conv, make_linear, materialize, records
from .inputs import check_x

NATIVE = ("mean", "sum", "add", "max", "min")  # aggregators with a compiled kernel


class SAGEConv(Conv):
    r"""GraphSAGE: :math:`x_i' = W_1 x_i + W_2 \cdot \mathrm{aggr}_{j \in N(i)} x_j`.

    Same constructor, defaults and ``state_dict`` keys (``lin_l.*``, ``lin_r.weight``, ``lin.*``
    with ``project``, ``aggr_module.*``) as PyG's ``SAGEConv``. The layer is one statement
    (``statement``) that the engine's planner orders (mean and sum aggregate ``X W_2`` when that
    is narrower than ``X``; max and min aggregate raw features). Other PyG aggregators (``"mul"``,
    ``"std"``, ``"lstm"``, lists, an ``Aggregation`` module...) run as PyG's own aggregation module
    on torch ops (PyG needed; imported only then). A sparse ``adj_t`` with values weighs its
    messages, as PyG's sparse path does (values that require grad get PyG's gradient); an
    ``edge_index`` never does.

    Args:
        in_channels (int or tuple): input features (``(source, target)`` for bipartite graphs;
            -1: inferred at the first call).
        out_channels (int): output features.
        aggr (str, list or Aggregation): the neighbourhood aggregation. (default: :obj:`"mean"`)
        normalize (bool): L2-normalise outputs. (default: :obj:`False`)
        root_weight (bool): add :math:`W_1 x_i`. (default: :obj:`True`)
        project (bool): project source features first (``relu(lin(x))``). (default: :obj:`False`)
        bias (bool): bias of ``lin_l``. (default: :obj:`True`)
        act (str or nn.Module, optional): sgnn extension: an activation applied in the same pass
            (after ``normalize``); see :class:`sgnn.layers.GCNConv`. (default: :obj:`None`)

    Shapes: x [N, in], [B, N, in] (static graph) or ([N_src, in], [N_dst, in]), edge_index [2, E] → [N_dst, out].
    """

    def __init__(self, in_channels, out_channels: int, aggr="mean", normalize: bool = False,
                 root_weight: bool = True, project: bool = False, bias: bool = True, act=None, **kwargs):
        ins = (in_channels, in_channels) if isinstance(in_channels, int) else tuple(in_channels)
        if aggr == "lstm":
            kwargs.setdefault("aggr_kwargs", {})
            kwargs["aggr_kwargs"].setdefault("in_channels", ins[0])
            kwargs["aggr_kwargs"].setdefault("out_channels", ins[0])
        super().__init__(aggr, **kwargs)
        self.act = resolve(act)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.normalize, self.root_weight, self.project = normalize, root_weight, project
        self.aggr_module = None if self._native() else differentiable.pyg_aggregation(aggr, self.aggr_kwargs, NATIVE)
        if project:
            if ins[0] <= 0:
                raise ValueError(f"'{self.__class__.__name__}' does not support lazy initialization with "
                                 f"`project=True`")
            self.lin = nn.Linear(ins[0], ins[0], bias=True)
        width = self.aggr_module.get_out_channels(ins[0]) if hasattr(self.aggr_module, "get_out_channels") else ins[0]
        self.lin_l = make_linear(width, out_channels, bias=bias)
        if root_weight:
            self.lin_r = make_linear(ins[1], out_channels, bias=False)
        self.reset_parameters()

    def _native(self) -> bool:
        return isinstance(self.aggr, str) and self.aggr in NATIVE and not self.aggr_kwargs

    def reset_parameters(self) -> None:
        for m in (getattr(self, "lin", None), self.lin_l, getattr(self, "lin_r", None), self.aggr_module):
            if m is not None and hasattr(m, "reset_parameters") and not isinstance(m, nn.LazyLinear):
                m.reset_parameters()

    def forward(self, x, edge_index, size=None) -> torch.Tensor:
        x_src, x_dst = (x, x) if not isinstance(x, (tuple, list)) else x
        for t, name in ((x_src, "x"), (x_dst, "x_dst")):
            if t is not None:
                check_x(t, name, static=True)
                if isinstance(t, torch.Tensor):
                    self.check_node_dim(t, (2, 3))
        if self.project:
            x_src = torch.relu(ops.linear(x_src, self.lin.weight, self.lin.bias))
        n_dst = size[1] if size is not None else (x_dst.shape[-2] if x_dst is not None else None)
        g = self.graph(edge_index, x_src.shape[-2], n_dst)
        adj = g.adj if g.from_sparse else norm.pattern(g)
        values = edge_values.live(g, edge_index, None)  # a sparse adj_t's values that carry a gradient
        if values is not None:
            adj = operands.revalued(adj, values.to(self.lin_l.weight.dtype))
        root = x_dst if self.root_weight else None
        self._materialize(x_src, root)
        grad = values is not None or records(x_src, x_dst, *self.parameters())
        if self._native() and x_src.ndim == 2 and not grad:
            out = self._planned(g, adj, x_src, root)
            if not self.normalize:
                return out
        elif g.distributed and grad:
            raise NotSupported("SAGEConv: training on a partitioned graph is not supported yet")
        else:
            out = differentiable.sage(self, g, adj, x_src, root)
        out = F.normalize(out, p=2.0, dim=-1) if self.normalize else out
        if self.act is None:
            return out
        return self.act.inplace(out) if not out.requires_grad else self.act(out)

    def _materialize(self, x_src, x_dst) -> None:
        if isinstance(self.lin_l, nn.LazyLinear) and self.lin_l.has_uninitialized_params():
            f = x_src.shape[-1]
            width = self.aggr_module.get_out_channels(f) if hasattr(self.aggr_module, "get_out_channels") else f
            materialize(self.lin_l, torch.empty(0, width))
        if x_dst is not None and getattr(self, "lin_r", None) is not None:
            materialize(self.lin_r, x_dst)

    def _planned(self, g, adj, x_src, x_dst) -> torch.Tensor:
        """Inference: the statement planned and run by the engine (act too, unless normalize)."""
        aggr = "sum" if self.aggr == "add" else self.aggr
        w, bias = self.lin_l.weight, self.lin_l.bias
        ops = {"A": adj, "X": x_src, "Wl": w}
        if x_dst is not None:
            ops["Xd"], ops["Wr"] = x_dst, self.lin_r.weight
        if bias is not None:
            ops["b"] = bias.detach()
        if aggr == "mean":
            ops["r"] = g.derived(("inv_deg", w.dtype), lambda: norm.inv(g.in_degree(weighted=False), w.dtype))
        stmt = statement(aggr, adj.values is not None, x_dst is not None, bias is not None,
                         None if self.normalize else self.act)
        return layerplan.run(stmt, ops, g)

    def __repr__(self) -> str:
        act = "" if self.act is None else f", act={self.act}"
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, aggr={self.aggr}{act})"


i, j, k, f = indices("i j k f")
A, X, Wl, Xd, Wr, b, r = tensors("A X Wl Xd Wr b r")


@functools.lru_cache(maxsize=None)
def statement(aggr: str, weighted: bool, root: bool, bias: bool, act) -> Statement:
    """``act(r_i Σ_j A_ij (X W_l)_jk + (X_d W_r)_ik + b_k)`` (mean: ``r = 1/deg``); max/min aggregate
    raw features: ``act(Σ_f (max_j A_ij X_jf) W_l,kf + b_k + (X_d W_r)_ik)``."""
    xr = [sum_(f, Xd[i, f] * Wr[k, f])] if root else []
    if aggr in ("max", "min"):  # the written order (ÂX)W: max and min do not commute with W
        a = A[i, j] if weighted else pattern(A[i, j])  # a sum reads a pattern-only A as ones anyway
        terms = [sum_(f, (max_ if aggr == "max" else min_)(j, a * X[j, f]) * Wl[k, f])] + ([b[k]] if bias else []) + xr
    else:
        agg = sum_(j, A[i, j] * sum_(f, X[j, f] * Wl[k, f]))
        terms = [r[i] * agg if aggr == "mean" else agg] + xr + ([b[k]] if bias else [])
    out = sum(terms[1:], terms[0])
    return compute((i, k), out if act is None else act.expr(out))
