"""``Conv``: the base of sgnn's convs, with PyG ``MessagePassing``'s constructor contract.

PyG's convs pass unknown keyword arguments to ``MessagePassing.__init__``, which accepts
``aggr``, ``aggr_kwargs``, ``flow``, ``node_dim`` and ``decomposed_layers`` and raises
``TypeError`` for anything else. ``Conv.__init__`` has the same keyword-only signature, so a
misspelled argument fails the same way. ``decomposed_layers`` only changes how PyG splits its
edge-wise work (never the result) and is accepted for compatibility; sgnn never materialises
edge-wise messages on its kernel paths.
"""
from __future__ import annotations

import copy
import functools

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake

from ..errors import NotSupported, UserError
from .custom_op import compiled_call, register
from .graph import FLOWS, Graph, graph_of


class Conv(nn.Module):
    """Shared argument handling: flow, aggregation name, node dimension, lazy ``Linear``s; under
    ``torch.compile``/``torch.export`` a call is one ``sgnn::conv`` custom op (``custom_op.py``)."""

    _extra_name: str | None = None  # the per-edge tensor argument (edge_weight, edge_attr)

    def __init__(self, aggr="sum", *, aggr_kwargs: dict | None = None, flow: str = "source_to_target",
                 node_dim: int = -2, decomposed_layers: int = 1):
        super().__init__()
        if flow not in FLOWS:
            raise ValueError(f"Expected 'flow' to be either 'source_to_target' or 'target_to_source' "
                             f"(got '{flow}')")
        if not isinstance(decomposed_layers, int) or decomposed_layers < 1:
            raise ValueError(f"Expected 'decomposed_layers' to be a positive integer (got {decomposed_layers!r})")
        self.aggr = aggr if isinstance(aggr, (list, tuple)) or aggr is None else str(aggr)
        self.aggr_kwargs = dict(aggr_kwargs or {})
        self.flow, self.node_dim, self.decomposed_layers = flow, node_dim, decomposed_layers
        self._sgnn_handle = register(self)

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        new._sgnn_handle = register(new)
        return new

    def __setstate__(self, state):
        super().__setstate__(state)
        self._sgnn_handle = register(self)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _traceable(cls.forward)

    def _out_shape(self, x: torch.Tensor, n_dst: int) -> tuple[int, ...]:
        """The output shape of a call on dense ``x`` with ``n_dst`` targets (for fake tensors)."""
        return tuple(x.shape[:-2]) + (n_dst, self.out_channels)

    def optional_parameter(self, name: str, shape) -> None:
        """A parameter of ``shape`` (uninitialised), or a registered ``None`` (PyG's absent parameter)."""
        self.register_parameter(name, None if shape is None else nn.Parameter(torch.empty(shape)))

    def graph(self, edge_index, n_src: int, n_dst: int, edge_weight=None, self_loops: bool = False) -> Graph:
        """The cached graph of this call's adjacency, read with this conv's ``flow`` (with GATConv's
        self loops when ``self_loops``)."""
        return graph_of(edge_index, n_src, n_dst, edge_weight, self.flow, self_loops)

    def check_node_dim(self, x: torch.Tensor, allowed: tuple[int, ...]) -> None:
        """Nodes must lie along ``node_dim`` (``-2`` or ``0`` for [N, F]; ``-2`` or ``1`` for [B, N, F])."""
        nd = self.node_dim if self.node_dim >= 0 else x.dim() + self.node_dim
        if nd != x.dim() - 2 or x.dim() not in allowed:
            raise NotSupported(f"{type(self).__name__}: node features of shape {list(x.shape)} with "
                               f"node_dim={self.node_dim}; expected nodes in the second-to-last dimension "
                               f"of a {' or '.join(f'{d}-d' for d in allowed)} tensor")


def _traceable(forward):
    """``forward``, but one ``sgnn::conv`` op while ``torch.compile`` or ``torch.export`` traces it."""
    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        if torch.compiler.is_compiling() or _traced(args):
            out = compiled_call(self, args, kwargs)
            if out is not None:
                return out
        return forward(self, *args, **kwargs)
    return wrapper


def _traced(args) -> bool:
    """True when the call's features are fake or functional tensors (``torch.export``'s tracing)."""
    x = args[0] if args else None
    x = x[0] if isinstance(x, (tuple, list)) and x else x
    return isinstance(x, torch.Tensor) and type(x) is not torch.Tensor and is_fake(x)  # plain: never fake


def make_linear(in_channels: int, out_channels: int, bias: bool) -> nn.Module:
    """``nn.Linear``, or ``nn.LazyLinear`` when ``in_channels`` is -1 (PyG's lazy initialisation)."""
    if in_channels is None or in_channels < 0:
        return nn.LazyLinear(out_channels, bias=bias)
    return nn.Linear(in_channels, out_channels, bias=bias)


def materialize(lin: nn.Module, x, init=None) -> None:
    """Give a lazy ``Linear`` its input size from ``x``; the weight is then drawn by ``init``
    (default: torch's ``Linear`` rule). A bias loaded before (PyG's lazy ``Linear`` has a
    materialised bias) is kept."""
    if not (isinstance(lin, nn.LazyLinear) and lin.has_uninitialized_params()):
        return
    if x is None:
        raise UserError(f"{type(lin).__name__}: cannot infer the input size without features")
    lin.in_features = int(x.shape[-1])
    with torch.no_grad():
        if isinstance(lin.weight, nn.parameter.UninitializedParameter):
            lin.weight.materialize((lin.out_features, lin.in_features))
            if init is not None:
                init(lin.weight)
            else:
                nn.init.kaiming_uniform_(lin.weight, a=5 ** 0.5)
        if isinstance(lin.bias, nn.parameter.UninitializedParameter):
            lin.bias.materialize((lin.out_features,))
            bound = 1 / lin.in_features ** 0.5 if lin.in_features > 0 else 0
            nn.init.uniform_(lin.bias, -bound, bound)


def is_lazy(*mods) -> bool:
    return any(isinstance(m, nn.LazyLinear) and m.has_uninitialized_params() for m in mods if m is not None)


def records(*ts) -> bool:
    """True when autograd records an operation on any of these tensors (or parameters)."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in ts)
