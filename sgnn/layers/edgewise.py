"""GAT's edge-wise pieces: PyG's formulation on torch ops, edge logits, attention weights.

``forward`` runs under autograd and with attention dropout in ``train()``: the fused attention
(derived backward; dropout's mask hashed in the kernels) on large graphs, else, and always for
``return_attention_weights`` or ``aggr`` max/min/mul, PyG's formulation on torch ops, which
stores E×H×C messages, as PyG does, and whose gradients are torch's. The edge-logit helpers serve
both paths: the fused kernel reads the logits of ``edge_attr`` as a 3-d sparse tensor over the
graph's pattern.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine import SparseTensor, operands
from ..engine.formats import Format
from ..errors import NotSupported, UserError
from ..engine.explain import note
from . import ops
from .attention import attention as fused_attention
from .conv import records
from .graph import Graph, plain_edge_index


def folded(w: torch.Tensor, att: torch.Tensor, heads: int, channels: int) -> torch.Tensor:
    """``M = Σ_c Θ[h, c] att[h, c]`` [H, in]: ``x Mᵀ`` are the logits ``(x Θᵀ · att).sum(-1)``
    in one thin GEMM (cached per weight and attention version, ``engine.operands``)."""
    def make():  # a normal tensor even under inference mode: its transpose is cached too
        with torch.inference_mode(False):
            return (w.detach().view(heads, channels, -1) * att.detach().view(heads, channels, 1)).sum(1)
    return operands.cached((att, w), "folded", make)


# Above this many bytes of E×H×C messages, training runs the fused attention (derived backward, no
# per-edge tensor): measured at 1 thread, forward+backward, fused vs edge-wise: Cora (3.4 MB of
# messages) 15.3 vs 8.5 ms, arXiv-size (340 MB) 1305 vs 3464 ms at 0.13x the peak memory. With attention
# dropout (p = 0.6, the mask hashed in the kernels) the same gate holds: fused / edge-wise time 1.15 on a
# Cora-sized graph, 0.81 at the threshold (130k edges, 33 MB) and at 500k edges (1 thread, medians of
# interleaved runs on a loaded 2-core AMD EPYC).
FUSED_MIN_BYTES = 32 << 20


def forward(conv, g: Graph, x_src, x_dst, lin_s, lin_d, edge_attr, edge_index, weights: bool = False):
    """Under autograd, dropout or for attention weights: (output, alpha [E, H] or None). PyG's
    formulation on torch ops, or the fused attention of ``attention.py`` (dropout included) when
    no alpha is needed (no returned weights, ``aggr="add"``) and the messages exceed
    ``FUSED_MIN_BYTES``. The choice depends on neither grad mode nor RNG, so ``custom_op``'s
    recomputation takes the same path and draws the same seed."""
    H, C = conv.heads, conv.out_channels
    if g.distributed and records(x_src, x_dst, edge_attr, *conv.parameters()):
        raise NotSupported("GATConv: training on a partitioned graph is not supported yet")
    local = ops.linear(x_src, lin_s.weight).view(-1, H, C)
    xs = g.sources(local)
    a_src, a_dst = (xs * conv.att_src).sum(-1), None
    if x_dst is not None:
        xd = local if x_dst is x_src and lin_d is lin_s else ops.linear(x_dst, lin_d.weight).view(-1, H, C)
        a_dst = (xd * conv.att_dst).sum(-1)
    logits = edge_logits(conv, g, edge_attr, edge_index, detach=False) if edge_attr is not None else None
    fused = not weights and conv.aggr == "add" and g.adj.nnz * H * C * xs.element_size() > FUSED_MIN_BYTES
    drop = float(conv.dropout) if conv.training else 0.0
    note(lambda: "GAT: fused attention, backward derived (no E×H×C messages)"
         + (", dropout mask hashed in-kernel (no E×H mask)" if drop > 0 else "") if fused else
         "GAT: edge-wise torch formulation (E×H×C messages)")
    if fused:  # the seed is drawn from torch's generator (attention.draw_seed): manual_seed replays it
        out = fused_attention(g.adj, a_src, a_dst, xs, conv.negative_slope, logits, dropout=drop)
        alpha = None
    else:
        out, alpha = _messages(conv, g, xs, a_src, a_dst, logits)
    out = out.reshape(-1, H * C) if conv.concat else out.mean(dim=1)
    if conv.res is not None and x_dst is not None:
        out = out + ops.linear(x_dst, conv.res.weight)
    if conv.bias is not None:
        out = out + conv.bias
    return (out if conv.act is None else conv.act(out)), alpha


def _messages(conv, g: Graph, xs, a_src, a_dst, logits):
    """PyG's order of operations: per-edge logits, softmax, dropout, E×H×C messages, scatter."""
    rows, cols = g.rows(), g.cols()
    alpha = a_src.index_select(0, cols)
    if a_dst is not None:
        alpha = alpha + a_dst.index_select(0, rows)
    if logits is not None:
        alpha = alpha + logits
    alpha = ops.edge_softmax(F.leaky_relu(alpha, conv.negative_slope), rows, g.num_dst)
    alpha = F.dropout(alpha, p=conv.dropout, training=conv.training)
    out = ops.scatter(xs.index_select(0, cols) * alpha.unsqueeze(-1), rows, g.num_dst,
                      "sum" if conv.aggr == "add" else conv.aggr)
    return out, alpha


