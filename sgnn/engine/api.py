"""User entry points: ``einsum``, ``evaluate`` and ``explain``."""
from __future__ import annotations

import torch

from ..errors import UserError
from .caches import LRU
from .expr import Statement, parse_einsum
from .explain import CallExplanation, Explanation, explain_plan, recording
from .runtime import as_operand, evaluate as _evaluate, plan_for

_parsed = LRU(256)  # (spec, operand count) -> Statement
_NAMES = tuple(f"t{n}" for n in range(64))


def _einsum_stmt(spec: str, n: int) -> Statement:
    key = (spec, n)
    st = _parsed.recent.get(key) or _parsed.get(key)
    if st is None:
        st = _parsed.put(key, parse_einsum(spec, n))
    return st


def einsum(spec: str, *operands):
    """Evaluate a product-and-sum expression over sparse and dense operands.

    Operands may be ``sgnn.SparseTensor``s, torch sparse tensors or dense torch tensors.
    The output is dense unless every output index is covered by one sparse operand's pattern
    (a *sampled* expression such as SDDMM ``"ij,ik,jk->ij"``), in which case it is a
    ``SparseTensor`` sharing that operand's pattern.

    >>> A = SparseTensor.from_dense(torch.eye(3))
    >>> sgnn.einsum("ik,kj->ij", A, torch.ones(3, 2)).shape
    torch.Size([3, 2])
    """
    st = _einsum_stmt(spec, len(operands))
    ops = {name: as_operand(t, name) for name, t in zip(_NAMES, operands)}
    if len(ops) != len(operands):
        raise UserError(f"einsum: at most {len(_NAMES)} operands (got {len(operands)})")
    return plan_for(st, ops, memo_key=spec)(ops)


def evaluate(stmt: Statement, **tensors):
    """Evaluate an index-notation statement built with ``sgnn.compute`` on named tensors."""
    if not isinstance(stmt, Statement):
        raise UserError(f"evaluate: expected a Statement from sgnn.compute (got {type(stmt).__name__})")
    return _evaluate(stmt, tensors)


def explain(spec, *operands, **tensors) -> Explanation:
    """Loop order, tiles, formats, parallel loop and generated C++ for an expression.

    ``spec`` is an einsum string (with positional operands), a Statement (with named tensors), or a
    layer (an ``nn.Module`` such as ``GCNConv``) with its call's arguments: then its decisions and
    every kernel it ran, in order.
    """
    if isinstance(spec, torch.nn.Module):
        return explain_call(spec, *operands, **tensors)
    if isinstance(spec, Statement):
        ops = {n: as_operand(t, n) for n, t in tensors.items()}
        return explain_plan(plan_for(spec, ops), ops)
    st = _einsum_stmt(spec, len(operands))
    ops = {f"t{n}": as_operand(t, f"t{n}") for n, t in enumerate(operands)}
    return explain_plan(plan_for(st, ops, memo_key=spec), ops)


def explain_call(module, *args, **kwargs) -> CallExplanation:
    """Run ``module(*args, **kwargs)`` under inference mode, recording its decisions and kernels."""
    with recording() as calls, torch.inference_mode():
        module(*args, **kwargs)
    kernels, decisions, statements = [], [], []
    for kind, what, ops, key in calls:
        if kind == "decision":
            decisions.append(what)
        elif kind == "layer":
            statements.append((what, ops.shape))
        else:
            ops = {n: as_operand(t, n) for n, t in ops.items()}
            kernels.append(explain_plan(plan_for(what, ops, *key), ops))  # key: (memo key, out dtype)
    return CallExplanation(repr(module), decisions, kernels, statements)
