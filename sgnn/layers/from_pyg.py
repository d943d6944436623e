"""``from_pyg``: swap a PyG model's supported convolutions for sgnn's, keeping the weights."""
from __future__ import annotations

import copy

from torch import nn

from ..errors import UserError
from .activation import resolve
from .gat_conv import GATConv
from .gcn_conv import GCNConv
from .sage_conv import SAGEConv

SGNN_LAYERS = (GCNConv, SAGEConv, GATConv)


def _mp_options(m) -> dict:
    """The ``MessagePassing`` options of a PyG conv that sgnn honours, after refusing the rest."""
    name = type(m).__name__
    hooks = [h for h in ("_propagate_forward_pre_hooks", "_propagate_forward_hooks", "_message_forward_pre_hooks",
                         "_message_forward_hooks", "_aggregate_forward_pre_hooks", "_aggregate_forward_hooks",
                         "_message_and_aggregate_forward_pre_hooks", "_message_and_aggregate_forward_hooks",
                         "_edge_update_forward_pre_hooks", "_edge_update_forward_hooks")
             if getattr(m, h, None)]
    if hooks:
        raise UserError(f"from_pyg: {name} has message-passing hooks ({', '.join(hooks)}); sgnn's kernels do not "
                        f"run PyG's propagate, so the hooks would never fire. Remove them first")
    if getattr(m, "explain", None):
        raise UserError(f"from_pyg: {name} is in PyG's explain mode (edge masks); convert it before explaining")
    return {"flow": m.flow, "decomposed_layers": getattr(m, "decomposed_layers", 1)}


def _convert(m: nn.Module) -> nn.Module | None:
    try:
        from torch_geometric import nn as pyg
    except ImportError:  # PyG not installed: nothing to convert
        return None
    if isinstance(m, pyg.GCNConv):
        new = GCNConv(m.in_channels, m.out_channels, improved=m.improved, cached=m.cached,
                      add_self_loops=m.add_self_loops, normalize=m.normalize, bias=m.bias is not None,
                      aggr=m.aggr, **_mp_options(m))
    elif isinstance(m, pyg.SAGEConv):
        from .sage_conv import NATIVE
        aggr = m.aggr if isinstance(m.aggr, str) and m.aggr in NATIVE else copy.deepcopy(m.aggr_module)
        new = SAGEConv(m.in_channels, m.out_channels, aggr=aggr, normalize=m.normalize,
                       root_weight=m.root_weight, project=m.project, bias=m.lin_l.bias is not None,
                       **_mp_options(m))
    elif isinstance(m, pyg.GATConv):
        new = GATConv(m.in_channels, m.out_channels, heads=m.heads, concat=m.concat,
                      negative_slope=m.negative_slope, dropout=m.dropout, add_self_loops=m.add_self_loops,
                      edge_dim=m.edge_dim, fill_value=m.fill_value, bias=m.bias is not None,
                      residual=getattr(m, "residual", False), aggr=m.aggr, **_mp_options(m))
    else:
        return None
    params = list(m.parameters())
    if params and not isinstance(params[0], nn.parameter.UninitializedParameter):
        new = new.to(dtype=params[0].dtype, device=params[0].device)
    new.load_state_dict(m.state_dict())
    new.train(m.training)
    return new


def from_pyg(model: nn.Module, fuse_activations: bool = True) -> nn.Module:
    """A deep copy of ``model`` whose PyG ``GCNConv``/``SAGEConv``/``GATConv`` are sgnn layers.

    Nested modules are searched recursively; other modules (linear layers, norms, activations)
    are kept as they are. The result is called exactly like the original. With
    ``fuse_activations``, a PyG ``BasicGNN`` model (``torch_geometric.nn.models.GCN``,
    ``GraphSAGE``, ``GAT``) without norms or jumping knowledge has its activation moved into its
    convs (``act=``), which apply it in their last pass instead of a separate one.

    >>> from torch_geometric.nn import GCNConv as PyGGCN
    >>> fast = from_pyg(torch.nn.Sequential(PyGGCN(8, 4)))
    """
    top = _convert(model)
    if top is not None:
        return top
    out = copy.deepcopy(model)
    _swap(out)
    if fuse_activations:
        for m in out.modules():
            _fuse_basic_gnn(m)
    return out


def _fuse_basic_gnn(m: nn.Module) -> bool:
    """Move a BasicGNN's activation into its convs (all but the last, where PyG applies it)."""
    try:
        from torch_geometric.nn.models.basic_gnn import BasicGNN
    except ImportError:
        return False
    if not isinstance(m, BasicGNN) or m.act is None or getattr(m, "jk_mode", None) is not None:
        return False
    convs = list(m.convs)
    if any(not isinstance(n, nn.Identity) for n in m.norms) or len(convs) < 2 \
            or any(not isinstance(c, SGNN_LAYERS) or c.act is not None for c in convs[:-1]):
        return False
    try:
        act = resolve(m.act)
    except UserError:
        return False  # an activation the kernels do not have: leave it where it is
    for c in convs[:-1]:
        c.act = act
    m.act = None
    return True


def _swap(m: nn.Module) -> None:
    for name, child in list(m.named_children()):
        new = _convert(child)
        if new is not None:
            setattr(m, name, new)
        else:
            _swap(child)
