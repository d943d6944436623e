"""One GNN, four frameworks: the trained PyG model is the reference; plain PyTorch, DGL and sgnn get its
weights. ``FRAMEWORKS[name](net, data)`` returns a zero-argument forward pass (graph prepared once);
``pyg-csr`` is PyG on a CSR ``adj_t`` (torch.sparse_csr) instead of ``edge_index``.

Layers (``model.layers`` convs): dropout -> conv -> act -> ... -> dropout -> conv; GAT hidden convs
have ``heads`` concatenated heads, the last conv ``out_heads`` averaged heads (concat=False).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from itertools import pairwise
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, SAGEConv

ACTS = {"relu": F.relu, "elu": F.elu}


class PygNet(nn.Module):
    """The reference model: a stack of PyG convs (``kind`` in gcn/sage/gat)."""

    def __init__(self, kind: str, convs: list[nn.Module], act: str, dropout: float):
        super().__init__()
        self.kind, self.act, self.dropout = kind, act, dropout
        self.convs = nn.ModuleList(convs)
        self.act_in_convs = False  # set on the sgnn twin: its convs apply the activation themselves

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = F.dropout(x, self.dropout, self.training)
            x = conv(x, edge_index)
            if i < len(self.convs) - 1 and not self.act_in_convs:
                x = ACTS[self.act](x)
        return x


def build_pyg(m, in_dim: int, classes: int) -> PygNet:
    """PygNet from the ``model`` config (name, hidden, layers, dropout, act, heads, out_heads)."""
    if m.name == "gat":
        dims = [in_dim] + [m.hidden * m.heads] * (m.layers - 1)
        convs = [GATConv(d, m.hidden, heads=m.heads, dropout=m.dropout) for d in dims[:-1]]
        convs.append(GATConv(dims[-1], classes, heads=m.out_heads, concat=False, dropout=m.dropout))
    else:
        dims = [in_dim] + [m.hidden] * (m.layers - 1) + [classes]
        make = {"gcn": GCNConv, "sage": lambda a, b: SAGEConv(a, b, aggr="mean")}
        if m.name not in make:
            raise ValueError(f"build_pyg: expected model.name in gcn/sage/gat (got {m.name!r})")
        convs = [make[m.name](a, b) for a, b in pairwise(dims)]
    return PygNet(m.name, convs, m.act, m.dropout)


# --- plain PyTorch ------------------------------------------------------------------------------

def gcn_edge_weights(ei: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(src, dst, weight) of D^-1/2 (A + I) D^-1/2 on a self-loop-free graph: one self loop per node,
    degrees counted at targets (PyG's gcn_norm)."""
    loop = torch.arange(n)
    src, dst = torch.cat([ei[0], loop]), torch.cat([ei[1], loop])
    dis = torch.bincount(dst, minlength=n).float().pow(-0.5)
    return src, dst, dis[src] * dis[dst]


def gcn_adjacency(ei: torch.Tensor, n: int) -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 as CSR, rows = targets (PyG's gcn_norm on a self-loop-free graph)."""
    src, dst, w = gcn_edge_weights(ei, n)
    return _csr(dst, src, w, n)


def mean_adjacency(ei: torch.Tensor, n: int) -> torch.Tensor:
    """Row-normalised adjacency (mean over in-neighbours) as CSR, rows = targets."""
    deg = torch.bincount(ei[1], minlength=n).float().clamp(min=1)
    return _csr(ei[1], ei[0], 1.0 / deg[ei[1]], n)


def _csr(row, col, val, n) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.stack([row, col]), val, (n, n)).coalesce().to_sparse_csr()


