"""Autograd for compiled statements: the backward of ``evaluate`` runs the derived statements.

``evaluate(stmt, ops)`` records one ``torch.autograd`` node when a dense operand, or a sparse
operand's values, requires a gradient. Its backward evaluates ``derive.derivative(stmt, name)``
for each operand that needs one, through the same pipeline (schedule, lower, codegen, compiled
cache): ``Aᵀ·G`` for SpMM, an SDDMM for sparse values, the chain rule for products, sums and
activations. The forward output is kept for activation slopes; nothing else is stored. Double
backward is refused (``once_differentiable``); index arrays never carry gradients.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..errors import UserError
from .derive import GRAD, OUT, derivative
from .expr import Statement
from .tensor import SparseTensor

_derived: dict = {}  # (statement, operand, sparse) -> Derivative (statements are immutable)


def needs_grad(ops: dict) -> bool:
    """True when autograd records and some operand (or sparse operand's values) requires grad."""
    if not torch.is_grad_enabled():
        return False
    for t in ops.values():
        v = t.values if isinstance(t, SparseTensor) else t
        if isinstance(v, torch.Tensor) and v.requires_grad:
            return True
    return False


def evaluate(stmt: Statement, ops: dict, run):
    """``run(stmt, ops)`` as a differentiable op; ``run`` is the engine's plain evaluate."""
    names = tuple(ops)
    structs = tuple(t if isinstance(t, SparseTensor) else None for t in ops.values())
    flat = [(t.values if t.values is not None else _NONE) if isinstance(t, SparseTensor) else t
            for t in ops.values()]
    for n, t in zip(names, flat):
        if not isinstance(t, torch.Tensor):
            raise UserError(f"evaluate: operand {n!r} is not a tensor")
    holder: list = []  # the output's pattern when the statement is sampled (set by forward)
    out = _Evaluate.apply(stmt, names, structs, (run, holder), *flat)
    return holder[0].with_values(out) if holder and holder[0] is not None else out


_NONE = torch.empty(0)  # stands for a pattern-only operand's missing values


def _rebuild(names, structs, flat) -> dict:
    ops = {}
    for n, st, t in zip(names, structs, flat):
        ops[n] = t if st is None else (st if st.values is None else st.with_values(t))
    return ops


class _Evaluate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, stmt, names, structs, run_holder, *flat):
        run, holder = run_holder
        ops = _rebuild(names, structs, [t.detach() for t in flat])
        out = run(stmt, ops)
        sparse_out = isinstance(out, SparseTensor)
        holder.append(out.with_values(None) if sparse_out else None)
        value = out.values if sparse_out else out
        ctx.stmt, ctx.names, ctx.structs, ctx.run = stmt, names, structs, run
        ctx.pattern = holder[0]
        ctx.save_for_backward(*flat, value)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        *flat, value = ctx.saved_tensors
        ops = _rebuild(ctx.names, ctx.structs, flat)
        ops[GRAD] = ctx.pattern.with_values(grad.contiguous()) if ctx.pattern is not None else grad.contiguous()
        ops[OUT] = ctx.pattern.with_values(value) if ctx.pattern is not None else value
        grads = []
        for k, (name, st) in enumerate(zip(ctx.names, ctx.structs)):
            if not ctx.needs_input_grad[4 + k]:
                grads.append(None)
                continue
            key = (ctx.stmt, name, st is not None)
            d = _derived.get(key)
            if d is None:
                if len(_derived) > 1024:
                    _derived.clear()
                d = _derived[key] = derivative(ctx.stmt, name, sparse=st is not None)
            g = d.evaluate(ctx.run, ops)
            grads.append(g.values if isinstance(g, SparseTensor) else g)
        return (None, None, None, None, *grads)
