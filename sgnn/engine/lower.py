"""Lowering: a ``Schedule`` becomes loop IR (``loopir``), one rule per construct.

- a dense index with a full domain → ``For`` over ``0 .. N`` (walking any sparse level it unites with)
- one sparse iterator → ``PosFor`` over ``pos[parent] .. pos[parent+1]``
- several iterators → ``Merge`` (intersection for products, union for sums)
- a dense level of a sparse operand → ``Let p = parent * N + i`` (locate), never a search
- a reduction → a ``Workspace`` over the dense output indices it depends on, filled by its own
  nest below the outer loops and read by the epilogue that writes the output
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..errors import InternalError, NotSupported
from .expr import Access, BinOp, Call, Const, Expr, Pattern, Reduce
from .loopir import (Assign, Comment, Decl, For, Function, If, Intrinsic, Let, Merge, Parallel, PosFor, Prefetch,
                     Walker, Workspace)
from .fusion import softmax_groups
from .rewrite import factors, product
from .schedule import FULL, Schedule, Tile, _level_of, domain, iterators, reduces

FUSE_SOFTMAX = True  # online softmax (one pass) instead of three passes per row
# Row softmax in two passes (maximum, then one exp per entry) instead of one online pass that rescales
# its accumulators whenever the maximum grows (a data-dependent branch and a second exp).
SOFTMAX_TWO_PASS = True
PREFETCH_LINES = 128  # cache lines of gathered rows kept in flight (prefetched into L2)
IDENTITY = {"sum": "T(0)", "max": "-SG_INF", "min": "SG_INF"}
ASSIGN_OP = {"sum": "+=", "max": "max=", "min": "min="}


@dataclass(frozen=True)
class CVar(Expr):
    """A value already computed into a C variable (a hoisted factor)."""

    name: str

    @property
    def free(self):
        return frozenset()


def var(v: str) -> str:
    return f"v_{v}"


def size(v: str) -> str:
    return f"N_{v}"


class Env:
    """Positions resolved so far (per sparse access and level) and presence guards."""

    def __init__(self, pos=None, guard=None, bound=(), tile_open=False, tn="tn", registers=True):
        self.pos = dict(pos or {})
        self.guard = dict(guard or {})
        self.bound = tuple(bound)
        self.tile_open = tile_open
        self.tn = tn  # the current tile width: "TILE" on the full-tile fast path
        self.registers = registers  # register tiles allowed (off on the narrow-remainder path)
        self.lets: tuple = ()  # position locates to emit at the top of the loop that bound them

    def child(self, **kw) -> "Env":
        e = Env(self.pos, self.guard, self.bound, self.tile_open, self.tn, self.registers)
        for k, v in kw.items():
            setattr(e, k, v)
        return e


class Lowerer:
    """Builds the ``Function``s of one kernel (two for an assembled output: count and compute)."""

    def __init__(self, sched: Schedule, tile: Tile | None, index_ctypes: dict):
        self.s = sched
        self.tile = tile
        self.level_of = _level_of(sched.slots)
        self.ids = itertools.count()
        self.access_id = {a: n for n, a in enumerate(sched.slots)}
        self.index_ctypes = index_ctypes  # slot key -> C index type
        self.ws: dict = {}
        self.buffers: list = []
        self.groups = softmax_groups(sched.stmt.expr) if FUSE_SOFTMAX else {}
        self.phase = "compute"
        self.elem = 4 if sched.value_dtype == "float32" else 8
        self.sty = "S" if sched.storage_dtype else "T"  # operands' element type (S: narrow storage)
        self.registers_used = False

    # ------------------------------------------------------------ names
    def slot(self, a: Access):
        return self.s.slots[a]

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    def pos_name(self, a: Access, k: int) -> str:
        return f"p{self.access_id[a]}_{k}"

    # ------------------------------------------------------------ parameters (the ABI)
    def params(self) -> list[tuple[str, str]]:
        """(name, ctype) of every kernel argument, in order: sizes, operands, output, parallel."""
        s = self.s
        ps = [(size(v), "int64_t") for v in all_vars(s)]
        seen = set()
        for a, sl in s.slots.items():
            if sl.key in seen:
                continue
            seen.add(sl.key)
            if not sl.sparse:
                ps.append((sl.key, f"const {self.sty}*"))
                continue
            it = self.index_ctypes[sl.key]
            for k, lv in enumerate(sl.format.levels):
                if lv.has_pos:
                    ps.append((f"{sl.key}_pos{k}", f"const {it}*"))
                if lv.has_crd:
                    ps.append((f"{sl.key}_crd{k}", f"const {it}*"))
            if sl.info.value_dtype is not None:
                ps.append((f"{sl.key}_val", f"const {self.sty}*"))
        out = f"{self.sty}*"  # written once per element (the epilogue): narrow outputs round there
        if s.output == "dense":
            ps.append(("out", out))
        elif s.output == "sampled":
            ps.append(("out_val", out))
        else:
            ps += [("out_pos", "int64_t*"), ("out_crd", "int64_t*"), ("out_val", out)]
        ps += [("bounds", "const int64_t*"), ("nparts", "int64_t"), ("nthreads", "int32_t")]
        return ps

    # ------------------------------------------------------------ entry
    def functions(self) -> list[Function]:
        fns = []
        if self.s.output == "assembled":
            self.phase = "count"
            fns.append(Function("count", self.params(), self._body()))
            self.ws, self.buffers = {}, []
        self.phase = "compute"
        fns.append(Function("compute", self.params(), self._body()))
        return fns

    def _body(self) -> tuple:
        s = self.s
        env = Env()
        if not s.outer:
            body = self.emit_point(env)
            return (Parallel(tuple(body), tuple(self.buffers), threads=False),)
        loops = self.emit_outer(0, env)
        if self.tile is not None and self.tile.outer and self.phase == "compute":
            loops = (self.tile_loop(loops),)
        return (Parallel(tuple(loops), tuple(self.buffers)),)

    def tile_loop(self, body) -> For:
        t = self.tile
        return For("t0", "0", size(t.var), (Let("int64_t", "tn", f"sg::min<int64_t>(TILE, {size(t.var)} - t0)"),
                                             *body), kind="tile", step="TILE")

    # ------------------------------------------------------------ outer loops
    def emit_outer(self, d: int, env: Env) -> tuple:
        s = self.s
        if d == len(s.outer):
            return self.emit_point(env)
        v = s.outer[d]
        f = domain(s.stmt.expr, v, self.level_of)
        last = d == len(s.outer) - 1
        assembled = s.output == "assembled" and last

        def inside(env2: Env) -> tuple:
            pre = ()
            if assembled:
                if self.phase == "count":
                    return (Assign("cnt", "+=", "1"),)
                pre = (Let("int64_t", "q", "qn++"), Assign("out_crd[q]", "=", var(v)))
            ready = () if self.phase == "count" else self.emit_ready(s.stmt.expr, env2, final=False)
            return (*pre, *ready, *self.emit_outer(d + 1, env2))

        loop = self.emit_loop(v, f, env, s.stmt.expr, inside, parallel=(d == 0))
        if not assembled:
            return loop
        row = var(s.outer[0])
        if self.phase == "count":
            return (Decl("int64_t", "cnt", "0"), *loop, Assign(f"out_pos[{row} + 1]", "=", "cnt"))
        return (Decl("int64_t", "qn", f"out_pos[{row}]"), *loop)

    # ------------------------------------------------------------ loops over one index
    def emit_loop(self, v: str, f, env: Env, scope: Expr, inside, parallel=False) -> tuple:
        """Loops binding index ``v`` over domain ``f``; ``inside(env)`` builds the body."""
        accs = self.sparse_accesses_on(scope, v, env)
        if parallel and f != FULL:
            raise NotSupported(f"the parallel loop over {v} would iterate a compressed level; convert "
                               "the operand to CSR/CSC")

        def body_of(env2: Env) -> tuple:
            return (*env2.lets, *inside(env2))
        if f[0] in ("full", "walk"):
            walkers = []
            pre = []
            for a in iterators(f):
                w = self.walker(a, env)
                walkers.append(w)
                pre += [Decl("int64_t", w.p, w.lo), Let("int64_t", w.end, w.hi)]
            guard = {a: w.flag for a, w in zip(iterators(f), walkers)}
            env2 = self.bind(v, env, accs, {a: w.p for a, w in zip(iterators(f), walkers)}, guard)
            body = body_of(env2)
            if parallel:
                inner = For(var(v), "bounds[part]", "bounds[part + 1]", body)
                return (For("part", "0", "nparts", (inner,), kind="parts"),)
            return (*pre, For(var(v), "0", size(v), body, walkers=tuple(walkers)))
        if f[0] == "it":
            a = f[1]
            k = len(env.pos.get(a, ()))
            sl = self.slot(a)
            parent = env.pos[a][-1] if k else "0"
            p = self.pos_name(a, k)
            lo, hi = f"{sl.key}_pos{k}[{parent}]", f"{sl.key}_pos{k}[{parent} + 1]"
            env2 = self.bind(v, env, accs, {a: p}, {})
            limit = ""
            if k == 1 and sl.format.levels[0].kind == "dense":  # the level holds pos1[N] nonzeros
                limit = f"{sl.key}_pos1[{size(sl.level_vars(a)[0])}]"
            return (PosFor(p, lo, hi, var(v), f"{sl.key}_crd{k}", body_of(env2),
                           self.prefetches(scope, v, env, limit)),)
        its = iterators(f)
        walkers = [self.walker(a, env) for a in its]
        flags = {a: w.flag for a, w in zip(its, walkers)}
        pre = [x for w in walkers for x in (Decl("int64_t", w.p, w.lo), Let("int64_t", w.end, w.hi))]
        guard = {a: flags[a] for a in its if not _implied(f, a)}
        env2 = self.bind(v, env, accs, {a: w.p for a, w in zip(its, walkers)}, guard)
        live = _formula(f, {a: f"({w.p} < {w.end})" for a, w in zip(its, walkers)})
        cond = _formula(f, flags)
        return (*pre, Merge(var(v), tuple(walkers), live, cond, body_of(env2)))

    def prefetches(self, scope: Expr, v: str, env: Env, limit: str = "") -> tuple:
        """Prefetch the dense rows ``X[v, ...]`` a reduction gathers, when the schedule asks for it."""
        if self.tile is None or not self.tile.prefetch or v in self.s.stmt.idx:
            return ()
        out = []
        for a in _accesses(scope):
            sl = self.slot(a)
            if sl.sparse or a.idx[0] != v or len(a.idx) < 2:
                continue
            rest = a.idx[1:]
            row = " * ".join(size(x) for x in rest)
            tiled = self.tile is not None and rest[-1] == self.tile.var
            offset = "t0" if tiled and len(rest) == 1 else "0"
            width = f"{env.tn}" if tiled and len(rest) == 1 else row
            nbytes = f"sg::min<int64_t>(({width}) * sizeof({self.sty}), 512)"
            pf = Prefetch(sl.key, row, offset, nbytes, PREFETCH_LINES, limit)
            if pf not in out:
                out.append(pf)
        return tuple(out)

    def walker(self, a: Access, env: Env) -> Walker:
        sl = self.slot(a)
        k = len(env.pos.get(a, ()))
        parent = env.pos[a][-1] if k else "0"
        p = self.pos_name(a, k)
        return Walker(p, f"{p}_end", f"{sl.key}_pos{k}[{parent}]", f"{sl.key}_pos{k}[{parent} + 1]",
                      f"{sl.key}_crd{k}", f"in_{p}")

    def sparse_accesses_on(self, scope: Expr, v: str, env: Env) -> list[Access]:
        out = []
        for a in _accesses(scope):
            if self.slot(a).sparse and a not in out:
                lv = self.slot(a).level_vars(a)
                k = len(env.pos.get(a, ()))
                if k < len(lv) and lv[k] == v:
                    out.append(a)
        return out

    def bind(self, v: str, env: Env, accs, iterated: dict, guard: dict) -> Env:
        """Resolve the level of each access that stores ``v``: iterated, or located (dense)."""
        env2 = env.child(bound=env.bound + (v,))
        pre = []
        for a in accs:
            sl = self.slot(a)
            k = len(env.pos.get(a, ()))
            if a in iterated:
                env2.pos[a] = env.pos.get(a, ()) + (iterated[a],)
            elif sl.format.levels[k].kind == "dense":
                parent = env.pos[a][-1] if k else "0"
                name = self.pos_name(a, k)
                dim = size(sl.level_vars(a)[k])
                pre.append(Let("int64_t", name, f"{parent} * {dim} + {var(v)}" if k else var(v)))
                env2.pos[a] = env.pos.get(a, ()) + (name,)
            else:
                raise InternalError(f"{a}: level {k} is compressed but not iterated by the loop over {v}")
            if a in guard:
                env2.guard[a] = guard[a]
        env2.lets = tuple(pre)
        return env2

    # ------------------------------------------------------------ the point below the outer loops
    def emit_point(self, env: Env) -> tuple:
        t = self.tile
        if t is None:
            env2 = env.child(tile_open=True)
            return (*self.emit_ready(self.s.stmt.expr, env2, final=True), *self.epilogue(env2))
        before = self.emit_ready(self.s.stmt.expr, env, final=False)
        saved = dict(self.ws)

        def tile_body(tn: str, registers: bool = True) -> tuple:
            self.ws = dict(saved)
            self.registers_used = False
            env2 = env.child(tile_open=True, tn=tn, registers=registers)
            return (*self.emit_ready(self.s.stmt.expr, env2, final=True), *self.epilogue(env2))

        full = tile_body("TILE")  # the fast path: a constant trip count keeps accumulators in registers
        partial = tile_body("tn")  # a bucketed width or the rest of a wide one: bounded register tile
        if self.registers_used and t.size * self.elem > 64:  # a narrow rest of a wide tile: a plain loop
            partial = (If("2 * tn > TILE", partial, tile_body("tn", registers=False)),)
        split = If("tn == TILE", full, partial)
        if t.outer:
            return (*before, split)
        loop = For("t0", "0", size(t.var), (
            Let("int64_t", "tn", f"sg::min<int64_t>(TILE, {size(t.var)} - t0)"), split),
            kind="tile", step="TILE")
        return (*before, loop)

    def emit_ready(self, scope: Expr, env: Env, final: bool) -> tuple:
        """Workspaces of the reductions whose outer indices are now bound (inner ones first)."""
        out = []
        for r in reduces(scope):
            if r in self.ws:
                continue
            need = set(r.free) - set(self.s.inner)
            if not need <= set(env.bound):
                continue
            uses_tile = self.tile is not None and self.tile.var in r.free
            if uses_tile and not env.tile_open:
                continue
            g = self.groups.get(r)
            if g is not None and self.fusable(g):
                if r is not g.acc and r != g.acc:
                    continue  # m and z are computed in acc's single pass
                out += self.emit_softmax_group(g, env)
                continue
            if any(isinstance(x, Reduce) and x not in self.ws and x is not r for x in reduces(r.body)):
                continue
            out += self.emit_reduce(r, env)
        return tuple(out)

    def fusable(self, g) -> bool:
        order = self.s.reduce_order
        dm, da = self.ws_dims(g.m), self.ws_dims(g.acc)
        return (order[g.acc] == order[g.m] == order[g.z] and len(order[g.acc]) == 1 and da[:len(dm)] == dm
                and self.ws_dims(g.z) == dm and g.m not in self.ws and g.z not in self.ws)

    def declare(self, name: str, dims, env) -> list:
        """A workspace: registers when its size is a constant, else a per-thread buffer."""
        sz = " * ".join(self.extent(w, env) for w in dims) or "1"
        if any(self.extent(w, env) != "TILE" for w in dims):
            self.buffers.append(Workspace("T", name, sz, heap=True))
            return []
        return [Workspace("T", name, sz)]

    def emit_softmax_group(self, g, env: Env) -> list:
        """Max, normaliser and weighted sum of a row softmax: two passes over the row (the maximum
        first, then ``exp(s - m)`` once per entry), or one online pass (``SOFTMAX_TWO_PASS=False``)."""
        dm, da = self.ws_dims(g.m), self.ws_dims(g.acc)
        wm, wz, wa = self.fresh("ws"), self.fresh("ws"), self.fresh("ws")
        out = self.declare(wm, dm, env) + self.declare(wz, dm, env) + self.declare(wa, da, env)
        m_ref, z_ref = f"{wm}[{self.ws_index(dm, env)}]", f"{wz}[{self.ws_index(dm, env)}]"
        a_ref = f"{wa}[{self.ws_index(da, env)}]"
        out += self.dense_nest(dm, env, lambda e: (Assign(m_ref, "=", IDENTITY["max"]), Assign(z_ref, "=", "T(0)")))
        out += self.dense_nest(da, env, lambda e: (Assign(a_ref, "=", "T(0)"),))
        (j,) = self.s.reduce_order[g.acc]
        rest_dims = da[len(dm):]
        rest = product(list(g.rest))
        dom = domain(g.acc.body, j, self.level_of)

        def accumulate(e: Env, w: str) -> list:
            return self.dense_nest(rest_dims, e, lambda e2: (Assign(a_ref, "+=", f"{w} * {self.render(rest, e2)}"),))

        def online(e: Env) -> tuple:
            s_, sc, w = self.fresh("s"), self.fresh("sc"), self.fresh("w")
            rescale = self.dense_nest(rest_dims, e, lambda e2: (Assign(a_ref, "*=", sc),))
            return (Let("T", s_, self.render(g.score, e)),
                    If(f"{s_} > {m_ref}", (Let("T", sc, f"sg::exp<T>({m_ref} - {s_})"),
                                           Assign(z_ref, "*=", sc), *rescale, Assign(m_ref, "=", s_))),
                    Let("T", w, f"sg::exp<T>({s_} - {m_ref})"), Assign(z_ref, "+=", w), *accumulate(e, w))

        def row_max(e: Env) -> tuple:
            s_ = self.fresh("s")
            return (Let("T", s_, self.render(g.score, e)),
                    Assign(m_ref, "=", f"({s_} > {m_ref}) ? {s_} : {m_ref}"))

        def weigh(e: Env) -> tuple:
            w = self.fresh("w")
            return (Let("T", w, f"sg::exp<T>({self.render(g.score, e)} - {m_ref})"), Assign(z_ref, "+=", w),
                    *accumulate(e, w))

        fix = self.dense_nest(dm, env, lambda e: (Assign(m_ref, "=", f"({m_ref} == -SG_INF) ? T(0) : {m_ref}"),))
        if SOFTMAX_TWO_PASS:
            out += self.emit_loop(j, dom, env, g.acc.body, lambda e: self.dense_nest(dm, e, row_max))
            out += fix
            out += self.emit_loop(j, dom, env, g.acc.body, lambda e: self.dense_nest(dm, e, weigh))
        else:
            out += self.emit_loop(j, dom, env, g.acc.body, lambda e: self.dense_nest(dm, e, online))
            out += fix
        self.ws[g.m], self.ws[g.z] = (wm, dm), (wz, dm)
        self.ws[g.acc] = (wa, da, (wz, dm))
        return out

    # ------------------------------------------------------------ reductions
    def ws_dims(self, r: Reduce) -> list[str]:
        return [w for w in self.s.inner if w in r.free]

    def extent(self, w: str, env: Env) -> str:
        return "TILE" if self.tile is not None and w == self.tile.var else size(w)

    def ws_index(self, dims, env) -> str:
        idx = "0"
        for w in dims:
            here = "cc" if self.tile is not None and w == self.tile.var else var(w)
            idx = here if idx == "0" else f"({idx}) * {self.extent(w, env)} + {here}"
        return idx

    def register_tile(self, r: Reduce, env: Env):
        """(scalar factors, gathered access) when ``r`` is ``sum_j s * X[.., tile]`` with a tile of
        whole vectors: it then accumulates in vector registers (``sg::Tile``). On the partial-tile
        path (``tn < TILE``: a bucketed width, the rest of a wide one) the loads are bounded by the
        end of X and the epilogue stores only ``tn`` lanes."""
        t = self.tile
        if t is None or not env.registers or r.op != "sum" or self.ws_dims(r) != [t.var]:
            return None
        if (t.size * self.elem) % 64 or t.size * self.elem > 1024:
            return None
        fs = factors(r.body)
        lane = [f for f in fs if t.var in f.free]
        if len(lane) != 1 or not isinstance(lane[0], Access) or self.slot(lane[0]).sparse:
            return None
        x = lane[0]
        if x.idx[-1] != t.var or x.idx.count(t.var) != 1:
            return None
        return [f for f in fs if f is not x], x

    def emit_register_reduce(self, r: Reduce, env: Env, scalars, x: Access) -> list:
        self.registers_used = True
        name = self.fresh("ws")
        acc = f"{name}_r"
        self.ws[r] = (name, [self.tile.var])
        out = [Intrinsic(f"sg::Tile<T, TILE> {acc}"), Intrinsic(f"sg::tile_zero({acc})")]
        tv = self.tile.var

        end = f"{self.slot(x).key} + " + " * ".join(size(v) for v in x.idx)  # one past X's last element

        def leaf(e: Env) -> tuple:
            row = self.render(x, e)  # X[... + v_tile] with v_tile bound to the tile start below
            h = self.render(product(scalars), e)
            axpy = (f"sg::tile_axpy({acc}, {h}, &{row})" if env.tn == "TILE" else
                    f"sg::tile_axpy_bounded({acc}, {h}, &{row}, {end})")
            return (Let("int64_t", var(tv), "t0"), Intrinsic(axpy))
        out += self.reduce_nest(r, list(self.s.reduce_order[r]), 0, env, product(scalars), None, None, leaf)
        out += [Workspace("T", name, "TILE"), Intrinsic(f"sg::tile_spill({acc}, {name})")]
        return out

    def emit_reduce(self, r: Reduce, env: Env) -> list:
        reg = self.register_tile(r, env)
        if reg is not None:
            return self.emit_register_reduce(r, env, *reg)
        dims = self.ws_dims(r)
        name = self.fresh("ws")
        heap = any(self.extent(w, env) != "TILE" for w in dims)
        sz = " * ".join(self.extent(w, env) for w in dims) or "1"
        self.ws[r] = (name, dims)
        out: list = []
        if heap:
            self.buffers.append(Workspace("T", name, sz, heap=True))
        else:
            out.append(Workspace("T", name, sz))
        ref = f"{name}[{self.ws_index(dims, env)}]"
        out += self.dense_nest(dims, env, lambda e: (Assign(ref, "=", IDENTITY[r.op]),))
        order = list(self.s.reduce_order[r]) + dims
        op = ASSIGN_OP[r.op]
        out += self.reduce_nest(r, order, 0, env, r.body, ref, op)
        if r.op in ("max", "min"):  # an empty max is 0 (PyG's value for a node without neighbours)
            inf = IDENTITY[r.op]
            out += self.dense_nest(dims, env, lambda e: (Assign(ref, "=", f"({ref} == {inf}) ? T(0) : {ref}"),))
        return out

    def reduce_nest(self, r, order, k, env, body, ref, op, leaf=None) -> tuple:
        if k == len(order):
            if leaf is not None:
                return leaf(env)
            return (Assign(ref, op, self.render(body, env)),)
        v = order[k]
        body, lets = self.hoist(body, set(env.bound) | {v}, order[k + 1:], env, v)
        is_dim = v in self.s.inner

        def inside(env2: Env) -> tuple:
            ready = self.emit_ready(r.body, env2, final=True) if not is_dim else ()
            hoisted = tuple(Let("T", n, self.render(e, env2)) for n, e in lets)
            return (*ready, *hoisted, *self.reduce_nest(r, order, k + 1, env2, body, ref, op, leaf))

        if is_dim:
            return self.dense_loop(v, env, lambda e2: inside(e2), innermost=(k == len(order) - 1))
        f = domain(r.body, v, self.level_of)
        if k == len(order) - 1 and f == FULL and not self.ws_dims(r):
            clause = {"+=": "+", "max=": "max", "min=": "min"}[op]
            env2 = self.bind(v, env, self.sparse_accesses_on(r.body, v, env), {}, {})
            scalar = ref.split("[")[0] + "_acc"
            inner = (*env2.lets, *tuple(Let("T", n, self.render(e, env2)) for n, e in lets),
                     Assign(scalar, op, self.render(body, env2)))
            return (Decl("T", scalar, ref),
                    For(var(v), "0", size(v), inner, kind="simd", reduction=f"{clause}:{scalar}"),
                    Assign(ref, "=", scalar))
        return self.emit_loop(v, f, env, r.body, inside)

    def hoist(self, body: Expr, bound_after: set, later: list, env: Env, v: str):
        """Split a product body: factors computable once ``v`` is bound become ``Let``s at this level."""
        if not later:
            return body, []
        fs = factors(body)
        here = [f for f in fs if _hoistable(f) and set(f.free) <= bound_after and not _is_ws_only(f, self)]
        if not here or len(here) == len(fs):
            return body, []
        name = self.fresh("h")
        rest = [f for f in fs if f not in here]
        return product([CVar(name)] + rest), [(name, product(here))]

    def dense_loop(self, w: str, env: Env, inside, innermost: bool) -> tuple:
        """A dense output index: a plain loop that locates any sparse access storing it densely."""
        accs = self.sparse_accesses_on(self.s.stmt.expr, w, env)
        env2 = self.bind(w, env, accs, {}, {})
        body = inside(env2)
        # SIMD only for a straight-line body: an outer loop with control flow inside does not vectorise
        kind = "simd" if innermost and not any(isinstance(n, (For, PosFor, Merge, If)) for n in body) else "serial"
        if self.tile is not None and w == self.tile.var:
            return (For("cc", "0", env.tn, (Let("int64_t", var(w), "t0 + cc"), *env2.lets, *body), kind=kind),)
        return (For(var(w), "0", size(w), (*env2.lets, *body), kind=kind),)

    def dense_nest(self, dims, env, leaf) -> tuple:
        if not dims:
            return leaf(env)

        def rec(k, e):
            if k == len(dims):
                return leaf(e)
            return self.dense_loop(dims[k], e, lambda e2: rec(k + 1, e2), innermost=(k == len(dims) - 1))
        return rec(0, env)

    # ------------------------------------------------------------ the output
    def epilogue(self, env: Env) -> tuple:
        s = self.s
        dims = list(s.inner)

        def leaf(e: Env):
            return (Assign(self.out_ref(e), "=", self.render(s.stmt.expr, e)),)
        return self.dense_nest(dims, env, leaf)

    def out_ref(self, env: Env) -> str:
        s = self.s
        if s.output == "dense":
            off = "0"
            for v in s.stmt.idx:
                off = var(v) if off == "0" else f"({off}) * {size(v)} + {var(v)}"
            return f"out[{off}]"
        base = env.pos[s.driver][-1] if s.output == "sampled" else "q"
        for w in s.inner:
            base = f"({base}) * {size(w)} + {var(w)}"
        return f"out_val[{base}]"

    # ------------------------------------------------------------ scalar expressions → C
    def render(self, e: Expr, env: Env) -> str:
        if isinstance(e, CVar):
            return e.name
        if isinstance(e, Const):
            return f"T({e.value!r})"
        if isinstance(e, Access):
            sl = self.slot(e)
            if not sl.sparse:
                off = "0"
                for v in e.idx:
                    off = var(v) if off == "0" else f"({off}) * {size(v)} + {var(v)}"
                return f"{sl.key}[{off}]"
            if e not in env.pos or len(env.pos[e]) != len(e.idx):
                raise InternalError(f"{e} read before all its levels are resolved")
            val = f"{sl.key}_val[{env.pos[e][-1]}]" if sl.info.value_dtype else "T(1)"
            return f"({env.guard[e]} ? {val} : T(0))" if e in env.guard else val
        if isinstance(e, Pattern):
            a = e.access
            return f"({env.guard[a]} ? T(1) : T(0))" if a in env.guard else "T(1)"
        if isinstance(e, Reduce):
            name, dims, *div = self.ws[e]
            ref = f"{name}[{self.ws_index(dims, env)}]"
            if div:  # an online-softmax sum: divide by its normaliser (0 for a row without entries)
                z = f"{div[0][0]}[{self.ws_index(div[0][1], env)}]"
                return f"({z} > T(0) ? {ref} / {z} : T(0))"
            return ref
        if isinstance(e, BinOp):
            a, b = self.render(e.a, env), self.render(e.b, env)
            if e.op in ("max", "min"):
                return f"sg::{e.op}<T>({a}, {b})"
            return f"({a} {e.op} {b})"
        if isinstance(e, Call):
            x = self.render(e.args[0], env)
            p = "" if e.param is None else f", T({e.param!r})"
            return f"sg::{e.fn}<T>({x}{p})"
        raise NotSupported(f"cannot render {type(e).__name__}")


def all_vars(s: Schedule) -> list[str]:
    vs = list(s.stmt.idx)
    for r in reduces(s.stmt.expr):
        vs += [v for v in r.idx if v not in vs]
    return vs


def _accesses(e: Expr) -> list[Access]:
    from .expr import walk
    return [x.access if isinstance(x, Pattern) else x for x in walk(e) if isinstance(x, (Access, Pattern))]


def _hoistable(e: Expr) -> bool:
    return not isinstance(e, (Const, CVar))


def _is_ws_only(e: Expr, low: Lowerer) -> bool:
    return False


def _implied(f, a) -> bool:
    """Whether the domain formula ``f`` can only hold where iterator ``a`` is present."""
    if f[0] == "it":
        return f[1] == a
    if f[0] == "and":
        return any(_implied(x, a) for x in f[1])
    if f[0] == "or":
        return all(_implied(x, a) for x in f[1])
    return False


def _formula(f, flags: dict) -> str:
    if f[0] == "it":
        return flags[f[1]]
    if f[0] in ("and", "or"):
        j = " && " if f[0] == "and" else " || "
        return "(" + j.join(_formula(x, flags) for x in f[1]) + ")"
    if f[0] == "walk":
        return "(" + " || ".join(flags[a] for a in f[1]) + ")"
    raise InternalError(f"formula {f}")


def lower(sched: Schedule, tile: Tile | None, index_ctypes: dict) -> tuple[list[Function], Lowerer]:
    """The kernel's functions (``compute``; plus ``count`` for an assembled output)."""
    low = Lowerer(sched, tile, index_ctypes)
    return low.functions(), low
