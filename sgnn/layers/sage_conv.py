"""SAGEConv: Hamilton et al., "Inductive Representation Learning on Large Graphs" (NeurIPS 2017)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NotSupported
from . import blocked, kernels, ops
from ._common import _as_sparse_features, add_linear_, check_x, dense_features, linear, matmul_t
from .activation import resolve
from ..engine.explain import note
from .conv import Conv, make_linear, materialize, records

NATIVE = ("mean", "sum", "add", "max", "min")  # aggregators with a compiled kernel


class SAGEConv(Conv):
    r"""GraphSAGE: :math:`x_i' = W_1 x_i + W_2 \cdot \mathrm{aggr}_{j \in N(i)} x_j`.

    Same constructor, defaults and ``state_dict`` keys (``lin_l.*``, ``lin_r.weight``, ``lin.*``
    with ``project``, ``aggr_module.*``) as PyG's ``SAGEConv``. Mean and sum are linear, so the
    kernel aggregates ``X W_2`` when that is narrower than ``X``, with the root term and bias in
    the same pass; max and min aggregate raw features (they do not commute with ``W_2``). Other
    PyG aggregators (``"mul"``, ``"std"``, ``"var"``, ``"softmax"``, ``"powermean"``, ``"lstm"``,
    lists such as ``["mean", "max", "std"]``, or an ``Aggregation`` module) run as PyG's own
    aggregation module on torch ops (PyG needed; imported only then). A sparse ``adj_t`` with
    values weighs its messages, as PyG's sparse path does; an ``edge_index`` never does.

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

    Shapes: x [N, in], [B, N, in] (a static graph) or ([N_src, in_src], [N_dst, in_dst]),
    edge_index [2, E] → [N_dst, out].
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
        self.aggr_module = None if self._native() else _pyg_aggregation(aggr, self.aggr_kwargs)
        if project:
            if ins[0] <= 0:
                raise ValueError(f"'{self.__class__.__name__}' does not support lazy initialization with "
                                 f"`project=True`")
            self.lin = nn.Linear(ins[0], ins[0], bias=True)
        width = ins[0]
        if hasattr(self.aggr_module, "get_out_channels"):
            width = self.aggr_module.get_out_channels(ins[0])
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
        n_src = x_src.shape[-2]
        n_dst = size[1] if size is not None else (x_dst.shape[-2] if x_dst is not None else None)
        g = self.graph(edge_index, n_src, n_dst)
        adj = g.adj if g.from_sparse or g.adj.values is None else g.adj.with_values(None)
        root = self.root_weight and x_dst is not None
        self._materialize(x_src, x_dst if root else None)
        params = [p for p in self.parameters()]
        if not self._native() or x_src.dim() == 3 or records(x_src, x_dst, *params):
            if g.distributed and records(x_src, x_dst, *params):
                raise NotSupported("SAGEConv: training on a partitioned graph is not supported yet")
            out = self._autograd(g, adj, x_src, x_dst if root else None)
        else:
            out = self._kernels(g, adj, x_src, x_dst if root else None)
            if out[1]:
                return out[0]
            out = out[0]
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=-1)
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

    def _kernels(self, g, adj, x_src, x_dst) -> tuple[torch.Tensor, bool]:
        """Inference through the compiled kernels; (output, activation already applied)."""
        w_l = self.lin_l.weight
        dtype = w_l.dtype
        aggr = "sum" if self.aggr == "add" else self.aggr
        in_kernel_act = None if self.normalize else self.act  # normalize comes before the activation
        if aggr in ("max", "min"):
            agg = kernels.run(kernels.extreme(aggr, adj.values is not None, False),
                              ("sage-ext", aggr, adj.values is not None), A=adj,
                              Z=g.sources(dense_features(x_src, dtype)))
            return self._linear_root(agg, x_dst), False
        scale = aggr == "mean"
        tensors = {"A": adj}
        if scale:
            tensors["r"] = g.derived(("inv_deg", dtype), lambda: _inv(g.in_degree(weighted=False), dtype))
        first = self.out_channels < self.lin_l.in_features
        note(lambda: "association: " + ("aggregate X·W_l (root, bias, activation in the epilogue)" if first
                                        else "aggregate X, then the GEMMs")
             + f" (in={self.lin_l.in_features}, out={self.out_channels})")
        if first:  # aggregate X·W_l; root, bias, act in one pass
            tensors["Z"] = g.sources(matmul_t(x_src, w_l, g.source_rows((x_src.shape[0], w_l.shape[0]), dtype)))
            if x_dst is not None:
                tensors["R"] = matmul_t(x_dst, self.lin_r.weight)
            has_bias = self.lin_l.bias is not None
            if has_bias:
                tensors["b"] = self.lin_l.bias.detach()
            out = kernels.run(kernels.sage(aggr, scale, x_dst is not None, has_bias, in_kernel_act),
                              ("sage", aggr, x_dst is not None, has_bias, in_kernel_act), **tensors)
            return out, in_kernel_act is not None
        tensors["Z"] = g.sources(dense_features(x_src, dtype))
        root = self._root_rows(x_dst)
        out = blocked.aggregate_linear(kernels.sage(aggr, scale, False, False), ("sage", aggr, False, False, None),
                                       tensors, ("r",) if scale else (), w_l, self.lin_l.bias, root)
        if x_dst is not None and root is None:
            out = out + matmul_t(x_dst, self.lin_r.weight)
        return out, False

    def _root_rows(self, x_dst):
        """``rows += x_dst[r0:r1] W_r^T`` (one GEMM pass with beta = 1), or None when x_dst is sparse."""
        if x_dst is None or not isinstance(x_dst, torch.Tensor) or x_dst.layout != torch.strided \
                or x_dst.dtype != self.lin_r.weight.dtype or _as_sparse_features(x_dst) is not None:
            return None
        w = self.lin_r.weight.detach()
        return lambda rows, r0, r1: rows.addmm_(x_dst[r0:r1], w.t())

    def _autograd(self, g, adj, x_src, x_dst) -> torch.Tensor:
        """Differentiable formulation: sum/mean through ``ops.spmm`` (sgnn kernels both ways); max,
        min and PyG aggregation modules as edge messages on torch ops (PyG's gradients)."""
        x = x_src.to_dense() if not isinstance(x_src, torch.Tensor) or x_src.layout != torch.strided else x_src
        x = g.sources(x.to(self.lin_l.weight.dtype))
        aggr = "sum" if self.aggr == "add" else self.aggr
        if self._native() and aggr in ("sum", "mean"):
            xf, b = (x.transpose(0, 1).reshape(x.shape[1], -1), x.shape[0]) if x.dim() == 3 else (x, 0)
            agg = ops.spmm(adj, xf)
            if aggr == "mean":
                agg = agg * _inv(g.in_degree(weighted=False), agg.dtype).view(-1, 1)
            agg = agg.reshape(agg.shape[0], b, -1).transpose(0, 1) if b else agg
        else:
            rows, cols = g.rows(), g.cols()
            if not self._native() and g.edge_perm is not None:  # PyG's module sees the edges as given
                order = torch.argsort(g.edge_perm)
                rows, cols = rows[order], cols[order]
            msg = x.index_select(-2, cols)
            if adj.values is not None:
                msg = msg * adj.values.to(msg.dtype).view(-1, 1)
            if self._native():
                agg = _scatter_nodes(msg, rows, g.num_dst, aggr)
            else:
                agg = self.aggr_module(msg, rows, dim_size=g.num_dst, dim=-2)
        out = ops.linear(agg, self.lin_l.weight, self.lin_l.bias)
        if x_dst is not None:
            out = out + ops.linear(x_dst, self.lin_r.weight)
        return out

    def _linear_root(self, agg: torch.Tensor, x_dst) -> torch.Tensor:
        """``agg W_l^T + b (+ x_dst W_r^T)``: GEMMs into one fresh buffer (the root one with beta = 1)."""
        out = linear(agg, self.lin_l.weight, self.lin_l.bias)
        if x_dst is None:
            return out
        if isinstance(x_dst, torch.Tensor) and x_dst.layout == torch.strided and x_dst.dtype == out.dtype \
                and _as_sparse_features(x_dst) is None:
            return add_linear_(out, x_dst, self.lin_r.weight)
        return out + matmul_t(x_dst, self.lin_r.weight)

    def __repr__(self) -> str:
        act = "" if self.act is None else f", act={self.act}"
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, aggr={self.aggr}{act})"


