"""Index notation: the expressions sgnn compiles.

An expression is a tree of frozen nodes over named tensors and index variables:

- ``Access``   ``A[i, j]``: a tensor read (sparse or dense, bound at call time by name)
- ``Pattern``  ``pattern(A[i, j])``: 1 wherever A stores an entry; restricts an iteration domain
- ``Const``, ``Call`` (exp, log, relu, leaky_relu, elu, sigmoid, tanh, abs, sqrt, neg, and
  step: 1 for x > 0 else 0, the derivative of relu),
  ``BinOp`` (+, -, *, /, max, min)
- ``Reduce``   ``sum_j body`` / ``max_j`` / ``min_j``
- ``Softmax``  softmax of ``body`` over ``j`` within the row pattern of a sparse access
- ``Keep``     ``keep(seed, (i, j, h), p)``: a dropout keep-mask, 1/(1-p) or 0 per coordinate tuple

**Sampled semantics**: a reduction over an index that a sparse operand stores iterates only the
stored entries (products intersect, sums unite the operands' patterns), so ``max`` and
``softmax`` over a sparse row range over the row's neighbours, not over implicit zeros.

Build expressions with Python operators::

    i, j, k = indices("i j k")
    A, X = tensors("A X")
    stmt = compute((i, k), sum_(j, A[i, j] * X[j, k]))        # SpMM

or from an einsum string with ``parse_einsum("ik,kj->ij")``.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, fields

from ..errors import UserError

class Expr:
    """Base class: arithmetic operators build trees."""

    __slots__ = ()

    def __add__(self, o): return BinOp("+", self, _lift(o))
    def __radd__(self, o): return BinOp("+", _lift(o), self)
    def __sub__(self, o): return BinOp("-", self, _lift(o))
    def __rsub__(self, o): return BinOp("-", _lift(o), self)
    def __mul__(self, o): return BinOp("*", self, _lift(o))
    def __rmul__(self, o): return BinOp("*", _lift(o), self)
    def __truediv__(self, o): return BinOp("/", self, _lift(o))
    def __rtruediv__(self, o): return BinOp("/", _lift(o), self)
    def __neg__(self): return Call("neg", (self,))

    def __reduce__(self):  # rebuilt from its fields: the cached hash is per process (string hashing)
        return type(self), tuple(getattr(self, f) for f in self._key_fields)

    @property
    def free(self) -> frozenset[str]:
        """Index variables this expression depends on (not bound by a reduction inside it)."""
        return _free(self)


def _lift(x) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, (int, float)):
        return Const(float(x))
    raise UserError(f"expression: expected an expression or a number (got {type(x).__name__})")


@dataclass(frozen=True, slots=True)
class Index:
    """An index variable."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Access(Expr):
    """for the stored entry of tensor ``name`` at coordinates ``idx``"""

    name: str
    idx: tuple[str, ...]
    _h: int = field(default=0, init=False, repr=False, compare=False)  # cached structural hash

    def __str__(self) -> str:
        return f"{self.name}[{','.join(self.idx)}]"


@dataclass(frozen=True, slots=True)
class Pattern(Expr):
    """1 where ``access`` stores an entry (its value is not read)."""

    access: Access
    _h: int = field(default=0, init=False, repr=False, compare=False)  # cached structural hash

    def __str__(self) -> str:
        return f"pattern({self.access})"


@dataclass(frozen=True, slots=True)
class Const(Expr):
    value: float
    _h: int = field(default=0, init=False, repr=False, compare=False)  # cached structural hash

    def __str__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True, slots=True)
class Call(Expr):
    """fn(args...) with an optional scalar parameter (leaky_relu slope, elu alpha)."""

    fn: str
    args: tuple[Expr, ...]
    param: float | None = None
    _h: int = field(default=0, init=False, repr=False, compare=False)  # cached structural hash

    def __str__(self) -> str:
        extra = f", {self.param}" if self.param is not None else ""
        return f"{self.fn}({', '.join(map(str, self.args))}{extra})"


@dataclass(frozen=True, slots=True)
class BinOp(Expr):
    op: str
    a: Expr
    b: Expr
    _h: int = field(default=0, init=False, repr=False, compare=False)  # cached structural hash

    def __str__(self) -> str:
        if self.op in ("max", "min"):
            return f"{self.op}({self.a}, {self.b})"
        return f"({self.a} {self.op} {self.b})"


@dataclass(frozen=True, slots=True)
class Reduce(Expr):
    """for v in idx: acc = op(acc, body)"""

    op: str
    idx: tuple[str, ...]
    body: Expr
    _h: int = field(default=0, init=False, repr=False, compare=False)  # cached structural hash

    def __str__(self) -> str:
        return f"{self.op}_{{{','.join(self.idx)}}}({self.body})"


