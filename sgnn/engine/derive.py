"""Derivatives of statements, as statements: reverse mode over index notation.

For ``out[I] = e`` and an upstream gradient ``G[I]``, the gradient of ``L = sum_I G[I] e[I]`` with
respect to a tensor ``T`` is another statement over ``T``'s dimensions, compiled by the same
pipeline. The adjoint of each node is pushed down the tree (products swap factors in, sums pass
through and remember their reduced indices, scalar functions multiply by their derivative,
recomputed from their argument inside the gradient kernel, or, for the statement's outermost
function of a reduction (an activation epilogue), read from the forward output ``out_value``).
Each access of ``T`` then contributes its adjoint summed over every index it does not carry, with
its indices renamed to ``T``'s dimension names.

- SpMM ``sum_j A[i,j] X[j,k]`` w.r.t. ``X`` gives ``dX[j,k] = sum_i G[i,k] A[i,j]``: a transposed
  access of ``A``, for which the scheduler builds (and caches) the CSC of the same pattern.
- With respect to a sparse operand's values, the gradient is sampled at its pattern
  (``pattern(A[i,j]) * ...``): an SDDMM, output in ``A``'s pattern.
- ``relu``/``leaky_relu``/``abs`` route through ``step``, ``exp``/``log``/``sigmoid``/``tanh``/
  ``sqrt``/``elu`` through their closed forms. ``max``/``min`` reductions and ``softmax`` have no
  derivative here yet (``NotSupported``, naming them); the layers' attention runs its own rule.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import NotSupported, UserError
from .expr import (Access, BinOp, Call, Const, Expr, Pattern, Reduce, Softmax, Statement, accesses,
                   walk)

GRAD = "grad_out"  # the upstream gradient's operand name in derived statements
OUT = "out_value"  # the forward output, read where an activation's slope needs it


@dataclass(frozen=True)
class Derivative:
    """The gradient of one operand: intermediate statements (forward values the gradient reads,
    e.g. an aggregation that multiplies the operand), evaluated in order, then ``stmt``."""

    pre: tuple[tuple[str, Statement], ...]
    stmt: Statement

    def __str__(self) -> str:
        return "\n".join([f"{name} := {st}" for name, st in self.pre] + [str(self.stmt)])

    def evaluate(self, run, ops: dict):
        """Run the statements with ``run(stmt, ops) -> tensor`` (e.g. ``runtime.evaluate``)."""
        ops = dict(ops)
        for name, st in self.pre:
            ops[name] = run(st, ops)
        return run(self.stmt, ops)


@dataclass(frozen=True)
class Term:
    """One access of the target: its indices, its adjoint, and every index bound around it."""

    idx: tuple[str, ...]
    adjoint: Expr
    bound: frozenset[str]


def derivative(stmt: Statement, wrt: str, sparse: bool = False, grad: str = GRAD) -> Derivative:
    """The statements of ``d(sum G * out) / d wrt[...]`` (sampled at ``wrt``'s pattern when ``sparse``)."""
    if wrt not in stmt.inputs:
        raise UserError(f"derivative: {wrt!r} is not an operand of {stmt}")
    if grad in stmt.inputs:
        raise UserError(f"derivative: the operand name {grad!r} is reserved for the upstream gradient")
    _refuse(stmt.expr)
    terms: list[Term] = []
    hoisted: list[tuple[str, Statement]] = []
    _push(stmt.expr, Access(grad, stmt.idx), frozenset(stmt.idx), wrt, terms, Access(OUT, stmt.idx), hoisted)
    ranks = {len(t.idx) for t in terms} or {len(next(a for a in accesses(stmt.expr) if a.name == wrt).idx)}
    if len(ranks) != 1:
        raise UserError(f"derivative: {wrt!r} is accessed with different ranks in {stmt}")
    dims = tuple(f"_d{k}" for k in range(ranks.pop()))
    body: Expr | None = None
    for t in terms:
        part = _contribution(t, dims, hoisted)
        body = part if body is None else body + part
    if body is None:
        body = Const(0.0)
    if sparse:
        body = Pattern(Access(wrt, dims)) * body
    return Derivative(tuple(hoisted), Statement(dims, body, f"d_{wrt}"))


def _refuse(e: Expr) -> None:
    for node in walk(e):
        if isinstance(node, Reduce) and node.op != "sum":
            raise NotSupported(f"derivative: {node.op}_ reductions have no derivative yet ({node})")
        if isinstance(node, Softmax):
            raise NotSupported(f"derivative: softmax has no derivative here yet ({node})")
        if isinstance(node, BinOp) and node.op in ("max", "min"):
            raise NotSupported(f"derivative: elementwise {node.op} has no derivative yet ({node})")


def _push(e: Expr, adj: Expr, bound: frozenset[str], wrt: str, out: list[Term], value: Access | None = None,
          hoisted: list | None = None) -> None:
    """Accumulate into ``out`` the adjoint of every access of ``wrt`` below ``e`` (``value``: the
    forward output's access when ``e`` is the statement's root)."""
    if isinstance(e, Access):
        if e.name == wrt:
            if len(set(e.idx)) != len(e.idx):
                raise NotSupported(f"derivative: repeated index in {e} (a diagonal) is not supported")
            out.append(Term(e.idx, adj, bound))
        return
    if isinstance(e, (Const, Pattern)) or not _mentions(e, wrt):
        return
    h = hoisted if hoisted is not None else []

    def push(sub, a):
        if not _mentions(sub, wrt):
            return
        _push(sub, a, bound, wrt, out, None, h)
    if isinstance(e, BinOp):
        a, b = e.a, e.b
        if e.op == "+":
            push(a, adj), push(b, adj)
        elif e.op == "-":
            push(a, adj), push(b, Const(-1.0) * adj)
        elif e.op == "*":
            push(a, adj * b), push(b, adj * a)
        elif e.op == "/":
            push(a, adj / b)
            push(b, Const(-1.0) * adj * a / (b * b))
        return
    if isinstance(e, Reduce):
        clash = bound & set(e.idx)
        if clash:
            raise NotSupported(f"derivative: index {sorted(clash)} is reduced twice in one branch")
        _push(e.body, adj, bound | set(e.idx), wrt, out, None, h)
        return
    if isinstance(e, Call):
        push(e.args[0], adj * _slope(e, value if _reduces(e.args[0]) else None))
        return
    raise NotSupported(f"derivative: no rule for {type(e).__name__} ({e})")


def _reduces(e: Expr) -> bool:
    return any(isinstance(n, Reduce) for n in walk(e))


def _hoist(e: Expr, hoisted: list) -> Expr:
    """``e`` with each outermost reduction replaced by an access of an intermediate statement that
    computes it once (a forward value the gradient reads inside its own reduction)."""
    if isinstance(e, Reduce):
        for name, st in hoisted:
            if st.expr == e:
                return Access(name, st.idx)
        idx = tuple(sorted(e.free))
        name = f"_t{len(hoisted)}"
        hoisted.append((name, Statement(idx, e, name)))
        return Access(name, idx)
    if isinstance(e, BinOp):
        return BinOp(e.op, _hoist(e.a, hoisted), _hoist(e.b, hoisted))
    if isinstance(e, Call):
        return Call(e.fn, tuple(_hoist(a, hoisted) for a in e.args), e.param)
    return e


def _mentions(e: Expr, name: str) -> bool:
    return any(a.name == name for a in accesses(e))


def _slope(c: Call, value: Access | None = None) -> Expr:
    """f'(u) as an expression of u (recomputed in the gradient kernel), or of the saved value f(u)."""
    u, p = c.args[0], c.param
    y = c if value is None else value
    step = Call("step", (u if value is None else value,))  # u > 0 exactly where relu(u), elu(u) > 0
    rules = {
        "neg": lambda: Const(-1.0),
        "exp": lambda: y,
        "sqrt": lambda: Const(0.5) / y,
        "sigmoid": lambda: y * (Const(1.0) - y),
        "tanh": lambda: Const(1.0) - y * y,
        "relu": lambda: step,
        "leaky_relu": lambda: step + Const(p) * (Const(1.0) - step),
        "elu": lambda: step + (Const(1.0) - step) * (y + Const(p)) if value is not None
        else step + (Const(1.0) - step) * Const(p) * Call("exp", (u,)),
    }
    if value is None:  # functions whose slope needs their argument
        rules["log"] = lambda: Const(1.0) / u
        rules["abs"] = lambda: Const(2.0) * step - Const(1.0)
    if c.fn not in rules or (c.fn == "leaky_relu" and value is not None and p is not None and p <= 0):
        raise NotSupported(f"derivative: {c.fn} has no derivative rule"
                           + (" from its saved output" if value is not None else ""))
    return rules[c.fn]()


def _contribution(t: Term, dims: tuple[str, ...], hoisted: list) -> Expr:
    """``t``'s adjoint summed over the indices the target's access does not carry, renamed (a
    reduction the adjoint holds is hoisted first when that sum would enclose it)."""
    rest = tuple(sorted(t.bound - set(t.idx)))
    adjoint = _hoist(t.adjoint, hoisted) if rest else t.adjoint
    body = _rename(adjoint, dict(zip(t.idx, dims)))
    return Reduce("sum", rest, body) if rest else body


def _rename(e: Expr, m: dict[str, str]) -> Expr:
    if isinstance(e, Access):
        return Access(e.name, tuple(m.get(i, i) for i in e.idx))
    if isinstance(e, Pattern):
        return Pattern(_rename(e.access, m))
    if isinstance(e, Const):
        return e
    if isinstance(e, BinOp):
        return BinOp(e.op, _rename(e.a, m), _rename(e.b, m))
    if isinstance(e, Call):
        return Call(e.fn, tuple(_rename(a, m) for a in e.args), e.param)
    if isinstance(e, Reduce):
        inner = {k: v for k, v in m.items() if k not in e.idx}
        return Reduce(e.op, e.idx, _rename(e.body, inner))
    raise NotSupported(f"derivative: cannot rename indices in {type(e).__name__}")
