"""Derivatives of statements, as statements: reverse mode over index notation.

For ``out[I] = e`` and an upstream gradient ``G[I]``, the gradient of ``L = sum_I G[I] e[I]`` with
respect to a tensor ``T`` is another statement over ``T``'s dimensions, compiled by the same
pipeline. The adjoint of each node is pushed down the tree (products swap factors in, sums pass
through and remember their reduced indices, scalar functions multiply by their derivative,
recomputed from their argument inside the gradient kernel, or, for the statement's outermost
function of a reduction (an activation epilogue), read from the forward output ``out_value``).
Each access of ``T`` then contributes its adjoint summed over every index it does not carry, with
its indices renamed to ``T``'s dimension names. Forward values a gradient needs (an aggregation it
multiplies, a row maximum, a softmax normaliser) are *intermediate statements*, evaluated first.

- SpMM ``sum_j A[i,j] X[j,k]`` w.r.t. ``X`` gives ``dX[j,k] = sum_i G[i,k] A[i,j]``: a transposed
  access of ``A``, for which the scheduler builds (and caches) the CSC of the same pattern.
- With respect to a sparse operand's values, the gradient is sampled at its pattern
  (``pattern(A[i,j]) * ...``): an SDDMM, output in ``A``'s pattern.
- ``relu``/``leaky_relu``/``abs`` route through ``step``, ``exp``/``log``/``sigmoid``/``tanh``/
  ``sqrt``/``elu`` through their closed forms.
- ``max_``/``min_`` (``_extreme``) route the gradient to the extreme entries, found again by
  recomputation, split evenly among ties (torch's ``scatter_reduce`` amax/amin rule).
- ``sum_j softmax_j(s over A) * v`` (``_softmax``): the attention backward recomputes the row
  statistics and the weights in each gradient statement; no E×H×C tensor exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import NotSupported, UserError
from .expr import (Access, BinOp, Call, Const, Expr, Keep, Pattern, Reduce, Softmax, Statement, accesses,
                   walk)

GRAD = "grad_out"  # the upstream gradient's operand name in derived statements
OUT = "out_value"  # the forward output, read where an activation's slope needs it
TORCH_TIES = True  # max/min: count a zero extreme's implicit tie as torch's scatter_reduce does (_zero)


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
class Backward:
    """The gradients of several operands of one statement: intermediate statements shared by all
    of them (each evaluated once), then one statement per operand."""

    pre: tuple[tuple[str, Statement], ...]
    stmts: dict

    def __str__(self) -> str:
        return "\n".join([f"{name} := {st}" for name, st in self.pre] + [str(s) for s in self.stmts.values()])

    def evaluate(self, run, ops: dict) -> dict:
        """``{operand: gradient}``, each intermediate statement run once."""
        ops = dict(ops)
        for name, st in self.pre:
            ops[name] = run(st, ops)
        return {name: run(st, ops) for name, st in self.stmts.items()}


@dataclass(frozen=True)
class Term:
    """One access of the target: its indices, its adjoint, and every index bound around it."""

    idx: tuple[str, ...]
    adjoint: Expr
    bound: frozenset[str]


@dataclass
class _Ctx:
    """One target's derivation: its terms, and the intermediate statements (shared by targets)."""

    wrt: str
    out_idx: frozenset
    pre: list
    terms: list = field(default_factory=list)

    def statement(self, idx: tuple[str, ...], expr: Expr) -> Access:
        """An access of the intermediate statement ``_tN[idx] = expr`` (one per distinct statement)."""
        for name, st in self.pre:
            if st.idx == idx and st.expr == expr:
                return Access(name, idx)
        name = f"_t{len(self.pre)}"
        self.pre.append((name, Statement(idx, expr, name)))
        return Access(name, idx)


def derivative(stmt: Statement, wrt: str, sparse: bool = False, grad: str = GRAD) -> Derivative:
    """The statements of ``d(sum G * out) / d wrt[...]`` (sampled at ``wrt``'s pattern when ``sparse``)."""
    b = derivatives(stmt, {wrt: sparse}, grad)
    return Derivative(b.pre, b.stmts[wrt])


