"""sgnn's convs as message-passing modules for PyG's FX tools (``to_hetero``, ``to_hetero_with_bases``).

PyG's FX transformer decides what to duplicate per edge type with
``torch_geometric.nn.fx.is_message_passing_op`` (an ``isinstance(m, MessagePassing)`` test).
sgnn's convs do not subclass ``MessagePassing`` (that would import PyG with sgnn), so this module
extends that one predicate to accept them too, when ``torch_geometric.nn.fx`` is imported:
right away if it already is, else through an import hook that fires once, the moment it is.
Nothing else of PyG is touched, and PyG is never imported by sgnn for this.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

TARGET = "torch_geometric.nn.fx"


def _extend(fx) -> None:
    orig = fx.is_message_passing_op
    if getattr(orig, "_sgnn", False):
        return
    from .conv import Conv

    def is_message_passing_op(module, op: str, target: str) -> bool:
        if op == "call_module" and isinstance(fx.get_submodule(module, target), Conv):
            return True
        return orig(module, op, target)
    is_message_passing_op._sgnn = True
    fx.is_message_passing_op = is_message_passing_op


class _Hook(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of ``torch_geometric.nn.fx`` to extend it after it runs."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _extend(module)
        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Extend PyG's predicate now, or when PyG's FX module is first imported."""
    if TARGET in sys.modules:
        _extend(sys.modules[TARGET])
    elif not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())
