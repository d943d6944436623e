"""GCNConv: Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks" (ICLR 2017)."""
from __future__ import annotations

import torch
from torch import nn

from ._common import check_x, dense_features, linear, matmul_t
from .activation import resolve
from .graph import Graph, graph_of
from . import kernels


class GCNConv(nn.Module):
    r"""Graph convolution :math:`X' = \hat D^{-1/2} \hat A \hat D^{-1/2} X W + b`, with
    :math:`\hat A = A + I` (self loops added where missing, weight 2 if ``improved``).

    Same constructor, defaults and ``state_dict`` keys (``lin.weight``, ``bias``) as PyG's
    ``GCNConv``. The normalisation is folded into the kernel as degree vectors; the product is
    ordered ``Â(XW)`` or ``(ÂX)W``, whichever moves fewer values through the sparse product.

    Args:
        in_channels (int): input features per node.
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

    Shapes: x [N, in] (dense, torch sparse or ``sgnn.SparseTensor``), edge_index [2, E] or a
    sparse adjacency ``adj_t`` [N, N], edge_weight [E] (optional) → [N, out].

    >>> conv = GCNConv(16, 32)
    >>> conv(torch.randn(4, 16), torch.tensor([[0, 1, 2], [1, 2, 3]])).shape
    torch.Size([4, 32])
    """

    def __init__(self, in_channels: int, out_channels: int, improved: bool = False, cached: bool = False,
                 add_self_loops: bool | None = None, normalize: bool = True, bias: bool = True,
                 act=None, **kwargs):
        super().__init__()
        self.act = resolve(act)
        if add_self_loops is None:
            add_self_loops = normalize
        if add_self_loops and not normalize:
            raise ValueError(f"'{self.__class__.__name__}' does not support adding self-loops to the graph "
                             f"when no on-the-fly normalization is applied")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.improved, self.cached = improved, cached
        self.add_self_loops, self.normalize = add_self_loops, normalize
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self._cached_graph: Graph | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._cached_graph = None

    def _norm(self, g: Graph, dtype: torch.dtype):
        """(graph, d, e): the graph the sum runs over, d = deg^-1/2 with the self loops counted and
        e = loop weight · d² (PyG's rule: existing loops are replaced by one per node, weighted
        1, or with edge weights by the old loop's weight, else 2 if ``improved``)."""
        def make():
            if not self.add_self_loops:
                deg = g.in_degree()
                base, loop = g, torch.zeros_like(deg)
            else:
                base, has, old = g.split_self_loops()
                deg = base.in_degree()
                if g.adj.values is None:
                    loop = torch.ones_like(deg)
                else:
                    loop = torch.where(has, old, torch.full_like(deg, 2.0 if self.improved else 1.0))
                deg = deg + loop
            dinv = deg.pow(-0.5)
            dinv.masked_fill_(torch.isinf(dinv), 0.0)
            return base, dinv.to(dtype), (loop * dinv * dinv).to(dtype)
        return g.derived(("gcn", self.improved, self.add_self_loops, dtype), make)

    def forward(self, x, edge_index, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        check_x(x)
        n = x.shape[0]
        if self.cached and self._cached_graph is not None:
            g = self._cached_graph
        else:
            g = graph_of(edge_index, n, n, edge_weight)
            if self.cached:
                self._cached_graph = g
        w = self.lin.weight
        dtype = w.dtype
        if self.normalize:
            g, d, e = self._norm(g, dtype)
        adj = g.adj if g.adj.values is None or g.adj.values.dtype == dtype else \
            g.derived(("values", dtype), lambda: g.adj.with_values(g.adj.values.to(dtype)))
        reassociate = self.in_channels < self.out_channels  # (ÂX)W: the sparse product moves `in` values
        z = dense_features(x, dtype) if reassociate else matmul_t(x, w)
        tensors = {"A": adj, "Z": z}
        if self.normalize:
            tensors["d"] = d
            if self.add_self_loops:
                tensors["e"] = e
        if reassociate:  # (ÂX)W: the kernel aggregates raw features; bias and act follow the GEMM
            agg = kernels.run(kernels.gcn(self.normalize, self.add_self_loops, False),
                              ("gcn", self.normalize, self.add_self_loops, False, None), **tensors)
            out = linear(agg, w, None if self.bias is None else self.bias)
            return out if self.act is None else self.act.inplace(out)
        if self.bias is not None:
            tensors["b"] = self.bias.detach()
        has_bias = self.bias is not None
        stmt = kernels.gcn(self.normalize, self.add_self_loops, has_bias, self.act)
        return kernels.run(stmt, ("gcn", self.normalize, self.add_self_loops, has_bias, self.act), **tensors)

    def __repr__(self) -> str:
        act = "" if self.act is None else f", act={self.act}"
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}{act})"
