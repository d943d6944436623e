"""GATConv: Veličković et al., "Graph Attention Networks" (ICLR 2018)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import NotSupported, UserError
from . import kernels
from ._common import TensorCache, check_x, matmul_t
from .activation import resolve
from .graph import graph_of


class GATConv(nn.Module):
    r"""Graph attention: :math:`x_i' = \sum_{j} \alpha_{ij} \Theta x_j`, with
    :math:`\alpha_{ij} = \mathrm{softmax}_j(\mathrm{LeakyReLU}(a_s^\top \Theta x_j + a_t^\top \Theta x_i
    [+ a_e^\top \Theta_e e_{ij}]))`.

    Same constructor, defaults and ``state_dict`` keys (``lin.weight`` or ``lin_src``/``lin_dst``,
    ``att_src``, ``att_dst``, ``lin_edge``/``att_edge``, ``res``, ``bias``) as PyG's ``GATConv``.
    The logits, the row-wise softmax over each node's neighbours and the weighted aggregation run
    in one compiled loop nest per layer: no per-edge message (E×H×C) or attention (E×H) tensor.

    Args:
        in_channels (int or tuple): input features (``(source, target)`` for bipartite graphs).
        out_channels (int): channels per head.
        heads (int): attention heads. (default: :obj:`1`)
        concat (bool): concatenate heads (else average them). (default: :obj:`True`)
        negative_slope (float): LeakyReLU slope. (default: :obj:`0.2`)
        dropout (float): attention dropout; inference ignores it. (default: :obj:`0.0`)
        add_self_loops (bool): replace self loops by one per node. (default: :obj:`True`)
        edge_dim (int, optional): edge feature size. (default: :obj:`None`)
        fill_value (float or Tensor or str): edge features of added loops (``"mean"``, ``"add"``,
            ``"max"``, ``"min"``, ``"mul"`` of the incoming ones, or a constant). (default: :obj:`"mean"`)
        bias (bool): learn an additive bias. (default: :obj:`True`)
        residual (bool): add a linear projection of the target features. (default: :obj:`False`)
        act (str or nn.Module, optional): sgnn extension: an activation applied in the same pass;
            see :class:`sgnn.layers.GCNConv`. (default: :obj:`None`)

    Shapes: x [N, in] or ([N_src, in], [N_dst, in]), edge_index [2, E], edge_attr [E, edge_dim]
    → [N_dst, heads · out] (or [N_dst, out] without concat).
    """

    def __init__(self, in_channels, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True,
                 edge_dim: int | None = None, fill_value="mean", bias: bool = True, residual: bool = False,
                 act=None, **kwargs):
        super().__init__()
        self.act = resolve(act)
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.dropout = concat, float(negative_slope), dropout
        self.add_self_loops, self.edge_dim, self.fill_value = add_self_loops, edge_dim, fill_value
        self.residual = residual
        hc = heads * out_channels
        self.lin = self.lin_src = self.lin_dst = None
        if isinstance(in_channels, int):
            self.lin = nn.Linear(in_channels, hc, bias=False)
        else:
            self.lin_src = nn.Linear(in_channels[0], hc, bias=False)
            self.lin_dst = nn.Linear(in_channels[1], hc, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        if edge_dim is not None:
            self.lin_edge = nn.Linear(edge_dim, hc, bias=False)
            self.att_edge = nn.Parameter(torch.empty(1, heads, out_channels))
        else:
            self.lin_edge = None
            self.register_parameter("att_edge", None)
        total = hc if concat else out_channels
        if residual:
            self.res = nn.Linear(in_channels if isinstance(in_channels, int) else in_channels[1], total, bias=False)
        else:
            self.register_parameter("res", None)
        if bias:
            self.bias = nn.Parameter(torch.empty(total))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin, self.lin_src, self.lin_dst, self.lin_edge, self.res):
            if lin is not None:
                nn.init.xavier_uniform_(lin.weight)
        for att in (self.att_src, self.att_dst, self.att_edge):
            if att is not None:
                nn.init.xavier_uniform_(att)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _project(self, x, lin) -> torch.Tensor:
        return matmul_t(x, lin.weight).view(-1, self.heads, self.out_channels)

    def _logits(self, x, lin, att) -> torch.Tensor:
        """``(x Θ^T viewed [N, H, C] · att).sum(-1)`` as ``x M^T`` with ``M = Σ_c Θ[h, c] att[h, c]``
        ([H, in], cached per weight version): one thin GEMM instead of a pass over an N×H×C temporary."""
        w, a = lin.weight, att
        sig = (w._version, a._version, w.data_ptr(), a.data_ptr()) if not w.is_inference() else None
        hit = _folded.get(a)
        if sig is not None and hit is not None and hit[0] == sig and hit[1] is w:
            m = hit[2]
        else:
            H, C = self.heads, self.out_channels
            m = (w.detach().view(H, C, -1) * a.detach().view(H, C, 1)).sum(1)
            if sig is not None:
                _folded.set(a, (sig, w, m))
        return matmul_t(x, m)

    def forward(self, x, edge_index, edge_attr: torch.Tensor | None = None, size=None,
                return_attention_weights=None) -> torch.Tensor:
        if return_attention_weights:
            raise NotSupported("GATConv: return_attention_weights is not supported (sgnn never stores "
                               "the E×H attention tensor)")
        H, C = self.heads, self.out_channels
        x_src, x_dst = (x, None) if not isinstance(x, (tuple, list)) else x
        check_x(x_src)
        if not isinstance(x, (tuple, list)):
            x_dst = x
        elif x_dst is not None:
            check_x(x_dst, "x_dst")
        res = None if self.res is None or x_dst is None else matmul_t(x_dst, self.res.weight)
        lin_s = self.lin if self.lin is not None else self.lin_src
        lin_d = self.lin if self.lin is not None else self.lin_dst
        xs = self._project(x_src, lin_s)
        a_src = self._logits(x_src, lin_s, self.att_src)
        a_dst = None if x_dst is None else self._logits(x_dst, lin_d, self.att_dst)
        n_src = xs.shape[0]
        n_dst = size[1] if size is not None else (x_dst.shape[0] if x_dst is not None else n_src)
        g = graph_of(edge_index, n_src, n_dst)
        if self.add_self_loops:
            g = g.with_self_loops()
        tensors = {"A": g.adj.with_values(None) if g.adj.values is not None else g.adj,
                   "as_": a_src.contiguous(), "X": xs.contiguous()}
        if a_dst is not None:
            tensors["ad"] = a_dst.contiguous()
        has_edge = edge_attr is not None and self.lin_edge is not None
        if has_edge:
            tensors["ae"] = self._edge_logits(g, edge_attr, edge_index)
            del tensors["A"]
        fuse_bias = self.bias is not None and self.concat
        if fuse_bias:
            tensors["b"] = self.bias.detach().view(H, C)
        act = self.act if self.concat and res is None else None  # else it follows the last add
        stmt = kernels.gat(a_dst is not None, has_edge, fuse_bias, self.negative_slope, act)
        out = kernels.run(stmt, ("gat", a_dst is not None, has_edge, fuse_bias, self.negative_slope, act),
                          **tensors)
        out = out.view(-1, H * C) if self.concat else out.mean(dim=1)
        if res is not None:
            out = out + res
        if self.bias is not None and not fuse_bias:
            out = out + self.bias
        return out if self.act is None or act is not None else self.act.inplace(out)

    def _edge_logits(self, g, edge_attr: torch.Tensor, edge_index):
        """Per-edge logits ``a_e·Θ_e e_ij`` [nnz, H] in the graph's CSR order (a 3-d "dsd" tensor)."""
        from ..engine import SparseTensor
        from ..engine.formats import Format
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        H, C = self.heads, self.out_channels
        # (e Θ_eᵀ) · a_e summed over C equals e · M with M = (Θ_eᵀ viewed [D, H, C] * a_e).sum(-1): E×H only
        m = (self.lin_edge.weight.detach().t().view(-1, H, C) * self.att_edge.detach()).sum(-1)
        logits = edge_attr.to(m.dtype) @ m  # [E, H]
        perm = g.edge_perm
        if perm is None:
            raise UserError("GATConv: edge_attr needs an edge_index input (its order defines the edges)")
        out = torch.empty(perm.numel(), H, dtype=m.dtype)
        kept = perm >= 0
        out[kept] = logits[perm[kept]]
        if (~kept).any():
            out[~kept] = self._loop_logits(edge_attr, edge_index, m, (-1 - perm[~kept]))
        adj = g.adj
        return SparseTensor(adj.shape + (H,), Format("dsd") if "u" not in adj.format.codes else Format("dud"),
                            list(adj.pos) + [None], list(adj.crd) + [None], out.reshape(-1), check=False)

    def _loop_logits(self, edge_attr, edge_index, m, nodes):
        """Logits of added self loops from their fill value (PyG's ``add_self_loops`` rules)."""
        fv = self.fill_value
        if isinstance(fv, str):
            src, dst = edge_index[0], edge_index[1]
            keep = src != dst
            attr, tgt = edge_attr[keep].to(m.dtype), dst[keep]
            n = int(nodes.max()) + 1 if nodes.numel() else 0
            reduce = {"mean": "mean", "add": "sum", "sum": "sum", "max": "amax", "min": "amin", "mul": "prod"}[fv]
            full = torch.zeros(max(n, int(tgt.max()) + 1 if tgt.numel() else 0), attr.shape[1], dtype=m.dtype)
            full = full.index_reduce_(0, tgt, attr, reduce if reduce != "sum" else "mean", include_self=False) \
                if reduce not in ("sum",) else full.index_add_(0, tgt, attr)
            fill = full[nodes]
        else:
            fill = torch.as_tensor(fv, dtype=m.dtype).expand(nodes.numel(), edge_attr.shape[1])
        return fill @ m

    def __repr__(self) -> str:
        act = "" if self.act is None else f", act={self.act}"
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}{act})"


_folded = TensorCache()  # att parameter -> (versions, weight, folded [H, in] matrix)