def derivatives(stmt: Statement, targets: dict, grad: str = GRAD) -> Backward:
    """The gradients of every operand in ``targets`` (``{name: sparse}``), sharing intermediates."""
    for wrt in targets:
        if wrt not in stmt.inputs:
            raise UserError(f"derivative: {wrt!r} is not an operand of {stmt}")
    if grad in stmt.inputs:
        raise UserError(f"derivative: the operand name {grad!r} is reserved for the upstream gradient")
    _refuse(stmt.expr)
    pre: list = []
    stmts = {wrt: _target(stmt, wrt, sparse, grad, pre) for wrt, sparse in targets.items()}
    return Backward(tuple(pre), stmts)


def _target(stmt: Statement, wrt: str, sparse: bool, grad: str, pre: list) -> Statement:
    ctx = _Ctx(wrt, frozenset(stmt.idx), pre)
    _push(stmt.expr, Access(grad, stmt.idx), frozenset(stmt.idx), ctx, Access(OUT, stmt.idx))
    terms = ctx.terms
    ranks = {len(t.idx) for t in terms} or {len(next(a for a in accesses(stmt.expr) if a.name == wrt).idx)}
    if len(ranks) != 1:
        raise UserError(f"derivative: {wrt!r} is accessed with different ranks in {stmt}")
    dims = tuple(f"_d{k}" for k in range(ranks.pop()))
    body: Expr | None = None
    for t in terms:
        part = _contribution(t, dims, ctx)
        body = part if body is None else body + part
    if body is None:
        body = Const(0.0)
    if sparse:
        mask = Pattern(Access(wrt, dims))
        body = mask * _unmasked(body, mask)
    return Statement(dims, body, f"d_{wrt}")


def _unmasked(e: Expr, mask: Pattern) -> Expr:
    """``e`` without the factors ``mask`` (idempotent: the caller multiplies by it once), so that
    the output follows one pattern (sampled, shared) instead of an intersection with itself."""
    if isinstance(e, BinOp) and e.op in ("*", "/"):
        a = _unmasked(e.a, mask)
        if e.op == "/":
            return BinOp("/", a, e.b)
        b = _unmasked(e.b, mask)
        return b if a == Const(1.0) else a if b == Const(1.0) else BinOp("*", a, b)
    return Const(1.0) if e == mask else e


def _refuse(e: Expr) -> None:
    for node in walk(e):
        if isinstance(node, BinOp) and node.op in ("max", "min"):
            raise NotSupported(f"derivative: elementwise {node.op} has no derivative yet ({node})")


def _push(e: Expr, adj: Expr, bound: frozenset[str], ctx: _Ctx, value: Expr | None = None) -> None:
    """Accumulate into ``ctx.terms`` the adjoint of every access of the target below ``e``
    (``value``: ``e``'s forward value read from the output, when the output holds it)."""
    if isinstance(e, Access):
        if e.name == ctx.wrt:
            if len(set(e.idx)) != len(e.idx):
                raise NotSupported(f"derivative: repeated index in {e} (a diagonal) is not supported")
            ctx.terms.append(Term(e.idx, adj, bound))
        return
    if isinstance(e, (Const, Pattern, Keep)) or not _mentions(e, ctx.wrt):  # a mask: a constant factor
        return
    if isinstance(e, BinOp):
        _push_binop(e, adj, bound, ctx, value)
    elif isinstance(e, Reduce):
        _push_reduce(e, adj, bound, ctx, value)
    elif isinstance(e, Call):
        _push(e.args[0], adj * _slope(e, value if _reduces(e.args[0]) else None), bound, ctx)
    elif isinstance(e, Softmax):
        raise NotSupported(f"derivative: softmax is differentiable only as a factor of a sum over its "
                           f"index, sum_{e.idx}(softmax_{e.idx}(...) * v) (got {e} elsewhere)")
    else:
        raise NotSupported(f"derivative: no rule for {type(e).__name__} ({e})")


