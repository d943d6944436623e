"""Lowering of reductions and of the point below the outer loops: workspaces, register tiles,
the row softmax, hoisted factors, dense output loops and the epilogue that writes the output.
"""
from __future__ import annotations

from dataclasses import dataclass

from .domains import FULL, domain, reduces
from .expr import Access, Const, Expr, Reduce, Softmax
from .loopir import (AddrOf, Array, Assign, Bin, Call, Cmp, Decl, For, If, Let, Lit, Merge, PosFor, Ptr, Select,
                     Size, TileAcc, TileAxpy, TileSpill, TileWidth, Var, Workspace)
from .lower_scalar import ZERO, ZERO_I, CVar, product_of, vname
from .rewrite import factors, product, softmax_terms

IDENTITY = {"sum": Lit(0), "max": Lit(float("-inf")), "min": Lit(float("inf"))}
ASSIGN_OP = {"sum": "+=", "max": "max=", "min": "min="}


@dataclass(frozen=True)
class SoftmaxGroup:
    """A softmax-weighted sum ``acc = sum_j softmax_j(score) * rest`` and the row reductions m, z."""

    acc: Reduce
    m: Reduce
    z: Reduce
    score: Expr
    rest: tuple


def softmax_groups(e: Expr) -> dict:
    """Every softmax-weighted sum in ``e`` (a sum over j with a factor ``softmax_j``), keyed by its
    three reductions."""
    out: dict = {}
    for r in reduces(e):
        if r.op != "sum":
            continue
        fs = factors(r.body)
        for n, f in enumerate(fs):
            if isinstance(f, Softmax) and (f.idx,) == r.idx:
                m, z, _ = softmax_terms(f)
                g = SoftmaxGroup(r, m, z, f.body, tuple(fs[:n] + fs[n + 1:]))
                for key in (r, m, z):
                    out.setdefault(key, g)
                break
    return out