@dataclass(frozen=True, slots=True)
class Softmax(Expr):
    """softmax of ``body`` over ``idx`` within the pattern of ``over`` (a sparse access)."""

    idx: str
    body: Expr
    over: Access
    _h: int = field(default=0, init=False, repr=False, compare=False)  # cached structural hash

    def __str__(self) -> str:
        return f"softmax_{self.idx}({self.body} over {self.over})"


@dataclass(frozen=True, slots=True)
class Keep(Expr):
    """Dropout's keep-mask: ``1/(1-p)`` where a counter-based hash (Philox4x32-7, ``sgnn_runtime.h``)
    of the coordinates ``idx`` (low 32 bits each), keyed by the runtime 64-bit ``seed`` (a one-element
    int64 operand), keeps, else 0: a pure function of coordinates, so every kernel (forward, CSR or
    CSC gradients) recomputes one mask, and a repeated (multi-)edge gets the same mask for its copies."""

    seed: str
    idx: tuple[str, ...]
    p: float
    _h: int = field(default=0, init=False, repr=False, compare=False)  # cached structural hash

    def __str__(self) -> str:
        return f"keep_{self.seed}[{','.join(self.idx)}; p={self.p}]"


def _structural_hash(self) -> int:
    """The hash of the node's fields, computed once: a deep tree hashes in O(1) after its first use,
    so a ``Statement`` is a cheap memo key."""
    h = self._h
    if not h:
        h = hash((type(self).__name__, *[getattr(self, f) for f in self._key_fields])) or 1
        object.__setattr__(self, "_h", h)
    return h


for _cls in (Access, Pattern, Const, Call, BinOp, Reduce, Softmax, Keep):
    _cls._key_fields = tuple(f.name for f in fields(_cls) if f.compare)
    _cls.__hash__ = _structural_hash


@dataclass(frozen=True)
class Statement:
    """``out[idx] = expr``: what one kernel computes."""

    idx: tuple[str, ...]
    expr: Expr
    name: str = "out"
    inputs: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not self.inputs:
            names = [a.name for a in accesses(self.expr)] + [k.seed for k in walk(self.expr) if isinstance(k, Keep)]
            object.__setattr__(self, "inputs", tuple(dict.fromkeys(names)))
        extra = set(self.expr.free) - set(self.idx)
        if extra:
            raise UserError(f"compute: index {sorted(extra)} is used but neither an output index nor "
                            f"reduced; wrap the expression in sum_(...)")
        if len(set(self.idx)) != len(self.idx):
            raise UserError(f"compute: repeated output index in {self.idx}")
        loose = {v for k in walk(self.expr) if isinstance(k, Keep) for v in k.idx} - \
            {v for a in accesses(self.expr) for v in a.idx}
        if loose:
            raise UserError(f"compute: keep's index {sorted(loose)} has no extent (no tensor access carries it)")

    def __str__(self) -> str:
        return f"{self.name}[{','.join(self.idx)}] = {self.expr}"


# ---------------------------------------------------------------- building


class Placeholder:
    """A named tensor slot: ``A[i, j]`` makes an Access."""

    def __init__(self, name: str):
        self.name = name

    def __getitem__(self, idx) -> Access:
        idx = idx if isinstance(idx, tuple) else (idx,)
        return Access(self.name, tuple(_name(i) for i in idx))


def _name(i) -> str:
    if isinstance(i, Index):
        return i.name
    if isinstance(i, str) and i.isidentifier():
        return i
    raise UserError(f"expected an index variable (got {i!r})")


def indices(names: str) -> tuple[Index, ...]:
    """``i, j = indices("i j")``"""
    return tuple(Index(n) for n in names.replace(",", " ").split())


def tensors(names: str) -> tuple[Placeholder, ...]:
    """``A, X = tensors("A X")``"""
    return tuple(Placeholder(n) for n in names.replace(",", " ").split())


def _idx(idx) -> tuple[str, ...]:
    idx = idx if isinstance(idx, (tuple, list)) else (idx,)
    return tuple(_name(i) for i in idx)


def _reduction(op: str):
    def f(idx, body) -> Reduce:
        return Reduce(op, _idx(idx), _lift(body))
    f.__name__ = f"{op}_"
    return f


sum_, max_, min_ = map(_reduction, ("sum", "max", "min"))


def softmax(idx, body, over: Access) -> Softmax:
    """Softmax of ``body`` over index ``idx`` restricted to the stored entries of ``over``."""
    if not isinstance(over, Access):
        raise UserError("softmax: expected over= to be a tensor access such as A[i, j]")
    (v,) = _idx(idx)
    if v not in over.idx:
        raise UserError(f"softmax: index {v} does not appear in {over}")
    return Softmax(v, _lift(body), over)


