"""Iteration domains: where an index ranges, as a formula over the sparse levels that store it.

Products intersect, sums unite; a dense level or dense operand is the full range. The scheduler
uses the formulas to pick the output format, the lowering to pick a loop (``For`` over the full
range, ``PosFor`` over one level, ``Merge`` over several).
"""
from __future__ import annotations

from ..errors import NotSupported
from .expr import Access, BinOp, Call, Const, Expr, Keep, Pattern, Reduce, Softmax, children
from .rewrite import softmax_terms

FULL = ("full",)


def domain(e: Expr, v: str, level_of) -> tuple:
    """Iteration domain of index ``v`` in ``e`` as a formula over sparse level iterators.

    ``level_of(access, v)`` returns the Level that stores ``v`` when it is the access's next
    level, else None. Products intersect, sums unite; a dense level or dense operand is FULL.
    Results: ``("full",)``, ``("it", access)``, ``("and", [...])``, ``("or", [...])``,
    ``("walk", [...])`` (FULL united with iterators: a dense loop that walks them).
    """
    if isinstance(e, (Access, Pattern)):
        a = e.access if isinstance(e, Pattern) else e
        lv = level_of(a, v)
        return ("it", a) if lv is not None and lv.iterates_by_position else FULL
    if isinstance(e, (Const, Keep)):  # a dropout mask is defined at every coordinate
        return FULL
    if isinstance(e, Softmax):
        return domain(softmax_terms(e)[2], v, level_of)
    if isinstance(e, Call):
        return domain(e.args[0], v, level_of)
    if isinstance(e, Reduce):
        return FULL if v in e.idx else domain(e.body, v, level_of)
    if isinstance(e, BinOp):
        a, b = domain(e.a, v, level_of), domain(e.b, v, level_of)
        if e.op in ("*",):
            return _and(a, b)
        if e.op == "/":
            return a
        return _or(a, b)
    raise NotSupported(f"domain of {type(e).__name__}")


def _and(a, b):
    if a == FULL:
        return b
    if b == FULL:
        return a
    if a[0] == "walk":
        return b if b[0] != "walk" else ("walk", a[1] + b[1])
    if b[0] == "walk":
        return a
    if a == b:
        return a
    return ("and", _flat("and", a) + _flat("and", b))


def _or(a, b):
    if a == FULL or b == FULL:
        rest = [x for x in (a, b) if x != FULL]
        its = [it for x in rest for it in iterators(x)]
        return ("walk", its) if its else FULL
    if a[0] == "walk" or b[0] == "walk":
        return ("walk", iterators(a) + iterators(b))
    if a == b:
        return a
    return ("or", _flat("or", a) + _flat("or", b))


def _flat(op, x):
    return list(x[1]) if x[0] == op else [x]


def iterators(f) -> list:
    """The distinct iterators (accesses) a domain formula mentions."""
    if f[0] == "it":
        return [f[1]]
    if f[0] == "full":
        return []
    if f[0] == "walk":
        return list(dict.fromkeys(f[1]))
    return list(dict.fromkeys(a for x in f[1] for a in iterators(x)))


def reduces(e: Expr) -> list[Reduce]:
    """Reduce nodes, post-order (inner ones first)."""
    out = []

    def rec(x):
        if isinstance(x, Softmax):  # its row reductions, in the order its value reads them
            rec(softmax_terms(x)[2])
            return
        for c in children(x):
            rec(c)
        if isinstance(x, Reduce) and x not in out:
            out.append(x)
    rec(e)
    return out


def level_of(slots):
    """``level_of(access, v)``: the storage Level of ``access`` that stores index ``v`` (None for a
    dense operand or an index it does not store)."""
    def find(a: Access, v: str):
        s = slots[a]
        if not s.sparse:
            return None
        lv = s.level_vars(a)
        if v not in lv:
            return None
        return s.format.levels[lv.index(v)]
    return find


def accesses_in(e: Expr) -> list[Access]:
    """Every access ``e`` reads (a pattern's access included, a softmax's through its terms),
    pre-order, with repeats."""
    return [x.access if isinstance(x, Pattern) else x for x in _walk(e) if isinstance(x, (Access, Pattern))]


def _walk(e: Expr):
    if isinstance(e, Softmax):
        yield from _walk(softmax_terms(e)[2])
        return
    yield e
    for c in children(e):
        yield from _walk(c)