def gat_edges(ei: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(src, dst) with one self loop per node (as GATConv adds), sorted by dst."""
    loop = torch.arange(n)
    src, dst = torch.cat([ei[0], loop]), torch.cat([ei[1], loop])
    order = torch.argsort(dst * n + src)
    return src[order].contiguous(), dst[order].contiguous()


def gcn_layer(x, p, g):
    return torch.sparse.mm(g["adj"], F.linear(x, p["weight"])) + p["bias"]


def sage_layer(x, p, g):
    return F.linear(torch.sparse.mm(g["adj"], x), p["weight_l"], p["bias_l"]) + F.linear(x, p["weight_r"])


def gat_layer(x, p, g):
    """GATConv with plain ops: index_select on edges, leaky_relu, scatter softmax, index_add."""
    src, dst, n, heads, ch = g["src"], g["dst"], x.size(0), p["heads"], p["channels"]
    h = F.linear(x, p["weight"]).view(n, heads, ch)
    a_src, a_dst = (h * p["att_src"]).sum(-1), (h * p["att_dst"]).sum(-1)
    e = F.leaky_relu(a_src.index_select(0, src) + a_dst.index_select(0, dst), p["slope"])
    idx = dst.view(-1, 1).expand_as(e)
    e_max = e.new_zeros(n, heads).scatter_reduce_(0, idx, e, "amax", include_self=False)
    w = (e - e_max.index_select(0, dst)).exp()
    w = w / (w.new_zeros(n, heads).index_add_(0, dst, w) + 1e-16).index_select(0, dst)
    w = F.dropout(w, p.get("dropout", 0.0), p.get("training", False))
    out = h.new_zeros(n, heads, ch).index_add_(0, dst, h.index_select(0, src) * w.unsqueeze(-1))
    out = out.reshape(n, heads * ch) if p["concat"] else out.mean(dim=1)
    return out + p["bias"]


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def _torch_params(kind: str, conv) -> dict:
    d = _copy                                   # detached copies: the twin shares nothing with PyG
    if kind == "gcn":
        return {"weight": d(conv.lin.weight), "bias": d(conv.bias)}
    if kind == "sage":
        return {"weight_l": d(conv.lin_l.weight), "bias_l": d(conv.lin_l.bias),
                "weight_r": d(conv.lin_r.weight)}
    return {"weight": d(conv.lin.weight), "att_src": d(conv.att_src), "att_dst": d(conv.att_dst),
            "bias": d(conv.bias), "heads": conv.heads, "channels": conv.out_channels,
            "concat": conv.concat, "slope": conv.negative_slope}


class TorchNet(nn.Module):
    """Plain PyTorch twin of a PygNet: same weights, same op order, graph structures built once."""

    LAYERS: ClassVar[dict] = {"gcn": gcn_layer, "sage": sage_layer, "gat": gat_layer}

    def __init__(self, net: PygNet, edge_index: torch.Tensor, n: int):
        super().__init__()
        self.kind, self.act, self.dropout = net.kind, net.act, net.dropout
        self.params = [_torch_params(net.kind, c) for c in net.convs]
        for p in self.params:
            p["dropout"] = net.dropout if net.kind == "gat" else 0.0
        if net.kind == "gat":
            src, dst = gat_edges(edge_index, n)
            self.graph = {"src": src, "dst": dst}
        else:
            self.graph = {"adj": (gcn_adjacency if net.kind == "gcn" else mean_adjacency)(edge_index, n)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.LAYERS[self.kind]
        for i, p in enumerate(self.params):
            x = F.dropout(x, self.dropout, self.training)
            x = layer(x, dict(p, training=self.training), self.graph)
            if i < len(self.params) - 1:
                x = ACTS[self.act](x)
        return x


# --- DGL ----------------------------------------------------------------------------------------

def _dgl_conv(kind: str, conv):
    """The DGL built-in equal to a PyG conv, with its weights copied in."""
    import dgl.nn as dglnn
    c = _copy
    if kind == "gcn":
        d = dglnn.GraphConv(conv.in_channels, conv.out_channels, norm="both")
        d.weight.data, d.bias.data = c(conv.lin.weight).t().contiguous(), c(conv.bias)
    elif kind == "sage":
        d = dglnn.SAGEConv(conv.in_channels, conv.out_channels, "mean")
        d.fc_neigh.weight.data, d.fc_self.weight.data = c(conv.lin_l.weight), c(conv.lin_r.weight)
        d.fc_self.bias.data = c(conv.lin_l.bias)
    else:
        d = dglnn.GATConv(conv.in_channels, conv.out_channels, conv.heads, negative_slope=conv.negative_slope,
                          attn_drop=conv.dropout)
        d.fc.weight.data, d.attn_l.data, d.attn_r.data = c(conv.lin.weight), c(conv.att_src), c(conv.att_dst)
        d.bias.data = c(conv.bias) if conv.concat else c(conv.bias).repeat(conv.heads)  # mean of (h_k + b)
    return d


class DglNet(nn.Module):
    """DGL twin of a PygNet (GraphConv/SAGEConv/GATConv); GCN and GAT graphs get self loops."""

    def __init__(self, net: PygNet, edge_index: torch.Tensor, n: int):
        super().__init__()
        import dgl
        self.kind, self.act, self.dropout = net.kind, net.act, net.dropout
        self.concat = [getattr(c, "concat", True) for c in net.convs]
        self.convs = nn.ModuleList(_dgl_conv(net.kind, c) for c in net.convs).eval()
        g = dgl.graph((edge_index[0], edge_index[1]), num_nodes=n)
        self.graph = dgl.add_self_loop(dgl.remove_self_loop(g)) if net.kind != "sage" else g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = F.dropout(x, self.dropout, self.training)
            x = conv(self.graph, x)
            if self.kind == "gat":
                x = x.flatten(1) if self.concat[i] else x.mean(dim=1)
            if i < len(self.convs) - 1:
                x = ACTS[self.act](x)
        return x


# --- the four frameworks ------------------------------------------------------------------------

class FrameworkUnavailable(RuntimeError):
    """A framework cannot run here; only its row reports the error."""


def pyg_forward(net: PygNet, data, pyg_cached: bool = False, **_) -> Callable[[], torch.Tensor]:
    """PyG itself, on a copy: with ``pyg_cached`` GCNConv keeps its normalised graph after the first call."""
    twin = _cached_twin(net, pyg_cached).eval()
    return lambda: twin(data.x, data.edge_index)


def adj_t(data) -> torch.Tensor:
    """PyG's transposed adjacency as torch.sparse_csr: rows = targets, columns = sources."""
    from torch_geometric.utils import to_torch_csr_tensor
    n = data.num_nodes
    return to_torch_csr_tensor(data.edge_index.flip(0), size=(n, n))


def pyg_csr_forward(net: PygNet, data, pyg_cached: bool = True, **_) -> Callable[[], torch.Tensor]:
    """PyG on a CSR ``adj_t`` (its SpMM path for GCN and SAGE), GCNConv's normalisation cached."""
    twin, a = _cached_twin(net, pyg_cached).eval(), adj_t(data)
    return lambda: twin(data.x, a)


def _cached_twin(net: PygNet, cached: bool) -> PygNet:
    twin = copy.deepcopy(net)
    for conv in twin.convs:
        if hasattr(conv, "cached"):
            conv.cached = cached
    return twin


def pytorch_forward(net: PygNet, data, **_) -> Callable[[], torch.Tensor]:
    twin = TorchNet(net, data.edge_index, data.num_nodes).eval()
    return lambda: twin(data.x)


def dgl_forward(net: PygNet, data, **_) -> Callable[[], torch.Tensor]:
    twin = DglNet(net, data.edge_index, data.num_nodes).eval()
    return lambda: twin(data.x)


def sgnn_forward(net: PygNet, data, **_) -> Callable[[], torch.Tensor]:
    try:
        from sgnn.layers import from_pyg
        from sgnn.layers.activation import resolve as resolve_act
    except ImportError as e:
        raise FrameworkUnavailable(f"sgnn: cannot import sgnn.layers.from_pyg ({type(e).__name__}: {e}); "
                                   f"the other frameworks ran") from e
    twin = from_pyg(net).eval()
    for conv in twin.convs[:-1]:        # conv -> act -> conv: the activation runs in the conv's last pass
        conv.act = resolve_act(twin.act)
    twin.act_in_convs = True
    return lambda: twin(data.x, data.edge_index)


FRAMEWORKS = {"pytorch": pytorch_forward, "pyg": pyg_forward, "pyg-csr": pyg_csr_forward, "dgl": dgl_forward,
              "sgnn": sgnn_forward}


# --- training twins: (forward in train mode, trainable parameters) --------------------------------

def _leaves(params: list[dict]) -> list[torch.Tensor]:
    out = []
    for p in params:
        for k, v in p.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                p[k] = v.detach().clone().requires_grad_(True)
                out.append(p[k])
    return out


def pyg_trainer(net: PygNet, data, pyg_cached: bool = False, **_):
    twin = _cached_twin(net, pyg_cached).train()
    return (lambda: twin(data.x, data.edge_index)), list(twin.parameters())


def pyg_csr_trainer(net: PygNet, data, pyg_cached: bool = True, **_):
    twin, a = _cached_twin(net, pyg_cached).train(), adj_t(data)
    return (lambda: twin(data.x, a)), list(twin.parameters())


def pytorch_trainer(net: PygNet, data, **_):
    twin = TorchNet(net, data.edge_index, data.num_nodes).train()
    return (lambda: twin(data.x)), _leaves(twin.params)


def dgl_trainer(net: PygNet, data, **_):
    twin = DglNet(net, data.edge_index, data.num_nodes).train()
    return (lambda: twin(data.x)), list(twin.parameters())


def sgnn_trainer(net: PygNet, data, **_):
    from sgnn.layers import from_pyg
    twin = from_pyg(net).train()
    return (lambda: twin(data.x, data.edge_index)), list(twin.parameters())


TRAINERS = {"pytorch": pytorch_trainer, "pyg": pyg_trainer, "pyg-csr": pyg_csr_trainer, "dgl": dgl_trainer,
            "sgnn": sgnn_trainer}