def pattern(access: Access) -> Pattern:
    return Pattern(access)


def _unary(fn):
    def f(x, param=None):
        return Call(fn, (_lift(x),), None if param is None else float(param))
    f.__name__ = fn
    return f


exp, log, relu, elu, sigmoid, tanh, sqrt = map(_unary, ("exp", "log", "relu", "elu", "sigmoid", "tanh", "sqrt"))
abs_ = _unary("abs")
step = _unary("step")


def keep(seed: str, idx, p: float) -> Keep:
    """Dropout's keep-mask over ``idx`` (at most 4 indices), seeded by the int64 operand ``seed``."""
    idx, p = _idx(idx), float(p)
    if not 1 <= len(idx) <= 4 or not 0.0 <= p <= 1.0 or not str(seed).isidentifier():
        raise UserError(f"keep: expected 1-4 indices, 0 <= p <= 1 and a seed operand name (got {idx}, {p}, {seed!r})")
    return Keep(str(seed), idx, p)


def leaky_relu(x, negative_slope: float = 0.01) -> Call:
    return Call("leaky_relu", (_lift(x),), float(negative_slope))


def maximum(a, b) -> BinOp:
    return BinOp("max", _lift(a), _lift(b))


def minimum(a, b) -> BinOp:
    return BinOp("min", _lift(a), _lift(b))


def compute(idx, expr, name: str = "out") -> Statement:
    """The statement ``name[idx] = expr``."""
    return Statement(_idx(idx), _lift(expr), name)


# ---------------------------------------------------------------- traversal


def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Call):
        return e.args
    if isinstance(e, BinOp):
        return (e.a, e.b)
    if isinstance(e, Reduce):
        return (e.body,)
    if isinstance(e, Softmax):
        return (e.body, Pattern(e.over))
    if isinstance(e, Pattern):
        return (e.access,)
    return ()


def walk(e: Expr):
    """Pre-order traversal."""
    yield e
    for c in children(e):
        yield from walk(c)


def accesses(e: Expr) -> list[Access]:
    return [x for x in walk(e) if isinstance(x, Access)]


def _free(e: Expr) -> frozenset[str]:
    if isinstance(e, (Access, Keep)):
        return frozenset(e.idx)
    if isinstance(e, Reduce):
        return _free(e.body) - set(e.idx)
    if isinstance(e, Softmax):
        return (_free(e.body) | frozenset(e.over.idx))
    out = frozenset()
    for c in children(e):
        out |= _free(c)
    return out


# ---------------------------------------------------------------- einsum strings

_TERM = re.compile(r"^[A-Za-z]*$")


def parse_einsum(spec: str, nargs: int) -> Statement:
    """``"ik,kj->ij"`` → ``out[i,j] = sum_k t0[i,k] * t1[k,j]`` (operands named t0, t1, ...).

    Without ``->`` the output is every index that appears once, in alphabetical order (NumPy's rule).
    """
    if not isinstance(spec, str):
        raise UserError(f"einsum: expected a spec string such as 'ik,kj->ij' (got {type(spec).__name__})")
    s = spec.replace(" ", "")
    if s.count("->") > 1:
        raise UserError(f"einsum: malformed spec {spec!r} (more than one '->')")
    lhs, arrow, rhs = s.partition("->")
    terms = lhs.split(",") if lhs else []
    if len(terms) != nargs:
        raise UserError(f"einsum: spec {spec!r} names {len(terms)} operands (got {nargs})")
    for t in (*terms, rhs):
        if not _TERM.match(t):
            raise UserError(f"einsum: malformed spec {spec!r}: only letters, ',' and '->' are allowed")
    for t in terms:
        if len(set(t)) != len(t):
            raise UserError(f"einsum: repeated index within one operand ({t!r}) is not supported (no traces)")
    counts = Counter("".join(terms))
    if not arrow:
        rhs = "".join(sorted(c for c, n in counts.items() if n == 1))
    if len(set(rhs)) != len(rhs):
        raise UserError(f"einsum: repeated output index in {spec!r}")
    missing = [c for c in rhs if c not in counts]
    if missing:
        raise UserError(f"einsum: output index {missing} does not appear in any operand of {spec!r}")
    body: Expr | None = None
    for n, t in enumerate(terms):
        a = Access(f"t{n}", tuple(t))
        body = a if body is None else body * a
    if body is None:
        raise UserError("einsum: expected at least one operand")
    reduced = tuple(c for c in dict.fromkeys("".join(terms)) if c not in rhs)
    expr = Reduce("sum", reduced, body) if reduced else body
    return Statement(tuple(rhs), expr, "out", tuple(f"t{n}" for n in range(nargs)))