def _push_binop(e: BinOp, adj: Expr, bound: frozenset[str], ctx: _Ctx, value: Expr | None) -> None:
    a, b = e.a, e.b
    if e.op == "+":  # a reduction added to plain terms at the root: its value is the output minus them
        _push(a, adj, bound, ctx, _addend(value, a, b))
        _push(b, adj, bound, ctx, _addend(value, b, a))
    elif e.op == "-":
        _push(a, adj, bound, ctx), _push(b, Const(-1.0) * adj, bound, ctx)
    elif e.op == "*":
        _push(a, adj * b, bound, ctx), _push(b, adj * a, bound, ctx)
    elif e.op == "/":
        _push(a, adj / b, bound, ctx)
        _push(b, Const(-1.0) * adj * a / (b * b), bound, ctx)


def _addend(value: Expr | None, e: Expr, other: Expr) -> Expr | None:
    if value is None or not isinstance(e, Reduce) or _reduces(other):
        return None
    return value - other


def _push_reduce(e: Reduce, adj: Expr, bound: frozenset[str], ctx: _Ctx, value: Expr | None) -> None:
    clash = bound & set(e.idx)
    if clash:
        raise NotSupported(f"derivative: index {sorted(clash)} is reduced twice in one branch")
    fs = _factors(e.body)
    soft = [f for f in fs if isinstance(f, Softmax)]
    if e.op == "sum" and soft:
        _softmax(e, soft[0], [f for f in fs if f is not soft[0]], adj, bound, ctx, value)
        return
    if e.op in ("max", "min"):
        adj = adj * _extreme(e, ctx, value)
    _push(e.body, adj, bound | set(e.idx), ctx)


def _extreme(e: Reduce, ctx: _Ctx, value: Expr | None) -> Expr:
    """The share of ``max_J f`` (``min_J``) that reaches each ``f``: ``eq / cnt`` on the reduction's
    domain, ``eq = [f == m]`` and ``cnt = sum_J eq`` (ties split evenly, as torch's amax/amin, ``_zero``).

    Recomputation, not a recorded argmax: the maximum ``m`` is the forward output when the
    reduction is the statement itself (else an intermediate statement recomputes it), ``f`` is
    recomputed in the gradient kernel with the forward's arithmetic. No index tensor is stored, and
    ties need a count anyway (an argmax would keep one winner). ``eq`` compares through
    ``min(f, m)``, so the compiler cannot fuse ``m - f`` into a multiply-add that rounds ``f``
    differently from the forward's product. A row without entries has nothing to route to."""
    m = value if isinstance(value, Access) else ctx.statement(tuple(sorted(e.free)), e)
    f = e.body
    gap = BinOp("-", m, BinOp("min", f, m)) if e.op == "max" else BinOp("-", BinOp("max", f, m), m)
    eq = Const(1.0) - Call("step", (gap,))
    dom = _product(list(dict.fromkeys(Pattern(a) for a in accesses(f) if set(a.idx) & set(e.idx))))
    cnt = ctx.statement(m.idx, Reduce("sum", e.idx, dom * eq) + _zero(m))
    return dom * eq / cnt


def _zero(m: Expr) -> Expr:
    """``[m == 0]``: torch's amax/amin backward with ``include_self=False`` still counts the zero it
    starts from as a tie when the extreme is exactly 0 (each entry then gets ``G / (ties + 1)``);
    PyG's max/min aggregation inherits that, and so does this rule, for parity (``TORCH_TIES``)."""
    return Const(1.0) - Call("step", (Call("abs", (m,)),)) if TORCH_TIES else Const(0.0)


