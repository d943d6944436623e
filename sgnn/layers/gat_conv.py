"""GATConv: Veličković et al., "Graph Attention Networks" (ICLR 2018)."""
from __future__ import annotations

import torch
from torch import nn

import torch.nn.functional as F

from ..engine import SparseTensor
from ..engine.formats import Format
from ..errors import NotSupported, UserError
from . import kernels, ops
from ._common import TensorCache, check_x, matmul_t
from .activation import resolve
from ..engine.explain import note
from .conv import Conv, is_lazy, make_linear, materialize, records
from .graph import Graph, plain_edge_index

AGGRS = ("add", "sum", "mean", "max", "min", "mul")


class GATConv(Conv):
    r"""Graph attention: :math:`x_i' = \sum_{j} \alpha_{ij} \Theta x_j`, with
    :math:`\alpha_{ij} = \mathrm{softmax}_j(\mathrm{LeakyReLU}(a_s^\top \Theta x_j + a_t^\top \Theta x_i
    [+ a_e^\top \Theta_e e_{ij}]))`.

    Same constructor, defaults and ``state_dict`` keys (``lin.weight`` or ``lin_src``/``lin_dst``,
    ``att_src``, ``att_dst``, ``lin_edge``/``att_edge``, ``res``, ``bias``) as PyG's ``GATConv``.
    The logits, the row-wise softmax over each node's neighbours and the weighted aggregation run
    in one compiled loop nest per layer: no per-edge message (E×H×C) or attention (E×H) tensor.
    Under autograd, in ``train()`` mode with attention dropout, with ``return_attention_weights``
    or with ``aggr`` max/min/mul, the layer runs PyG's edge-wise formulation on torch ops instead
    (correct gradients and dropout; it stores E×H×C messages).

    Args:
        in_channels (int or tuple): input features (``(source, target)`` for bipartite graphs).
        out_channels (int): channels per head.
        heads (int): attention heads. (default: :obj:`1`)
        concat (bool): concatenate heads (else average them). (default: :obj:`True`)
        negative_slope (float): LeakyReLU slope. (default: :obj:`0.2`)
        dropout (float): attention dropout, applied in ``train()`` mode. (default: :obj:`0.0`)
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

    _extra_name = "edge_attr"

    def __init__(self, in_channels, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True,
                 edge_dim: int | None = None, fill_value="mean", bias: bool = True, residual: bool = False,
                 act=None, **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        if self.aggr not in AGGRS:
            raise NotSupported(f"GATConv: aggr={self.aggr!r} is not supported (use one of {AGGRS})")
        self.act = resolve(act)
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.dropout = concat, float(negative_slope), dropout
        self.add_self_loops, self.edge_dim, self.fill_value = add_self_loops, edge_dim, fill_value
        self.residual = residual
        hc = heads * out_channels
        self.lin = self.lin_src = self.lin_dst = None
        if isinstance(in_channels, int):
            self.lin = make_linear(in_channels, hc, bias=False)
        else:
            self.lin_src = make_linear(in_channels[0], hc, bias=False)
            self.lin_dst = make_linear(in_channels[1], hc, bias=False)
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
            self.res = make_linear(in_channels if isinstance(in_channels, int) else in_channels[1], total, bias=False)
        else:
            self.register_parameter("res", None)
        if bias:
            self.bias = nn.Parameter(torch.empty(total))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin, self.lin_src, self.lin_dst, self.lin_edge, self.res):
            if lin is not None and not is_lazy(lin):
                nn.init.xavier_uniform_(lin.weight)
        for att in (self.att_src, self.att_dst, self.att_edge):
            if att is not None:
                nn.init.xavier_uniform_(att)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _out_shape(self, x: torch.Tensor, n_dst: int) -> tuple[int, ...]:
        return (n_dst, self.heads * self.out_channels if self.concat else self.out_channels)

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
                return_attention_weights=None):
        x_src, x_dst = (x, x) if not isinstance(x, (tuple, list)) else x
        check_x(x_src)
        if x_dst is not None:
            check_x(x_dst, "x_dst")
        lin_s = self.lin if self.lin is not None else self.lin_src
        lin_d = self.lin if self.lin is not None else self.lin_dst
        materialize(lin_s, x_src, nn.init.xavier_uniform_)
        if x_dst is not None:
            materialize(lin_d, x_dst, nn.init.xavier_uniform_)
            if self.res is not None:
                materialize(self.res, x_dst, nn.init.xavier_uniform_)
        n_src = x_src.shape[0]
        n_dst = size[1] if size is not None else (x_dst.shape[0] if x_dst is not None else None)
        g = self.graph(edge_index, n_src, n_dst, self_loops=self.add_self_loops)
        has_edge = edge_attr is not None and self.lin_edge is not None
        dropout = self.training and self.dropout > 0
        if return_attention_weights or dropout or self.aggr in ("max", "min", "mul") or \
                records(x_src, x_dst, edge_attr, *self.parameters()):
            note(lambda: "edge-wise torch formulation (autograd, attention dropout, attention weights or "
                 f"aggr={self.aggr!r}): E×H×C messages")
            out, alpha = self._edgewise(g, x_src, x_dst, lin_s, lin_d, edge_attr if has_edge else None,
                                        edge_index)
            if return_attention_weights:
                return out, self._attention(g, alpha, edge_index)
            return out
        note(lambda: "fused: logits, row softmax (two passes per row) and aggregation in one kernel; logits as "
             "x·(Θ·att) folded per weight version")
        return self._fused(g, x_src, x_dst, lin_s, lin_d, edge_attr if has_edge else None, edge_index)

    def _fused(self, g: Graph, x_src, x_dst, lin_s, lin_d, edge_attr, edge_index) -> torch.Tensor:
        """Inference: logits, row softmax and aggregation in one compiled loop nest."""
        H, C = self.heads, self.out_channels
        res = None if self.res is None or x_dst is None else matmul_t(x_dst, self.res.weight)
        rows = g.source_rows((x_src.shape[0], H * C), lin_s.weight.dtype)
        xs = g.sources(matmul_t(x_src, lin_s.weight, rows).view(-1, H, C))
        tensors = {"A": g.adj.with_values(None) if g.adj.values is not None else g.adj,
                   "as_": g.sources(self._logits(x_src, lin_s, self.att_src).contiguous()), "X": xs}
        if x_dst is not None:
            tensors["ad"] = self._logits(x_dst, lin_d, self.att_dst).contiguous()
        if edge_attr is not None:
            tensors["ae"] = self._edge_tensor(g, self._edge_logits(g, edge_attr, edge_index, detach=True))
            del tensors["A"]
        mean = self.aggr == "mean"
        fuse_bias = self.bias is not None and self.concat and not mean
        if fuse_bias:
            tensors["b"] = self.bias.detach().view(H, C)
        act = self.act if self.concat and res is None and not mean else None  # else after the last add
        key = ("gat", x_dst is not None, edge_attr is not None, fuse_bias, self.negative_slope, act)
        out = kernels.run(kernels.gat(*key[1:]), key, **tensors)
        if mean:
            out = out * g.derived(("inv_count", out.dtype), lambda: _inv_count(g, out.dtype)).view(-1, 1, 1)
        out = out.view(-1, H * C) if self.concat else out.mean(dim=1)
        if res is not None:
            out = out + res
        if self.bias is not None and not fuse_bias:
            out = out + self.bias
        return out if self.act is None or act is not None else self.act.inplace(out)

    def _edgewise(self, g: Graph, x_src, x_dst, lin_s, lin_d, edge_attr, edge_index):
        """PyG's formulation on torch ops (autograd, dropout, attention weights): (output, alpha [E, H])."""
        H, C = self.heads, self.out_channels
        if g.distributed and records(x_src, x_dst, edge_attr, *self.parameters()):
            raise NotSupported("GATConv: training on a partitioned graph is not supported yet")
        local = ops.linear(x_src, lin_s.weight).view(-1, H, C)
        xs = g.sources(local)
        rows, cols = g.rows(), g.cols()
        alpha = (xs * self.att_src).sum(-1).index_select(0, cols)
        if x_dst is not None:
            xd = local if x_dst is x_src and lin_d is lin_s else ops.linear(x_dst, lin_d.weight).view(-1, H, C)
            alpha = alpha + (xd * self.att_dst).sum(-1).index_select(0, rows)
        if edge_attr is not None:
            alpha = alpha + self._edge_logits(g, edge_attr, edge_index, detach=False)
        alpha = ops.edge_softmax(F.leaky_relu(alpha, self.negative_slope), rows, g.num_dst)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        out = ops.scatter(xs.index_select(0, cols) * alpha.unsqueeze(-1), rows, g.num_dst,
                          "sum" if self.aggr == "add" else self.aggr)
        out = out.reshape(-1, H * C) if self.concat else out.mean(dim=1)
        if self.res is not None and x_dst is not None:
            out = out + ops.linear(x_dst, self.res.weight)
        if self.bias is not None:
            out = out + self.bias
        return (out if self.act is None else self.act(out)), alpha

    def _attention(self, g: Graph, alpha: torch.Tensor, edge_index):
        """PyG's return format: ``(edge_index, alpha)`` in its edge order (kept edges, then added
        loops), or for a sparse input ``(adj_t, alpha)`` with ``adj_t`` a torch sparse CSR [N, N, H]."""
        if g.from_sparse:
            crow, col = g.adj.pos[1].long(), g.adj.crd[1].long()
            adj = torch.sparse_csr_tensor(crow, col, alpha, (g.num_dst, g.num_src, alpha.shape[1]))
            return adj, alpha
        perm = g.edge_perm
        order = torch.argsort(torch.where(perm >= 0, perm, perm.numel() + (-1 - perm)))
        rows, cols = g.rows()[order], g.cols()[order]
        ei = torch.stack([cols, rows] if self.flow == "source_to_target" else [rows, cols])
        return ei, alpha[order]

    def _edge_logits(self, g: Graph, edge_attr: torch.Tensor, edge_index, detach: bool) -> torch.Tensor:
        """Per-edge logits ``a_e·Θ_e e_ij`` [nnz, H] in the graph's CSR order, added loops included."""
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        H, C = self.heads, self.out_channels
        w, a = self.lin_edge.weight, self.att_edge
        if detach:
            w, a = w.detach(), a.detach()
        # (e Θ_eᵀ) · a_e summed over C equals e · M with M = (Θ_eᵀ viewed [D, H, C] * a_e).sum(-1): E×H only
        m = (w.t().reshape(-1, H, C) * a).sum(-1)
        logits = edge_attr.to(m.dtype) @ m  # [E, H]
        perm = g.edge_perm
        if perm is None:
            raise UserError("GATConv: edge_attr needs an edge_index input (its order defines the edges)")
        kept = perm >= 0
        parts = [logits.index_select(0, perm[kept])]
        if not bool(kept.all()):
            ei = plain_edge_index(edge_index)
            parts.append(self._loop_logits(edge_attr, ei, m, (-1 - perm[~kept])))
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        # back to CSR order: kept edges came first in `parts`
        order = torch.cat([torch.nonzero(kept).view(-1), torch.nonzero(~kept).view(-1)])
        return out.index_select(0, torch.argsort(order))

    @staticmethod
    def _edge_tensor(g: Graph, logits: torch.Tensor) -> SparseTensor:
        """Edge logits as a 3-d sparse tensor [N_dst, N_src, H] ("dsd") over the graph's pattern."""
        adj = g.adj
        fmt = Format("dsd") if "u" not in adj.format.codes else Format("dud")
        return SparseTensor(adj.shape + (logits.shape[1],), fmt, list(adj.pos) + [None], list(adj.crd) + [None],
                            logits.contiguous().reshape(-1), check=False)

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
            full = full.scatter_reduce(0, tgt.view(-1, 1).expand_as(attr), attr, reduce, include_self=False)
            fill = full[nodes]
        else:
            fill = torch.as_tensor(fv, dtype=m.dtype).expand(nodes.numel(), edge_attr.shape[1])
        return fill @ m

    def __repr__(self) -> str:
        act = "" if self.act is None else f", act={self.act}"
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}{act})"


def _inv_count(g: Graph, dtype) -> torch.Tensor:
    """1 / (messages per target), 0 for a target without any."""
    pos = g.adj.pos[1].long()
    cnt = (pos[1:] - pos[:-1]).to(torch.float64)
    return (1.0 / cnt).masked_fill_(cnt == 0, 0.0).to(dtype)


_folded = TensorCache()  # att parameter -> (versions, weight, folded [H, in] matrix)
