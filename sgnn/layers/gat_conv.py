"""GATConv: Veličković et al., "Graph Attention Networks" (ICLR 2018)."""
from __future__ import annotations

import functools

import torch
from torch import nn

from ..engine import layerplan
from ..engine.expr import Const, Statement, compute, indices, leaky_relu, softmax, sum_, tensors
from ..errors import NotSupported
from . import edgewise, norm
from .activation import resolve
from .conv import Conv, is_lazy, make_linear, materialize, records
from .inputs import check_x

AGGRS = ("add", "sum", "mean", "max", "min", "mul")


class GATConv(Conv):
    r"""Graph attention: :math:`x_i' = \sum_{j} \alpha_{ij} \Theta x_j`, :math:`\alpha_{ij} = \mathrm{softmax}_j
    (\mathrm{LeakyReLU}(a_s^\top \Theta x_j + a_t^\top \Theta x_i [+ a_e^\top \Theta_e e_{ij}]))`.

    Same constructor, defaults and ``state_dict`` keys (``lin.weight`` or ``lin_src``/``lin_dst``,
    ``att_src``, ``att_dst``, ``lin_edge``/``att_edge``, ``res``, ``bias``) as PyG's ``GATConv``.
    The layer is one statement (``statement``): logits, row softmax and aggregation run in one
    compiled loop nest, without E×H×C messages; under autograd too on large graphs (backward
    derived, ``attention.py``), attention dropout in ``train()`` included (its mask a hash of
    (seed, i, j, h) recomputed in every kernel, the seed drawn from torch's generator).
    ``return_attention_weights``, ``aggr`` max/min/mul and small graphs' training run PyG's
    edge-wise formulation (``edgewise.py``).

    Args (defaults as PyG's):
        in_channels (int or tuple): input features (``(source, target)`` for bipartite graphs).
        out_channels (int): channels per head. heads (int): attention heads (1).
        concat (bool): concatenate heads, else average them (True). negative_slope (float): 0.2.
        dropout (float): attention dropout in ``train()`` mode (0). add_self_loops (bool): True.
        edge_dim (int, optional): edge feature size. fill_value (float, Tensor or str): edge
            features of added loops ("mean", "add", "max", "min", "mul" of the incoming ones, or
            a constant; "mean"). bias (bool): True. residual (bool): add a projection of x_dst (False).
        act (str or nn.Module, optional): sgnn extension, see :class:`sgnn.layers.GCNConv`.

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
        self.in_channels, self.out_channels, self.heads, self.residual = in_channels, out_channels, heads, residual
        self.concat, self.negative_slope, self.dropout = concat, float(negative_slope), dropout
        self.add_self_loops, self.edge_dim, self.fill_value = add_self_loops, edge_dim, fill_value
        hc = heads * out_channels
        self.lin = self.lin_src = self.lin_dst = None
        if isinstance(in_channels, int):
            self.lin = make_linear(in_channels, hc, bias=False)
        else:
            self.lin_src = make_linear(in_channels[0], hc, bias=False)
            self.lin_dst = make_linear(in_channels[1], hc, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.lin_edge = nn.Linear(edge_dim, hc, bias=False) if edge_dim is not None else None
        self.optional_parameter("att_edge", (1, heads, out_channels) if edge_dim is not None else None)
        total = hc if concat else out_channels
        if residual:
            self.res = make_linear(in_channels if isinstance(in_channels, int) else in_channels[1], total, bias=False)
        else:
            self.register_parameter("res", None)
        self.optional_parameter("bias", (total,) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        mods = [m for m in (self.lin, self.lin_src, self.lin_dst, self.lin_edge, self.res) if m is not None]
        for p in [m.weight for m in mods if not is_lazy(m)] + [a for a in (self.att_src, self.att_dst, self.att_edge)
                                                              if a is not None]:
            nn.init.xavier_uniform_(p)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _out_shape(self, x: torch.Tensor, n_dst: int) -> tuple[int, ...]:
        return (n_dst, self.heads * self.out_channels if self.concat else self.out_channels)

    def forward(self, x, edge_index, edge_attr: torch.Tensor | None = None, size=None, return_attention_weights=None):
        x_src, x_dst = (x, x) if not isinstance(x, (tuple, list)) else x
        for t, name in ((x_src, "x"), (x_dst, "x_dst")):
            if t is not None:
                check_x(t, name)
        lin_s, lin_d = (self.lin, self.lin) if self.lin is not None else (self.lin_src, self.lin_dst)
        for m, t in ((lin_s, x_src), (lin_d, x_dst), (self.res, x_dst)):
            if m is not None and t is not None:
                materialize(m, t, nn.init.xavier_uniform_)
        n_dst = size[1] if size is not None else (x_dst.shape[0] if x_dst is not None else None)
        g = self.graph(edge_index, x_src.shape[0], n_dst, self_loops=self.add_self_loops)
        edge_attr = edge_attr if self.lin_edge is not None else None
        weights = bool(return_attention_weights)
        if weights or (self.training and self.dropout > 0) or self.aggr in ("max", "min", "mul") \
                or records(x_src, x_dst, edge_attr, *self.parameters()):
            out, alpha = edgewise.forward(self, g, x_src, x_dst, lin_s, lin_d, edge_attr, edge_index, weights)
            return (out, edgewise.attention(self, g, alpha)) if return_attention_weights else out
        return self._planned(g, x_src, x_dst, lin_s, lin_d, edge_attr, edge_index)

    def _planned(self, g, x_src, x_dst, lin_s, lin_d, edge_attr, edge_index) -> torch.Tensor:
        """Inference: the statement planned and run by the engine (logits as ``x·(Θ·att)``)."""
        H, C = self.heads, self.out_channels
        w = lin_s.weight
        ops = {"X": x_src, "W": w.view(H, C, -1), "Ms": edgewise.folded(w, self.att_src, H, C)}
        if x_dst is not None:
            ops.update(Xd=x_dst, Md=edgewise.folded(lin_d.weight, self.att_dst, H, C))
        ops.update({"ae": edgewise.edge_tensor(g, edgewise.edge_logits(self, g, edge_attr, edge_index, True))}
                   if edge_attr is not None else {"A": norm.pattern(g)})
        if self.res is not None and x_dst is not None:
            ops["Wres"] = self.res.weight.view(H, C, -1) if self.concat else self.res.weight
        if self.bias is not None:
            ops["b"] = self.bias.detach().view(H, C) if self.concat else self.bias.detach()
        if self.aggr == "mean":
            ops["r"] = norm.inv_count(g, w.dtype)
        stmt = statement(H, self.concat, x_dst is not None, edge_attr is not None, "Wres" in ops, "b" in ops,
                         "r" in ops, self.negative_slope, self.act)
        return layerplan.run(stmt, ops, g).view(-1, H * C if self.concat else C)

    def __repr__(self) -> str:
        act = "" if self.act is None else f", act={self.act}"
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}{act})"


i, j, h, c, f = indices("i j h c f")
A, X, W, Ms, Xd, Md, ae, Wres, b, r = tensors("A X W Ms Xd Md ae Wres b r")


@functools.lru_cache(maxsize=None)
def statement(heads: int, concat: bool, dst: bool, edge: bool, res: bool, bias: bool, mean: bool, slope: float,
              act) -> Statement:
    """``act(Σ_j softmax_j(lrelu((X_d M_d)_ih + (X M_s)_jh (+ ae_ijh))) (XW)_jhc + res + b)``, M = Σ_c Θ att."""
    score = sum_(f, X[j, f] * Ms[h, f])
    score = sum_(f, Xd[i, f] * Md[h, f]) + score if dst else score
    score = score + ae[i, j, h] if edge else score
    out = sum_(j, softmax(j, leaky_relu(score, slope), over=ae[i, j, h] if edge else A[i, j]) *
               sum_(f, X[j, f] * W[h, c, f]))
    out = r[i] * out if mean else out
    out, idx = (out, (h, c)) if concat else (Const(1.0 / heads) * sum_(h, out), (c,))  # heads averaged
    out = out + sum_(f, Xd[i, f] * Wres[(*idx, f)]) if res else out
    out = out + b[idx] if bias else out
    return compute((i, *idx), out if act is None else act.expr(out))