def _softmax(e: Reduce, sm: Softmax, rest: list, adj: Expr, bound: frozenset[str], ctx: _Ctx,
             value: Expr | None) -> None:
    """``out = sum_j p_j v_j`` with ``p = softmax_j(s over A)``: recompute ``m = max_j s``,
    ``z = sum_j exp(s - m)`` and ``alpha = exp(s - m) / z`` (intermediate statements over the rows);
    ``dv = adj * alpha``; ``ds = alpha * (sum_C adj v - beta)`` with ``beta = sum_C adj * out``
    (``C``: the indices of ``v`` that ``s`` lacks, e.g. channels), pushed into ``s`` as an expression:
    no per-edge tensor is stored (``_exchange`` reorders the sums that would need one). ``v`` is every
    other factor, a dropout mask ``keep_ijh`` included (PyG drops alpha after the softmax): then
    ``ds = alpha (sum_C adj keep X - beta)``, ``beta = sum_C adj out`` (``out`` already holds the
    mask), and ``dX = sum_i adj alpha keep``; the mask, a constant, is recomputed where it appears."""
    j, s = sm.idx, sm.body
    if e.idx != (j,):
        raise NotSupported(f"derivative: softmax_{j} must be a factor of a sum over {j} alone (got {e})")
    if bound != ctx.out_idx:
        raise NotSupported(f"derivative: softmax under another reduction is not supported ({e})")
    if _reduces(s) or any(isinstance(n, Softmax) for f in rest for n in walk(f)) or \
            any(isinstance(n, Softmax) for n in walk(s)):
        raise NotSupported(f"derivative: softmax of a reduction, or two softmaxes in one sum ({e})")
    v = _product(rest)
    fp = s.free | set(sm.over.idx)
    row = tuple(v for v in sm.over.idx if v != j) + tuple(sorted(fp - set(sm.over.idx)))
    mask = Pattern(sm.over)
    m = ctx.statement(row, Reduce("max", (j,), mask * s))
    z = ctx.statement(row, Reduce("sum", (j,), mask * Call("exp", (s - m,))))
    alpha = mask * Call("exp", (s - m,)) / z
    _push(v, adj * alpha, bound | {j}, ctx)
    if not _mentions(s, ctx.wrt):
        return
    agg = value if value is not None else ctx.statement(tuple(sorted(e.free)), e)
    cs = tuple(sorted((adj.free | v.free) - fp))
    beta = ctx.statement(row, _sum(cs, adj * agg))
    _push(s, alpha * (_sum(cs, adj * v) - beta), frozenset(fp), ctx)


def _sum(idx: tuple, body: Expr) -> Expr:
    return Reduce("sum", idx, body) if idx else body


def _factors(e: Expr) -> list[Expr]:
    if isinstance(e, BinOp) and e.op == "*":
        return _factors(e.a) + _factors(e.b)
    return [e]


def _product(fs: list[Expr]) -> Expr:
    out: Expr = Const(1.0)
    for k, f in enumerate(fs):
        out = f if k == 0 else out * f
    return out


def _reduces(e: Expr) -> bool:
    return any(isinstance(n, (Reduce, Softmax)) for n in walk(e))


def _hoist(e: Expr, ctx: _Ctx) -> Expr:
    """``e`` with each outermost reduction replaced by an access of an intermediate statement that
    computes it once (a forward value the gradient reads inside its own reduction)."""
    if isinstance(e, (Reduce, Softmax)):
        return ctx.statement(tuple(sorted(e.free)), e)
    if isinstance(e, BinOp):
        return BinOp(e.op, _hoist(e.a, ctx), _hoist(e.b, ctx))
    if isinstance(e, Call):
        return Call(e.fn, tuple(_hoist(a, ctx) for a in e.args), e.param)
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


