"""Verification of loop IR, between lowering and codegen (on every kernel build).

Rejects, with an ``InternalError`` naming the node: a variable used before its definition or out
of its scope, a redefinition in one block, an assignment to an immutable scalar, an array that is
neither a kernel parameter nor a declared workspace, a write to a read-only operand, a level-k
position not derived from a level-(k-1) position of the same operand, a register-tile operation on
an undeclared accumulator, and a parallel region or parallel loop that is not outermost.
"""
from __future__ import annotations

from ..errors import InternalError
from .loopir import (AddrOf, Array, Assign, Bin, Bump, Call, Cmp, Decl, Flat, For, If, Let, Level, Lit, Load, Locate,
                     Logic, Merge, Parallel, PosFor, Ptr, Select, Size, TileAcc, TileAxpy, TileSpill,
                     TileWidth, Var, Workspace, show)


class Scope:
    """Names visible in one block: scalars (``const`` / ``mut``), positions, workspaces, tiles."""

    def __init__(self, parent: "Scope | None" = None):
        self.parent = parent
        self.names: dict[str, str] = {}  # name -> const | mut | ws | tile
        self.positions: dict[str, tuple] = {}  # position variable -> (operand, level)

    def find(self, name: str, table: str = "names"):
        """What ``name`` is in the innermost enclosing scope that has it (``table``: names | positions)."""
        s = self
        while s is not None:
            if name in getattr(s, table):
                return getattr(s, table)[name]
            s = s.parent
        return None

    def define(self, name: str, kind: str, node) -> None:
        if name in self.names:
            raise InternalError(f"loop IR: {name!r} is defined twice in one block, at {_show(node)}")
        self.names[name] = kind


def _show(node) -> str:
    try:
        return show([node]).splitlines()[0].strip()
    except (TypeError, AttributeError, IndexError):
        return type(node).__name__


