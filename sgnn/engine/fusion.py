"""The row-softmax group found on the normalised expression before lowering.

``rewrite.desugar`` turns ``sum_j softmax_j(s over A) * v`` into three reductions over the same
row: ``m = max_j s``, ``z = sum_j exp(s - m)`` and ``acc = sum_j exp(s - m) / z * v``. Evaluated one
after another they walk each row three times. ``softmax_groups`` recognises the triple so the
lowering runs it as two passes over the row: the maximum, then ``exp(s - m)`` once per entry
accumulated into ``z`` and ``acc`` together; the epilogue divides by ``z``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .expr import BinOp, Call, Expr, Pattern, Reduce
from .domains import reduces
from .rewrite import factors


@dataclass(frozen=True)
class SoftmaxGroup:
    acc: Reduce  # sum_j exp(s - m) / z * rest
    m: Reduce  # max_j pattern * s
    z: Reduce  # sum_j pattern * exp(s - m)
    score: Expr  # s
    rest: tuple  # the other factors of acc's body (the values being averaged)


def _weight(f: Expr):
    """``pattern * exp(s - m) / z`` → (s, m, z), else None."""
    if not (isinstance(f, BinOp) and f.op == "/" and isinstance(f.b, Reduce)):
        return None
    num, z = f.a, f.b
    if not (isinstance(num, BinOp) and num.op == "*" and isinstance(num.a, Pattern)):
        return None
    e = num.b
    if not (isinstance(e, Call) and e.fn == "exp" and isinstance(e.args[0], BinOp) and e.args[0].op == "-"):
        return None
    s, m = e.args[0].a, e.args[0].b
    if not (isinstance(m, Reduce) and m.op == "max" and m.body == BinOp("*", num.a, s)):
        return None
    if not (z.op == "sum" and z.body == num and z.idx == m.idx):
        return None
    return s, m, z


def softmax_groups(e: Expr) -> dict:
    """Every fusable softmax-weighted sum in ``e``, keyed by its three reductions."""
    out: dict = {}
    for r in reduces(e):
        if r.op != "sum":
            continue
        fs = factors(r.body)
        for n, f in enumerate(fs):
            hit = _weight(f)
            if hit is None or hit[1].idx != r.idx:
                continue
            s, m, z = hit
            g = SoftmaxGroup(r, m, z, s, tuple(fs[:n] + fs[n + 1:]))
            for key in (r, m, z):
                out.setdefault(key, g)
            break
    return out
