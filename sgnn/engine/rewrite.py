"""Algebraic rewrites applied before scheduling.

``hoist_factors``: in ``sum_R (f * g)`` a factor ``f`` that does not depend on ``R`` moves out:
   ``f * sum_R g``. A sparse factor so becomes visible at the output level (SDDMM's mask
   ``A[i,j] * sum_k X[i,k] Y[j,k]`` samples the output), and a scaling such as ``d[i]`` is applied
   once per output element instead of once per nonzero.

A ``Softmax`` stays a node: ``softmax_terms`` names the row reductions it stands for (``m = max_j
pattern(A) * s``, ``z = sum_j pattern(A) * exp(s - m)``) and its value ``pattern(A) * exp(s - m) / z``;
the scheduler sees those reductions through ``domains``, and the lowering has a rule of its own
for a softmax-weighted sum (two passes over the row, m and z as row workspaces, no E-sized buffer).
"""
from __future__ import annotations

import functools

from .expr import BinOp, Call, Const, Expr, Pattern, Reduce, Softmax


def _map(e: Expr, f) -> Expr:
    """Rebuild ``e`` with ``f`` applied to its children (bottom-up by the caller's recursion)."""
    if isinstance(e, Call):
        return Call(e.fn, tuple(f(a) for a in e.args), e.param)
    if isinstance(e, BinOp):
        return BinOp(e.op, f(e.a), f(e.b))
    if isinstance(e, Reduce):
        return Reduce(e.op, e.idx, f(e.body))
    if isinstance(e, Softmax):
        return Softmax(e.idx, f(e.body), e.over)
    return e


@functools.lru_cache(maxsize=256)
def softmax_terms(e: Softmax) -> tuple[Reduce, Reduce, Expr]:
    """``(m, z, value)`` of ``softmax_idx(s over A)``: the row maximum, the normaliser and the value."""
    mask = Pattern(e.over)
    m = Reduce("max", (e.idx,), mask * e.body)
    shifted = Call("exp", (e.body - m,))
    z = Reduce("sum", (e.idx,), mask * shifted)
    return m, z, mask * shifted / z


def factors(e: Expr) -> list[Expr]:
    """The operands of a product tree (``a * (b * c)`` → ``[a, b, c]``)."""
    if isinstance(e, BinOp) and e.op == "*":
        return factors(e.a) + factors(e.b)
    return [e]


def product(fs: list[Expr]) -> Expr:
    if not fs:
        return Const(1.0)
    out = fs[0]
    for f in fs[1:]:
        out = BinOp("*", out, f)
    return out


def hoist_factors(e: Expr) -> Expr:
    e = _map(e, hoist_factors)
    if not (isinstance(e, Reduce) and e.op == "sum"):
        return e
    fs = factors(e.body)
    inner = [f for f in fs if f.free & set(e.idx)]
    outer = [f for f in fs if not (f.free & set(e.idx))]
    if not outer or not inner:
        return e
    return product(outer + [Reduce("sum", e.idx, product(inner))])


def normalize(e: Expr) -> Expr:
    """The form the scheduler reads: invariant factors hoisted out of sums."""
    return hoist_factors(e)


__all__ = ["softmax_terms", "hoist_factors", "normalize", "factors", "product"]
