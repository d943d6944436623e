"""SAGEConv: Hamilton et al., "Inductive Representation Learning on Large Graphs" (NeurIPS 2017)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NotSupported
from . import kernels
from ._common import _as_sparse_features, add_linear_, check_x, dense_features, linear, matmul_t
from .activation import resolve
from .graph import graph_of

AGGRS = ("mean", "sum", "add", "max")


class SAGEConv(nn.Module):
    r"""GraphSAGE: :math:`x_i' = W_1 x_i + W_2 \cdot \mathrm{aggr}_{j \in N(i)} x_j`.

    Same constructor, defaults and ``state_dict`` keys (``lin_l.*``, ``lin_r.weight``, ``lin.*``
    with ``project``) as PyG's ``SAGEConv``. Mean and sum are linear, so the kernel aggregates
    ``X W_2`` when that is narrower than ``X``, with the root term and bias in the same pass;
    max aggregates raw features (it does not commute with ``W_2``).

    Args:
        in_channels (int or tuple): input features (``(source, target)`` for bipartite graphs).
        out_channels (int): output features.
        aggr (str): ``"mean"``, ``"sum"`` or ``"max"``. (default: :obj:`"mean"`)
        normalize (bool): L2-normalise outputs. (default: :obj:`False`)
        root_weight (bool): add :math:`W_1 x_i`. (default: :obj:`True`)
        project (bool): project source features first (``relu(lin(x))``). (default: :obj:`False`)
        bias (bool): bias of ``lin_l``. (default: :obj:`True`)
        act (str or nn.Module, optional): sgnn extension: an activation applied in the same pass
            (after ``normalize``); see :class:`sgnn.layers.GCNConv`. (default: :obj:`None`)

    Shapes: x [N, in] or ([N_src, in_src], [N_dst, in_dst]), edge_index [2, E] → [N_dst, out].
    """

    def __init__(self, in_channels, out_channels: int, aggr: str = "mean", normalize: bool = False,
                 root_weight: bool = True, project: bool = False, bias: bool = True, act=None, **kwargs):
        super().__init__()
        self.act = resolve(act)
        if not isinstance(aggr, str) or aggr not in AGGRS:
            raise NotSupported(f"SAGEConv: aggr={aggr!r} is not supported (use one of {AGGRS})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.aggr = "sum" if aggr == "add" else aggr
        self._aggr_name = aggr
        self.normalize, self.root_weight, self.project = normalize, root_weight, project
        ins = (in_channels, in_channels) if isinstance(in_channels, int) else tuple(in_channels)
        if project:
            self.lin = nn.Linear(ins[0], ins[0], bias=True)
        self.lin_l = nn.Linear(ins[0], out_channels, bias=bias)
        if root_weight:
            self.lin_r = nn.Linear(ins[1], out_channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (getattr(self, "lin", None), self.lin_l, getattr(self, "lin_r", None)):
            if lin is not None:
                lin.reset_parameters()

    def forward(self, x, edge_index, size=None) -> torch.Tensor:
        x_src, x_dst = (x, x) if not isinstance(x, (tuple, list)) else x
        check_x(x_src)
        if x_dst is not None:
            check_x(x_dst, "x_dst")
        n_src = x_src.shape[0]
        n_dst = size[1] if size is not None else (x_dst.shape[0] if x_dst is not None else n_src)
        if self.project:
            x_src = torch.relu(self.lin(dense_features(x_src, self.lin.weight.dtype)))
        g = graph_of(edge_index, n_src, n_dst)
        w_l = self.lin_l.weight
        dtype = w_l.dtype
        adj = g.adj.with_values(None) if g.adj.values is not None else g.adj
        root = self.root_weight and x_dst is not None
        in_kernel_act = None if self.normalize else self.act  # normalize comes before the activation
        if self.aggr == "max":
            agg = kernels.run(kernels.sage("max", False, False, False), ("sage-max",),
                              A=adj, Z=dense_features(x_src, dtype))
            out = self._linear_root(agg, x_dst if root else None)
        else:
            transform_first = self.out_channels <= (self.in_channels if isinstance(self.in_channels, int)
                                                    else self.in_channels[0])
            scale = self.aggr == "mean"
            tensors = {"A": adj}
            if scale:
                tensors["r"] = g.derived(("inv_deg", dtype), lambda: _inv(g.in_degree(weighted=False), dtype))
            if transform_first:  # aggregate X·W_l; root term, bias and activation in the same pass
                tensors["Z"] = matmul_t(x_src, w_l)
                if root:
                    tensors["R"] = matmul_t(x_dst, self.lin_r.weight)
                has_bias = self.lin_l.bias is not None
                if has_bias:
                    tensors["b"] = self.lin_l.bias.detach()
                out = kernels.run(kernels.sage(self.aggr, scale, root, has_bias, in_kernel_act),
                                  ("sage", self.aggr, root, has_bias, in_kernel_act), **tensors)
                if in_kernel_act is not None:
                    return out
            else:
                tensors["Z"] = dense_features(x_src, dtype)
                agg = kernels.run(kernels.sage(self.aggr, scale, False, False), ("sage", self.aggr, False, False, None),
                                  **tensors)
                out = self._linear_root(agg, x_dst if root else None)
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=-1)
        return out if self.act is None else self.act.inplace(out)

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
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, aggr={self._aggr_name}{act})"


def _inv(deg: torch.Tensor, dtype) -> torch.Tensor:
    r = 1.0 / deg
    r.masked_fill_(torch.isinf(r), 0.0)
    return r.to(dtype)