def attention(conv, g: Graph, alpha: torch.Tensor):
    """PyG's return format: ``(edge_index, alpha)`` in its edge order (kept edges, then added
    loops), or for a sparse input ``(adj_t, alpha)`` with ``adj_t`` a torch sparse CSR [N, N, H]."""
    if g.from_sparse:
        crow, col = g.adj.pos[1].long(), g.adj.crd[1].long()
        adj = torch.sparse_csr_tensor(crow, col, alpha, (g.num_dst, g.num_src, alpha.shape[1]))
        return adj, alpha
    perm = g.edge_perm
    order = torch.argsort(torch.where(perm >= 0, perm, perm.numel() + (-1 - perm)))
    rows, cols = g.rows()[order], g.cols()[order]
    ei = torch.stack([cols, rows] if conv.flow == "source_to_target" else [rows, cols])
    return ei, alpha[order]


def edge_logits(conv, g: Graph, edge_attr: torch.Tensor, edge_index, detach: bool) -> torch.Tensor:
    """Per-edge logits ``a_e·Θ_e e_ij`` [nnz, H] in the graph's CSR order, added loops included."""
    if edge_attr.dim() == 1:
        edge_attr = edge_attr.view(-1, 1)
    H, C = conv.heads, conv.out_channels
    w, a = conv.lin_edge.weight, conv.att_edge
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
        parts.append(_loop_logits(conv.fill_value, edge_attr, ei, m, (-1 - perm[~kept])))
    out = torch.cat(parts) if len(parts) > 1 else parts[0]
    # back to CSR order: kept edges came first in `parts`
    order = torch.cat([torch.nonzero(kept).view(-1), torch.nonzero(~kept).view(-1)])
    return out.index_select(0, torch.argsort(order))


def edge_tensor(g: Graph, logits: torch.Tensor) -> SparseTensor:
    """Edge logits as a 3-d sparse tensor [N_dst, N_src, H] ("dsd") over the graph's pattern."""
    adj = g.adj
    fmt = Format("dsd") if "u" not in adj.format.codes else Format("dud")
    return SparseTensor(adj.shape + (logits.shape[1],), fmt, list(adj.pos) + [None], list(adj.crd) + [None],
                        logits.contiguous().reshape(-1), check=False)


def _loop_logits(fv, edge_attr, edge_index, m, nodes):
    """Logits of added self loops from their fill value (PyG's ``add_self_loops`` rules)."""
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
