"""Lowering of scalar expressions: an expression node at a point of the loop nest becomes a loop-IR
expression over resolved positions (``Load`` of a level's values, guarded by presence flags in a
merge), workspaces and dense offsets. Also the names lowering gives index variables and sizes.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InternalError, NotSupported
from .expr import Access, BinOp, Call, Const, Expr, Keep, Pattern, Reduce, Softmax
from .loopir import Array, Bin, Cmp, Flat, Lit, Load, Select, Size, TileWidth, Var
from .loopir import Call as CCall
from .rewrite import softmax_terms

ZERO_I, ONE_I = Lit(0, "int"), Lit(1, "int")
ZERO, ONE = Lit(0), Lit(1)


@dataclass(frozen=True)
class CVar(Expr):
    """A value already computed into a scalar variable (a hoisted factor)."""

    name: str

    @property
    def free(self):
        return frozenset()


def seed_param(name: str) -> str:
    """The scalar kernel parameter holding the seed operand ``name`` (``expr.Keep``)."""
    return f"seed_{name}"


def keep_call(e: Keep) -> CCall:
    """The runtime's ``keep(seed, c0..c3, threshold, scale)``: the threshold is ``round(p 2^32)``."""
    coords = [ivar(v) for v in e.idx] + [ZERO_I] * (4 - len(e.idx))
    scale = 1.0 / (1.0 - e.p) if e.p < 1.0 else 0.0
    return CCall("keep", (Var(seed_param(e.seed)), *coords, Lit(round(e.p * 2 ** 32), "int"), Lit(scale)))


def vname(v: str) -> str:
    """The loop variable of index ``v``."""
    return f"v_{v}"


def ivar(v: str) -> Var:
    return Var(vname(v))


def product_of(xs) -> object:
    """The integer product of ``xs`` (``1`` when empty)."""
    xs = list(xs)
    if not xs:
        return ONE_I
    out = xs[0]
    for x in xs[1:]:
        out = Bin("*", out, x, "int")
    return out


def flat(parts) -> object:
    """Row-major offset of ``parts`` ((x, extent), ...): ``0`` when empty."""
    parts = list(parts)
    if not parts:
        return ZERO_I
    return Flat(parts[0][0], tuple(parts[1:]))


def dense_offset(idx) -> object:
    return flat((ivar(v), Size(v)) for v in idx)


class ScalarRules:
    """Mixin of ``Lowerer``: expressions → loop-IR expressions at the current ``Env``."""

    def extent(self, w: str):
        return TileWidth() if self.tile is not None and w == self.tile.var else Size(w)

    def ws_index(self, dims) -> object:
        return flat((Var("cc") if self.tile is not None and w == self.tile.var else ivar(w), self.extent(w))
                    for w in dims)

    def ws_ref(self, name: str, dims) -> Load:
        return Load(Array(name, "workspace"), self.ws_index(dims))

    def render(self, e: Expr, env):
        if isinstance(e, CVar):
            return Var(e.name)
        if isinstance(e, Const):
            return Lit(e.value)
        if isinstance(e, Access):
            return self.render_access(e, env)
        if isinstance(e, Keep):
            return keep_call(e)
        if isinstance(e, Pattern):
            a = e.access
            return Select(Var(env.guard[a]), ONE, ZERO) if a in env.guard else ONE
        if isinstance(e, Reduce):
            if e not in self.ws:
                raise NotSupported(f"cannot lower {e}: a reduction nested inside it uses its index and a "
                                   f"dense output index that runs innermost; evaluate the inner reduction "
                                   f"as a statement of its own first")
            name, dims, *div = self.ws[e]
            ref = self.ws_ref(name, dims)
            if div:  # a softmax-weighted sum: divide by its normaliser (0 for a row without entries)
                z = self.ws_ref(*div[0])
                return Select(Cmp(">", z, ZERO), Bin("/", ref, z), ZERO)
            return ref
        if isinstance(e, BinOp):
            return Bin(e.op, self.render(e.a, env), self.render(e.b, env))
        if isinstance(e, Softmax):  # outside a softmax-weighted sum: its value over row workspaces m, z
            return self.render(softmax_terms(e)[2], env)
        if isinstance(e, Call):
            param = () if e.param is None else (Lit(e.param),)
            return CCall(e.fn, (self.render(e.args[0], env), *param))
        raise NotSupported(f"cannot lower {type(e).__name__}")

    def render_access(self, e: Access, env):
        sl = self.slot(e)
        if not sl.sparse:
            return Load(Array(sl.key, "dense"), dense_offset(e.idx))
        if e not in env.pos or len(env.pos[e]) != len(e.idx):
            raise InternalError(f"{e} read before all its levels are resolved")
        val = Load(Array(sl.key, "val"), Var(env.pos[e][-1])) if sl.info.value_dtype else ONE
        return Select(Var(env.guard[e]), val, ZERO) if e in env.guard else val

    def out_ref(self, env) -> Load:
        s = self.s
        if s.output == "dense":
            return Load(Array("out", "dense"), dense_offset(s.stmt.idx))
        base = Var(env.pos[s.driver][-1] if s.output == "sampled" else "q")
        return Load(Array("out", "val"), Flat(base, tuple((ivar(w), Size(w)) for w in s.inner)))
