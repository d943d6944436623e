"""Checks of the features a layer is called with (before any native code runs)."""
from __future__ import annotations

import torch

from ..engine import SparseTensor
from ..errors import UserError


def check_x(x, name: str = "x", static: bool = False) -> None:
    """Node features: a [N, F] tensor (dense or sparse), an ``sgnn.SparseTensor``, or, where the layer
    supports static graphs (``static``), a dense [B, N, F] batch over one graph."""
    if isinstance(x, SparseTensor):
        return
    if not isinstance(x, torch.Tensor):
        raise UserError(f"Expected '{name}' to be a Tensor (got {type(x).__name__})")
    if x.dim() != 2 and not (static and x.dim() == 3 and x.layout == torch.strided):
        dims = "two-dimensional [num_nodes, channels] (or [batch, num_nodes, channels])" if static else \
            "two-dimensional [num_nodes, channels]"
        raise UserError(f"Expected '{name}' {dims} (got {x.dim()} dimensions)")
    if x.device.type != "cpu":
        raise UserError(f"Expected '{name}' on the CPU (got device {x.device})")
    if not x.is_floating_point():
        raise UserError(f"Expected '{name}' to hold floating point values (got {x.dtype})")
