"""Lowering: a ``Schedule`` and a tile become loop IR (``loopir``), one rule per construct.

- a dense index with a full domain → ``For`` over ``0 .. N`` (walking any sparse level it unites with)
- one level that iterates positions → ``PosFor`` over ``pos[parent] .. pos[parent+1]``
- several iterators → ``Merge`` (intersection for products, union for sums)
- a level that can locate → ``Let p = Locate(parent, coordinate)``, never a search
- a reduction → a workspace over the dense output indices it depends on, filled by its own nest
  below the outer loops and read by the epilogue that writes the output (``lower_reduce``)

Levels are asked what they can do (``Level.has_locate``, ``iterates_positions``), never their name.
"""
from __future__ import annotations

import itertools

from ..errors import InternalError, NotSupported
from .domains import FULL, accesses_in, domain, iterators, level_of
from .expr import Access, Expr
from .loopir import (Array, Assign, Bin, Bump, Call, Cmp, Decl, For, Function, Let, Level, Load, Locate, Logic,
                     Merge, Parallel, PosFor, Prefetch, Size, TileWidth, Var, Walker)
from .lower_reduce import ReduceRules, softmax_groups
from .lower_scalar import ONE_I, ZERO_I, ScalarRules, ivar, product_of, vname

PREFETCH_LINES = 256  # cache lines of gathered rows in flight (into L2; the gather probe: best 32-128 rows)
BOUNDS = Array("bounds", "bounds")


class Env:
    """Positions resolved so far (per sparse access and level) and presence guards."""

    def __init__(self, pos=None, guard=None, bound=(), tile_open=False, tn=None, registers=True):
        self.pos = dict(pos or {})
        self.guard = dict(guard or {})
        self.bound = tuple(bound)
        self.tile_open = tile_open
        self.tn = tn if tn is not None else Var("tn")  # the current tile width: TILE on the full-tile fast path
        self.registers = registers  # register tiles allowed (off on the narrow-remainder path)
        self.lets: tuple = ()  # position locates to emit at the top of the loop that bound them

    def child(self, **kw) -> "Env":
        e = Env(self.pos, self.guard, self.bound, self.tile_open, self.tn, self.registers)
        for k, v in kw.items():
            setattr(e, k, v)
        return e