class ReduceRules:
    """Mixin of ``Lowerer``: the point below the outer loops and every reduction."""

    # ------------------------------------------------------------ the point below the outer loops
    def emit_point(self, env) -> tuple:
        t = self.tile
        if t is None:
            env2 = env.child(tile_open=True)
            return (*self.emit_ready(self.s.stmt.expr, env2, final=True), *self.epilogue(env2))
        before = self.emit_ready(self.s.stmt.expr, env, final=False)
        saved = dict(self.ws)

        def tile_body(tn, registers: bool = True) -> tuple:
            self.ws = dict(saved)
            self.registers_used = False
            env2 = env.child(tile_open=True, tn=tn, registers=registers)
            return (*self.emit_ready(self.s.stmt.expr, env2, final=True), *self.epilogue(env2))

        tn = Var("tn")
        full = tile_body(TileWidth())  # the fast path: a constant trip count keeps accumulators in registers
        partial = tile_body(tn)  # a bucketed width or the rest of a wide one: bounded register tile
        if self.registers_used and t.size * self.elem > 64:  # a narrow rest of a wide tile: a plain loop
            partial = (If(Cmp(">", Bin("*", Lit(2, "int"), tn, "int"), TileWidth()), partial,
                          tile_body(tn, registers=False)),)
        split = If(Cmp("==", tn, TileWidth()), full, partial)
        if t.outer:
            return (*before, split)
        return (*before, self.tile_loop((split,)))

    def emit_ready(self, scope: Expr, env, final: bool) -> tuple:
        """Workspaces of the reductions whose outer indices are now bound (inner ones first)."""
        out = []
        for r in reduces(scope):
            if r in self.ws:
                continue
            need = set(r.free) - set(self.s.inner)
            if not need <= set(env.bound):
                continue
            if self.tile is not None and self.tile.var in r.free and not env.tile_open:
                continue
            g = self.groups.get(r)
            if g is not None and self.fusable(g):
                if r is g.acc or r == g.acc:  # m and z are computed in acc's passes
                    out += self.emit_softmax_group(g, env)
                continue
            if any(isinstance(x, Reduce) and x not in self.ws and x is not r for x in reduces(r.body)):
                continue
            out += self.emit_reduce(r, env)
        return tuple(out)

    # ------------------------------------------------------------ workspaces
    def ws_dims(self, r: Reduce) -> list[str]:
        return [w for w in self.s.inner if w in r.free]

    def declare(self, name: str, dims) -> list:
        """A workspace: registers when its size is a constant, else a per-thread buffer."""
        extents = [self.extent(w) for w in dims]
        ws = Workspace(name, product_of(extents), heap=any(not isinstance(x, TileWidth) for x in extents))
        if ws.heap:
            self.buffers.append(ws)
            return []
        return [ws]

    # ------------------------------------------------------------ the row softmax
    def fusable(self, g) -> bool:
        order = self.s.reduce_order
        dm, da = self.ws_dims(g.m), self.ws_dims(g.acc)
        return (order[g.acc] == order[g.m] == order[g.z] and len(order[g.acc]) == 1 and da[:len(dm)] == dm
                and self.ws_dims(g.z) == dm and g.m not in self.ws and g.z not in self.ws)

    def emit_softmax_group(self, g, env) -> list:
        """Max, normaliser and weighted sum of a row softmax in two passes over the row: the maximum
        first, then ``exp(s - m)`` once per entry, accumulated into the normaliser and the sum."""
        dm, da = self.ws_dims(g.m), self.ws_dims(g.acc)
        wm, wz, wa = self.fresh("ws"), self.fresh("ws"), self.fresh("ws")
        out = self.declare(wm, dm) + self.declare(wz, dm) + self.declare(wa, da)
        m_ref, z_ref, a_ref = self.ws_ref(wm, dm), self.ws_ref(wz, dm), self.ws_ref(wa, da)
        out += self.dense_nest(dm, env, lambda e: (Assign(m_ref, "=", IDENTITY["max"]), Assign(z_ref, "=", ZERO)))
        out += self.dense_nest(da, env, lambda e: (Assign(a_ref, "=", ZERO),))
        (j,) = self.s.reduce_order[g.acc]
        rest_dims = da[len(dm):]
        # factors constant across the rest's loop (a dropout mask keep[i,j,h]) weigh once per entry
        once = [f for f in g.rest if not f.free & set(rest_dims)]
        rest = product([f for f in g.rest if f.free & set(rest_dims)])
        dom = domain(g.acc.body, j, self.level_of)

        def row_max(e) -> tuple:
            s_ = self.fresh("s")
            return (Let("T", s_, self.render(g.score, e)), Assign(m_ref, "=", Select(Cmp(">", Var(s_), m_ref),
                                                                                   Var(s_), m_ref)))

        def weigh(e) -> tuple:
            w = self.fresh("w")
            wk = self.fresh("w") if once else w  # the weight times the once-factors (z sums w alone)
            acc = self.dense_nest(rest_dims, e, lambda e2: (
                Assign(a_ref, "+=", Bin("*", Var(wk), self.render(rest, e2))),))
            scaled = (Let("T", wk, Bin("*", Var(w), self.render(product(once), e))),) if once else ()
            return (Let("T", w, Call("exp", (Bin("-", self.render(g.score, e), m_ref),))),
                    Assign(z_ref, "+=", Var(w)), *scaled, *acc)

        fix = self.dense_nest(dm, env, lambda e: (
            Assign(m_ref, "=", Select(Cmp("==", m_ref, IDENTITY["max"]), ZERO, m_ref)),))
        out += self.emit_loop(j, dom, env, g.acc.body, lambda e: self.dense_nest(dm, e, row_max))
        out += fix
        out += self.emit_loop(j, dom, env, g.acc.body, lambda e: self.dense_nest(dm, e, weigh))
        self.ws[g.m], self.ws[g.z] = (wm, dm), (wz, dm)
        self.ws[g.acc] = (wa, da, (wz, dm))
        return out

    # ------------------------------------------------------------ register tiles
    def register_tile(self, r: Reduce, env):
        """(scalar factors, gathered access) when ``r`` is ``sum_j s * X[.., tile]`` with a tile of
        whole vectors: it then accumulates in vector registers. On the partial-tile path (``tn <
        TILE``: a bucketed width, the rest of a wide one) the loads are bounded by the end of X and
        the epilogue stores only ``tn`` lanes."""
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

    def emit_register_reduce(self, r: Reduce, env, scalars, x: Access) -> list:
        self.registers_used = True
        name = self.fresh("ws")
        acc, tv = f"{name}_r", self.tile.var
        self.ws[r] = (name, [tv])
        xs = Array(self.slot(x).key, "dense")
        end = None if isinstance(env.tn, TileWidth) else Ptr(xs, product_of(Size(v) for v in x.idx))

        def leaf(e) -> tuple:  # X[... + v_tile] with v_tile bound to the tile start
            return (Let("int", vname(tv), Var("t0")),
                    TileAxpy(acc, self.render(product(scalars), e), AddrOf(self.render(x, e)), end))
        out = [TileAcc(acc)]
        out += self.reduce_nest(r, list(self.s.reduce_order[r]), 0, env, product(scalars), None, None, leaf)
        return out + [Workspace(name, TileWidth()), TileSpill(acc, name)]

    # ------------------------------------------------------------ reductions
    def emit_reduce(self, r: Reduce, env) -> list:
        reg = self.register_tile(r, env)
        if reg is not None:
            return self.emit_register_reduce(r, env, *reg)
        dims = self.ws_dims(r)
        name = self.fresh("ws")
        self.ws[r] = (name, dims)
        out = self.declare(name, dims)
        ref = self.ws_ref(name, dims)
        out += self.dense_nest(dims, env, lambda e: (Assign(ref, "=", IDENTITY[r.op]),))
        out += self.reduce_nest(r, list(self.s.reduce_order[r]) + dims, 0, env, r.body, ref, ASSIGN_OP[r.op])
        if r.op in ("max", "min"):  # an empty max is 0 (PyG's value for a node without neighbours)
            out += self.dense_nest(dims, env, lambda e: (
                Assign(ref, "=", Select(Cmp("==", ref, IDENTITY[r.op]), ZERO, ref)),))
        return out

    def reduce_nest(self, r, order, k, env, body, ref, op, leaf=None) -> tuple:
        if k == len(order):
            return leaf(env) if leaf is not None else (Assign(ref, op, self.render(body, env)),)
        v = order[k]
        body, lets = self.hoist(body, set(env.bound) | {v}, order[k + 1:])
        is_dim = v in self.s.inner

        def inside(env2) -> tuple:
            ready = self.emit_ready(r.body, env2, final=True) if not is_dim else ()
            hoisted = tuple(Let("T", n, self.render(e, env2)) for n, e in lets)
            return (*ready, *hoisted, *self.reduce_nest(r, order, k + 1, env2, body, ref, op, leaf))

        if is_dim:
            return self.dense_loop(v, env, inside, innermost=(k == len(order) - 1))
        f = domain(r.body, v, self.level_of)
        if k == len(order) - 1 and f == FULL and not self.ws_dims(r):
            return self.simd_reduce(r, v, env, body, lets, ref, op)
        return self.emit_loop(v, f, env, r.body, inside)

    def simd_reduce(self, r, v, env, body, lets, ref, op) -> tuple:
        """The innermost dense reduction to a scalar: a SIMD loop with a reduction clause."""
        env2 = self.bind(v, env, self.sparse_accesses_on(r.body, v, env), {}, {})
        scalar = ref.array.operand + "_acc"
        inner = (*env2.lets, *tuple(Let("T", n, self.render(e, env2)) for n, e in lets),
                 Assign(Var(scalar), op, self.render(body, env2)))
        return (Decl("T", scalar, ref), For(vname(v), ZERO_I, Size(v), inner, kind="simd", reduction=(r.op, scalar)),
                Assign(ref, "=", Var(scalar)))

    def hoist(self, body: Expr, bound_after: set, later: list):
        """Split a product body: factors computable once ``v`` is bound become ``Let``s at this level."""
        if not later:
            return body, []
        fs = factors(body)
        here = [f for f in fs if not isinstance(f, (Const, CVar)) and set(f.free) <= bound_after]
        if not here or len(here) == len(fs):
            return body, []
        name = self.fresh("h")
        rest = [f for f in fs if f not in here]
        return product([CVar(name)] + rest), [(name, product(here))]

    # ------------------------------------------------------------ dense output loops and the epilogue
    def dense_loop(self, w: str, env, inside, innermost: bool) -> tuple:
        """A dense output index: a plain loop that locates any sparse access storing it densely."""
        accs = self.sparse_accesses_on(self.s.stmt.expr, w, env)
        env2 = self.bind(w, env, accs, {}, {})
        body = inside(env2)
        # SIMD only for a straight-line body: an outer loop with control flow inside does not vectorise
        kind = "simd" if innermost and not any(isinstance(n, (For, PosFor, Merge, If)) for n in body) else "serial"
        if self.tile is not None and w == self.tile.var:
            start = Let("int", vname(w), Bin("+", Var("t0"), Var("cc"), "int"))
            return (For("cc", ZERO_I, env.tn, (start, *env2.lets, *body), kind=kind),)
        return (For(vname(w), ZERO_I, Size(w), (*env2.lets, *body), kind=kind),)

    def dense_nest(self, dims, env, leaf) -> tuple:
        def rec(k, e):
            if k == len(dims):
                return leaf(e)
            return self.dense_loop(dims[k], e, lambda e2: rec(k + 1, e2), innermost=(k == len(dims) - 1))
        return rec(0, env)

    def epilogue(self, env) -> tuple:
        return self.dense_nest(list(self.s.inner), env,
                               lambda e: (Assign(self.out_ref(e), "=", self.render(self.s.stmt.expr, e)),))