def _contribution(t: Term, dims: tuple[str, ...], ctx: _Ctx) -> Expr:
    """``t``'s adjoint summed over the indices the target's access does not carry, renamed (a
    reduction the adjoint holds is hoisted first when that sum would enclose it, or the two sums
    are exchanged when hoisting would index an intermediate by a reduced index: ``_exchange``)."""
    rest = tuple(sorted(t.bound - set(t.idx)))
    m = dict(zip(t.idx, dims))
    if not rest:
        return _rename(t.adjoint, m)
    body: Expr | None = None
    for fs in _expand(t.adjoint, ctx):
        part = _exchange(t, fs, rest, ctx) or Reduce("sum", rest, _hoist(_product(fs), ctx))
        body = _rename(part, m) if body is None else body + _rename(part, m)
    return body


def _edgewise(e: Expr, ctx: _Ctx) -> bool:
    """A sum whose value depends on a reduced index of the forward statement (per edge, e.g.
    ``sum_c G[i,h,c] X[j,h,c]``): as an intermediate statement it would be E-sized or worse."""
    return isinstance(e, Reduce) and e.op == "sum" and not e.free <= ctx.out_idx


def _expand(e: Expr, ctx: _Ctx) -> list[list[Expr]]:
    """``e`` as a sum of products (factor lists), distributed only over nodes holding a per-edge sum."""
    if not any(_edgewise(n, ctx) for n in walk(e)) or not isinstance(e, BinOp):
        return [[e]]
    a, b = _expand(e.a, ctx), e.b
    if e.op == "*":
        return [x + y for x in a for y in _expand(b, ctx)]
    if e.op == "+":
        return a + _expand(b, ctx)
    if e.op == "-":
        return a + [[Const(-1.0)] + y for y in _expand(b, ctx)]
    if any(_edgewise(n, ctx) for n in walk(b)):
        return [[e]]
    return [x + [Const(1.0) / b] for x in a]  # "/"


def _exchange(t: Term, fs: list[Expr], rest: tuple, ctx: _Ctx) -> Expr | None:
    """``sum_rest F * sum_C (u * w)`` as ``sum_C u * W`` with ``W = sum_rest F * w`` an intermediate
    statement over the target's indices and ``C`` (``u``: the factors free of ``rest``). E.g. for
    attention's source logits, ``sum_i alpha (sum_c G_ihc X_jhc) = sum_c X_jhc sum_i alpha G_ihc``:
    an N×H×C intermediate instead of an E×H one. None when ``fs`` has no single per-edge sum."""
    edge = [f for f in fs if _edgewise(f, ctx)]
    if len(edge) != 1 or set(edge[0].idx) & (t.bound | set(t.idx)):
        return None
    r = edge[0]
    inner = _factors(r.body)
    dep = [f for f in inner if f.free & set(rest)]
    w_body = _product([f for f in fs if f is not r] + dep)
    keep = tuple(v for v in t.idx if v in w_body.free) + tuple(sorted(w_body.free - set(rest) - set(t.idx)))
    if not set(keep) <= set(t.idx) | set(r.idx) or any(_edgewise(n, ctx) for n in walk(w_body)):
        return None
    w = ctx.statement(keep, Reduce("sum", rest, _hoist(w_body, ctx)))
    return Reduce("sum", r.idx, _product([f for f in inner if not f.free & set(rest)] + [w]))


def _rename(e: Expr, m: dict[str, str]) -> Expr:
    if isinstance(e, Access):
        return Access(e.name, tuple(m.get(i, i) for i in e.idx))
    if isinstance(e, Pattern):
        return Pattern(_rename(e.access, m))
    if isinstance(e, Const):
        return e
    if isinstance(e, Keep):  # renamed indices name the same coordinates: the same mask
        return Keep(e.seed, tuple(m.get(i, i) for i in e.idx), e.p)
    if isinstance(e, BinOp):
        return BinOp(e.op, _rename(e.a, m), _rename(e.b, m))
    if isinstance(e, Call):
        return Call(e.fn, tuple(_rename(a, m) for a in e.args), e.param)
    if isinstance(e, Reduce):
        inner = {k: v for k, v in m.items() if k not in e.idx}
        return Reduce(e.op, e.idx, _rename(e.body, inner))
    raise NotSupported(f"derivative: cannot rename indices in {type(e).__name__}")
