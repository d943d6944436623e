"""Activations a layer can apply in its own last pass (``act=`` on the sgnn layers).

A GNN usually runs ``conv -> relu -> conv``; applying the activation inside the conv's kernel
epilogue (or in place on the conv's fresh output) saves a full read-write pass over an N x F
tensor and its allocation. ``resolve`` accepts a name, a ``torch.nn`` activation module, or None.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import expr as E
from ..errors import UserError

NAMES = ("relu", "elu", "leaky_relu", "sigmoid", "tanh")


@dataclass(frozen=True)
class Act:
    """An elementwise activation: ``name`` and its scalar parameter (elu alpha, leaky_relu slope)."""

    name: str
    param: float | None = None

    def expr(self, x):
        """The activation applied to an index expression (for a kernel epilogue)."""
        if self.name == "relu":
            return E.relu(x)
        if self.name == "elu":
            return E.elu(x, self.param)
        if self.name == "leaky_relu":
            return E.leaky_relu(x, self.param)
        return E.sigmoid(x) if self.name == "sigmoid" else E.tanh(x)

    def inplace(self, t: torch.Tensor) -> torch.Tensor:
        """The activation applied to ``t`` in place (``t`` must be a fresh tensor the layer owns)."""
        if self.name == "relu":
            return t.relu_()
        if self.name == "elu":
            return F.elu_(t, self.param)
        if self.name == "leaky_relu":
            return F.leaky_relu_(t, self.param)
        return t.sigmoid_() if self.name == "sigmoid" else t.tanh_()

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """The activation as an out-of-place torch op (autograd paths)."""
        if self.name in ("elu", "leaky_relu"):
            return getattr(F, self.name)(t, self.param)
        return getattr(torch, self.name)(t)

    def __str__(self) -> str:
        return self.name if self.param is None else f"{self.name}({self.param:g})"


def resolve(act) -> Act | None:
    """``None``, a name ("relu", "elu", "leaky_relu", "sigmoid", "tanh"), an ``Act`` or a torch.nn
    activation module (``ReLU``, ``ELU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``) as an ``Act``."""
    if act is None or isinstance(act, Act):
        return act
    if isinstance(act, str):
        key = act.lower().replace("-", "_")
        if key not in NAMES:
            raise UserError(f"act: expected one of {', '.join(NAMES)} or None (got {act!r})")
        return Act(key, {"elu": 1.0, "leaky_relu": 0.01}.get(key))
    if isinstance(act, nn.ReLU):
        return Act("relu")
    if isinstance(act, nn.ELU):
        return Act("elu", float(act.alpha))
    if isinstance(act, nn.LeakyReLU):
        return Act("leaky_relu", float(act.negative_slope))
    if isinstance(act, nn.Sigmoid):
        return Act("sigmoid")
    if isinstance(act, nn.Tanh):
        return Act("tanh")
    raise UserError(f"act: cannot fuse {type(act).__name__}; expected one of {', '.join(NAMES)}, "
                    f"a matching torch.nn module, or None")