class Lowerer(ReduceRules, ScalarRules):
    """Builds the ``Function``s of one kernel (two for an assembled output: count and compute)."""

    def __init__(self, sched, tile, params):
        self.s = sched
        self.tile = tile
        self.params = params
        self.level_of = level_of(sched.slots)
        self.ids = itertools.count()
        self.access_id = {a: n for n, a in enumerate(sched.slots)}
        self.ws: dict = {}
        self.buffers: list = []
        self.groups = softmax_groups(sched.stmt.expr)
        self.phase = "compute"
        self.elem = 4 if sched.value_dtype == "float32" else 8
        self.registers_used = False

    def slot(self, a: Access):
        return self.s.slots[a]

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    def pos_name(self, a: Access, k: int) -> str:
        return f"p{self.access_id[a]}_{k}"

    def parent(self, a: Access, env: Env, k: int):
        return Var(env.pos[a][-1]) if k else ZERO_I

    # ------------------------------------------------------------ entry
    def functions(self) -> list[Function]:
        fns = []
        if self.s.output == "assembled":
            self.phase = "count"
            fns.append(Function("count", list(self.params), self._body()))
            self.ws, self.buffers = {}, []
        self.phase = "compute"
        fns.append(Function("compute", list(self.params), self._body()))
        return fns

    def _body(self) -> tuple:
        env = Env()
        if not self.s.outer:
            body = self.emit_point(env)
            return (Parallel(tuple(body), tuple(self.buffers), threads=False),)
        loops = self.emit_outer(0, env)
        if self.tile is not None and self.tile.outer and self.phase == "compute":
            loops = (self.tile_loop(loops),)
        return (Parallel(tuple(loops), tuple(self.buffers)),)

    def tile_loop(self, body) -> For:
        v = self.tile.var
        width = Call("min", (TileWidth(), Bin("-", Size(v), Var("t0"), "int")), "int")
        return For("t0", ZERO_I, Size(v), (Let("int", "tn", width), *body), kind="tile", step=TileWidth())

    # ------------------------------------------------------------ outer loops
    def emit_outer(self, d: int, env: Env) -> tuple:
        s = self.s
        if d == len(s.outer):
            return self.emit_point(env)
        v = s.outer[d]
        f = domain(s.stmt.expr, v, self.level_of)
        assembled = s.output == "assembled" and d == len(s.outer) - 1

        def inside(env2: Env) -> tuple:
            pre = ()
            if assembled:
                if self.phase == "count":
                    return (Assign(Var("cnt"), "+=", ONE_I),)
                pre = (Let("int", "q", Bump("qn")), Assign(Load(Array("out", "crd"), Var("q")), "=", ivar(v)))
            ready = () if self.phase == "count" else self.emit_ready(s.stmt.expr, env2, final=False)
            return (*pre, *ready, *self.emit_outer(d + 1, env2))

        loop = self.emit_loop(v, f, env, s.stmt.expr, inside, parallel=(d == 0))
        if not assembled:
            return loop
        row, out_pos = ivar(s.outer[0]), Array("out", "pos")
        if self.phase == "count":
            return (Decl("int", "cnt", ZERO_I), *loop,
                    Assign(Load(out_pos, Bin("+", row, ONE_I, "int")), "=", Var("cnt")))
        return (Decl("int", "qn", Load(out_pos, row)), *loop)

    # ------------------------------------------------------------ loops over one index
    def emit_loop(self, v: str, f, env: Env, scope: Expr, inside, parallel=False) -> tuple:
        """Loops binding index ``v`` over domain ``f``; ``inside(env)`` builds the body."""
        accs = self.sparse_accesses_on(scope, v, env)
        if parallel and f != FULL:
            raise NotSupported(f"the parallel loop over {v} would iterate a compressed level; convert "
                               "the operand to CSR/CSC")
        if f[0] in ("full", "walk"):
            return self.full_loop(v, f, env, accs, inside, parallel)
        if f[0] == "it":
            return self.position_loop(v, f[1], env, scope, accs, inside)
        its = iterators(f)
        walkers = [self.walker(a, env) for a in its]
        flags = {a: Var(w.flag) for a, w in zip(its, walkers)}
        guard = {a: w.flag for a, w in zip(its, walkers) if not _implied(f, a)}
        env2 = self.bind(v, env, accs, {a: w.p for a, w in zip(its, walkers)}, guard)
        live = _formula(f, {a: Cmp("<", Var(w.p), Var(w.end)) for a, w in zip(its, walkers)})
        pre = [x for w in walkers for x in self.walker_init(w)]
        return (*pre, Merge(vname(v), tuple(walkers), live, _formula(f, flags), (*env2.lets, *inside(env2))))

    def full_loop(self, v: str, f, env: Env, accs, inside, parallel: bool) -> tuple:
        walkers = [self.walker(a, env) for a in iterators(f)]
        pre = [x for w in walkers for x in self.walker_init(w)]
        guard = {a: w.flag for a, w in zip(iterators(f), walkers)}
        env2 = self.bind(v, env, accs, {a: w.p for a, w in zip(iterators(f), walkers)}, guard)
        body = (*env2.lets, *inside(env2))
        if parallel:
            part = Var("part")
            inner = For(vname(v), Load(BOUNDS, part), Load(BOUNDS, Bin("+", part, ONE_I, "int")), body)
            return (For("part", ZERO_I, Var("nparts"), (inner,), kind="parts"),)
        return (*pre, For(vname(v), ZERO_I, Size(v), body, walkers=tuple(walkers)))

    def position_loop(self, v: str, a: Access, env: Env, scope: Expr, accs, inside) -> tuple:
        k = len(env.pos.get(a, ()))
        sl = self.slot(a)
        p = self.pos_name(a, k)
        env2 = self.bind(v, env, accs, {a: p}, {})
        limit = None
        if k == 1 and sl.format.levels[0].has_locate:  # the level holds pos1[N] nonzeros
            limit = Load(Array(sl.key, "pos", 1), Size(sl.level_vars(a)[0]))
        level = Level(sl.key, k, self.parent(a, env, k))
        return (PosFor(p, level, vname(v), (*env2.lets, *inside(env2)), self.prefetches(scope, v, env, limit)),)

    def prefetches(self, scope: Expr, v: str, env: Env, limit=None) -> tuple:
        """Prefetch the dense rows ``X[v, ...]`` a reduction gathers, when the tile asks for it."""
        if self.tile is None or not self.tile.prefetch or v in self.s.stmt.idx:
            return ()
        out = []
        for a in accesses_in(scope):
            sl = self.slot(a)
            if sl.sparse or a.idx[0] != v or len(a.idx) < 2:
                continue
            rest = a.idx[1:]
            row = product_of(Size(x) for x in rest)
            tiled = rest[-1] == self.tile.var and len(rest) == 1
            pf = Prefetch(Array(sl.key, "dense"), row, Var("t0") if tiled else ZERO_I, env.tn if tiled else row,
                          PREFETCH_LINES, limit)
            if pf not in out:
                out.append(pf)
        return tuple(out)

    def walker(self, a: Access, env: Env) -> Walker:
        k = len(env.pos.get(a, ()))
        p = self.pos_name(a, k)
        return Walker(p, f"{p}_end", f"in_{p}", Level(self.slot(a).key, k, self.parent(a, env, k)))

    @staticmethod
    def walker_init(w: Walker) -> tuple:
        pos = Array(w.level.operand, "pos", w.level.level)
        return (Decl("int", w.p, Load(pos, w.level.parent)),
                Let("int", w.end, Load(pos, Bin("+", w.level.parent, ONE_I, "int"))))

    def sparse_accesses_on(self, scope: Expr, v: str, env: Env) -> list[Access]:
        out = []
        for a in accesses_in(scope):
            if self.slot(a).sparse and a not in out:
                lv = self.slot(a).level_vars(a)
                k = len(env.pos.get(a, ()))
                if k < len(lv) and lv[k] == v:
                    out.append(a)
        return out

    def bind(self, v: str, env: Env, accs, iterated: dict, guard: dict) -> Env:
        """Resolve the level of each access that stores ``v``: iterated, or located."""
        env2 = env.child(bound=env.bound + (v,))
        pre = []
        for a in accs:
            sl = self.slot(a)
            k = len(env.pos.get(a, ()))
            if a in iterated:
                env2.pos[a] = env.pos.get(a, ()) + (iterated[a],)
            elif sl.format.levels[k].has_locate:
                name = self.pos_name(a, k)
                dim = Size(sl.level_vars(a)[k])
                pre.append(Let("int", name, Locate(sl.key, k, self.parent(a, env, k), dim, ivar(v))))
                env2.pos[a] = env.pos.get(a, ()) + (name,)
            else:
                raise InternalError(f"{a}: level {k} cannot locate and is not iterated by the loop over {v}")
            if a in guard:
                env2.guard[a] = guard[a]
        env2.lets = tuple(pre)
        return env2


def _implied(f, a) -> bool:
    """Whether the domain formula ``f`` can only hold where iterator ``a`` is present."""
    if f[0] == "it":
        return f[1] == a
    if f[0] == "and":
        return any(_implied(x, a) for x in f[1])
    if f[0] == "or":
        return all(_implied(x, a) for x in f[1])
    return False


def _formula(f, leaves: dict):
    """A merge's condition (an ``and`` / ``or`` formula never holds a ``walk``: ``domains`` folds it)."""
    if f[0] == "it":
        return leaves[f[1]]
    if f[0] in ("and", "or"):
        return Logic(f[0], tuple(_formula(x, leaves) for x in f[1]))
    raise InternalError(f"formula {f}")


def lower(sched, tile, params) -> list[Function]:
    """The kernel's functions (``compute``; plus ``count`` for an assembled output)."""
    return Lowerer(sched, tile, params).functions()