class Verifier:
    def __init__(self, params):
        self.arrays = {p.array: p for p in params if p.kind == "array"}
        self.scalars = {p.name for p in params if p.kind != "array"}

    # ------------------------------------------------------------ expressions
    def expr(self, e, sc: Scope, node) -> None:
        if isinstance(e, Var):
            if sc.find(e.name) not in ("const", "mut") and e.name not in self.scalars:
                raise InternalError(f"loop IR: {e.name!r} is used outside its scope or before its "
                                    f"definition, at {_show(node)}")
        elif isinstance(e, Size):
            if f"N_{e.index}" not in self.scalars:
                raise InternalError(f"loop IR: size of {e.index!r} is not a kernel parameter, at {_show(node)}")
        elif isinstance(e, Load):
            self.array(e.array, sc, node)
            self.expr(e.index, sc, node)
        elif isinstance(e, Locate):
            self.parent(e.operand, e.level, e.parent, sc, node)
            self.exprs((e.extent, e.coord), sc, node)
        elif isinstance(e, Bump):
            if sc.find(e.var) != "mut":
                raise InternalError(f"loop IR: {e.var!r} is incremented but is not a mutable scalar, at {_show(node)}")
        else:
            self.exprs(_children(e), sc, node)

    def exprs(self, es, sc, node) -> None:
        for e in es:
            self.expr(e, sc, node)

    def array(self, a: Array, sc: Scope, node, write: bool = False) -> None:
        if a.role == "workspace":
            if sc.find(a.operand) != "ws":
                raise InternalError(f"loop IR: workspace {a.operand!r} is not declared here, at {_show(node)}")
            return
        p = self.arrays.get(a)
        if p is None:
            raise InternalError(f"loop IR: array {a.name!r} is not a kernel parameter, at {_show(node)}")
        if write and not p.writable:
            raise InternalError(f"loop IR: write to the read-only operand array {a.name!r}, at {_show(node)}")

    def parent(self, operand: str, level: int, parent, sc: Scope, node) -> None:
        """A level-k position is entered from a level-(k-1) position of the same operand (0 at level 0)."""
        if level == 0:
            if parent != Lit(0, "int"):
                raise InternalError(f"loop IR: level 0 of {operand} entered from {parent!r}, not 0, at {_show(node)}")
            return
        self.expr(parent, sc, node)
        got = sc.find(parent.name, "positions") if isinstance(parent, Var) else None
        if got != (operand, level - 1):
            raise InternalError(f"loop IR: level {level} of {operand} is entered from {parent!r}, which is not a "
                                f"level-{level - 1} position of {operand} (it is {got}), at {_show(node)}")

    def level(self, lv: Level, sc: Scope, node) -> None:
        self.parent(lv.operand, lv.level, lv.parent, sc, node)
        for role in ("pos", "crd"):
            self.array(Array(lv.operand, role, lv.level), sc, node)

    # ------------------------------------------------------------ statements
    def block(self, nodes, sc: Scope, where: str) -> None:
        for n in nodes:
            self.node(n, sc, where)

    def node(self, n, sc: Scope, where: str) -> None:
        if isinstance(n, (Let, Decl)):
            self.expr(n.value, sc, n)
            sc.define(n.name, "const" if isinstance(n, Let) else "mut", n)
            if isinstance(n, Let) and isinstance(n.value, Locate):
                sc.positions[n.name] = (n.value.operand, n.value.level)
        elif isinstance(n, Workspace):
            self.expr(n.size, sc, n)
            sc.define(n.name, "ws", n)
        elif isinstance(n, Assign):
            self.assign(n, sc)
        elif isinstance(n, If):
            self.expr(n.cond, sc, n)
            self.block(n.then, Scope(sc), where)
            self.block(n.orelse, Scope(sc), where)
        elif isinstance(n, (For, PosFor, Merge)):
            self.loop(n, sc, where)
        elif isinstance(n, Parallel):
            self.parallel(n, sc, where)
        else:
            self.tile_op(n, sc)

    def assign(self, n: Assign, sc: Scope) -> None:
        self.expr(n.value, sc, n)
        t = n.target
        if isinstance(t, Var):
            if sc.find(t.name) != "mut":
                raise InternalError(f"loop IR: assignment to {t.name!r}, which is not a mutable scalar in "
                                    f"scope, at {_show(n)}")
        elif isinstance(t, Load):
            self.array(t.array, sc, n, write=True)
            self.expr(t.index, sc, n)
        else:
            raise InternalError(f"loop IR: cannot assign to {t!r}, at {_show(n)}")

    def tile_op(self, n, sc: Scope) -> None:
        if isinstance(n, TileAcc):
            sc.define(n.name, "tile", n)
            return
        if not isinstance(n, (TileAxpy, TileSpill)):
            raise InternalError(f"loop IR: unknown node {type(n).__name__}")
        if sc.find(n.acc) != "tile":
            raise InternalError(f"loop IR: register tile {n.acc!r} is not declared here, at {_show(n)}")
        if isinstance(n, TileSpill):
            if sc.find(n.ws) != "ws":
                raise InternalError(f"loop IR: tile spilled to undeclared workspace {n.ws!r}, at {_show(n)}")
            return
        self.exprs((n.scale, n.src, n.end) if n.end is not None else (n.scale, n.src), sc, n)

    def parallel(self, n: Parallel, sc: Scope, where: str) -> None:
        if where != "top":
            raise InternalError(f"loop IR: a parallel region must be outermost in its function, at {_show(n)}")
        inner = Scope(sc)
        for b in n.buffers:
            self.expr(b.size, sc, b)
            inner.define(b.name, "ws", b)
        self.block(n.body, inner, "team" if n.threads else "serial")

    def loop(self, n, sc: Scope, where: str) -> None:
        body = Scope(sc)
        if isinstance(n, For):
            self.for_loop(n, sc, body, where)
        elif isinstance(n, PosFor):
            self.level(n.level, sc, n)
            for pf in n.prefetch:
                self.array(pf.array, sc, n)
                self.exprs((pf.row, pf.offset, pf.width) + (() if pf.limit is None else (pf.limit,)), sc, n)
            body.define(n.p, "const", n)
            body.positions[n.p] = (n.level.operand, n.level.level)
            body.define(n.var, "const", n)
        else:
            self.walkers(n.iters, sc, body, n)
            self.exprs((n.live,), sc, n)
            body.define(n.var, "const", n)
            for w in n.iters:
                body.define(w.flag, "const", n)
            self.exprs((n.when,), body, n)
        self.block(n.body, body, "tile" if isinstance(n, For) and n.kind == "tile" and where == "team" else "loop")

    def for_loop(self, n: For, sc: Scope, body: Scope, where: str) -> None:
        if n.kind == "parts" and where not in ("team", "tile"):
            raise InternalError(f"loop IR: the parallel loop {n.var} is not the outermost loop of a thread "
                                f"team, at {_show(n)}")
        self.exprs((n.lo, n.hi) + (() if n.step is None else (n.step,)), sc, n)
        self.walkers(n.walkers, sc, body, n)
        body.define(n.var, "const", n)
        for w in n.walkers:
            body.define(w.flag, "const", n)
        if n.reduction and sc.find(n.reduction[1]) != "mut":
            raise InternalError(f"loop IR: reduction into {n.reduction[1]!r}, not a mutable scalar, at {_show(n)}")

    def walkers(self, ws, sc: Scope, body: Scope, node) -> None:
        for w in ws:
            self.level(w.level, sc, node)
            if sc.find(w.p) != "mut" or sc.find(w.end) != "const":
                raise InternalError(f"loop IR: iterator {w.p!r} (end {w.end!r}) is not declared before "
                                    f"{_show(node)}")
            sc.positions[w.p] = (w.level.operand, w.level.level)


def _children(e) -> tuple:
    if isinstance(e, (Lit, TileWidth)):
        return ()
    if isinstance(e, (Bin, Cmp)):
        return (e.a, e.b)
    if isinstance(e, Logic):
        return e.items
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Select):
        return (e.cond, e.then, e.orelse)
    if isinstance(e, Flat):
        return (e.first, *[x for pair in e.rest for x in pair])
    if isinstance(e, AddrOf):
        return (e.load,)
    if isinstance(e, Ptr):
        return (Load(e.array, e.offset),)
    raise InternalError(f"loop IR: unknown expression {e!r}")


def verify(fns, params) -> None:
    """Check every function of one kernel against its parameters; raise ``InternalError`` if malformed."""
    v = Verifier(params)
    for fn in fns:
        if list(fn.params) != list(params):
            raise InternalError(f"loop IR: function {fn.name} does not take the kernel's parameters")
        v.block(fn.body, Scope(), "top")