def _scatter_nodes(msg: torch.Tensor, rows: torch.Tensor, n: int, reduce: str) -> torch.Tensor:
    """``ops.scatter`` along the node dimension (-2) of [E, F] or [B, E, F] messages."""
    if msg.dim() == 2:
        return ops.scatter(msg, rows, n, reduce)
    return ops.scatter(msg.transpose(0, 1), rows, n, reduce).transpose(0, 1)


def _pyg_aggregation(aggr, kwargs: dict) -> nn.Module:
    """PyG's aggregation module for ``aggr`` (lists, modules and names sgnn has no kernel for)."""
    try:
        from torch_geometric.nn.aggr import Aggregation
        from torch_geometric.nn.resolver import aggregation_resolver
    except ImportError as e:
        raise NotSupported(f"SAGEConv: aggr={aggr!r} runs as PyG's aggregation module; install "
                           f"torch-geometric, or use one of {NATIVE}") from e
    if isinstance(aggr, Aggregation):
        return aggr
    if isinstance(aggr, (list, tuple)):
        from torch_geometric.nn.aggr import MultiAggregation
        return MultiAggregation(list(aggr), **kwargs)
    return aggregation_resolver(aggr, **kwargs)


def _inv(deg: torch.Tensor, dtype) -> torch.Tensor:
    r = 1.0 / deg
    r.masked_fill_(torch.isinf(r), 0.0)
    return r.to(dtype)
