"""Loop IR: the concrete loop nest ``lower`` produces, ``verify`` checks and ``codegen`` renders.

Everything is structured, nothing is C text:

- scalar expressions: ``Var`` (a named scalar: loop index, position, hoisted value), ``Size`` (an
  index's extent), ``TileWidth`` (the compile-time tile), ``Lit``, ``Bin``, ``Cmp``, ``Logic``,
  ``Call``, ``Select``, ``Load`` of an element of an ``Array``, ``Locate`` (the position of a dense
  level), ``AddrOf`` / ``Ptr`` (addresses handed to the runtime's tile operations), ``Bump`` (read
  then increment a counter);
- an ``Array`` names one operand array by its role (``pos`` / ``crd`` / ``val`` of a sparse level,
  ``dense``, ``out``, ``workspace``, ``bounds``) and level;
- statements: ``For``, ``PosFor`` (positions of one compressed level), ``Merge`` (co-iteration),
  ``Let`` / ``Decl`` / ``Assign``, ``Workspace``, ``If``, ``Parallel``, the register-tile
  operations ``TileAcc`` / ``TileAxpy`` / ``TileSpill`` and ``Prefetch``.

``show()`` prints loop notation (what ``explain()`` shows); ``walk()`` visits every statement.
"""
from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- arrays


@dataclass(frozen=True, slots=True)
class Array:
    """One array of one operand: ``role`` in pos | crd | val | dense | workspace | bounds, and for
    ``pos`` / ``crd`` the storage level. The output operand is ``"out"`` (roles dense, val, pos, crd)."""

    operand: str
    role: str
    level: int | None = None

    @property
    def name(self) -> str:
        if self.role in ("dense", "workspace", "bounds"):
            return self.operand
        if self.role == "val":
            return f"{self.operand}_val"
        return f"{self.operand}_{self.role}{'' if self.level is None else self.level}"


# ---------------------------------------------------------------- scalar expressions


@dataclass(frozen=True, slots=True)
class Var:
    name: str


@dataclass(frozen=True, slots=True)
class Size:
    """The extent of index ``index`` (a kernel parameter)."""
    index: str


@dataclass(frozen=True, slots=True)
class TileWidth:
    """The tile width, a compile-time constant."""


@dataclass(frozen=True, slots=True)
class Lit:
    """A literal: ``ty`` is ``"T"`` (the value type; ±inf allowed) or ``"int"``."""
    value: float | int
    ty: str = "T"


@dataclass(frozen=True, slots=True)
class Bin:
    """``a op b``: ``ty`` ``"T"`` for value arithmetic, ``"int"`` for index arithmetic."""
    op: str
    a: object
    b: object
    ty: str = "T"


@dataclass(frozen=True, slots=True)
class Cmp:
    """A comparison ``a op b`` (op in < > == <=)."""
    op: str
    a: object
    b: object


@dataclass(frozen=True, slots=True)
class Logic:
    """``and`` / ``or`` of conditions."""
    op: str
    items: tuple


@dataclass(frozen=True, slots=True)
class Call:
    """A runtime function: ``fn`` of ``args`` at type ``ty`` (``"T"``, ``"int"`` or None)."""
    fn: str
    args: tuple
    ty: str | None = "T"


@dataclass(frozen=True, slots=True)
class Select:
    """``then`` where ``cond`` holds, else ``orelse``."""
    cond: object
    then: object
    orelse: object


@dataclass(frozen=True, slots=True)
class Load:
    """Element ``index`` of ``array`` (also the target of an ``Assign``)."""
    array: Array
    index: object


@dataclass(frozen=True, slots=True)
class Flat:
    """A row-major offset: ``parts[0]``, then for each (x, extent): ``offset * extent + x``."""
    first: object
    rest: tuple = ()  # ((x, extent), ...)


@dataclass(frozen=True, slots=True)
class Locate:
    """The position of dense level ``level`` of ``operand``: ``parent * extent + coord`` (``coord``
    at level 0)."""
    operand: str
    level: int
    parent: object
    extent: object
    coord: object


@dataclass(frozen=True, slots=True)
class AddrOf:
    """The address of an element (``Load``)."""
    load: Load


@dataclass(frozen=True, slots=True)
class Ptr:
    """The address ``offset`` elements past the start of ``array``."""
    array: Array
    offset: object


@dataclass(frozen=True, slots=True)
class Bump:
    """The value of mutable ``var``, which is then incremented."""
    var: str


# ---------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class Level:
    """Storage level ``level`` of sparse operand ``operand``, entered from position ``parent``."""
    operand: str
    level: int
    parent: object


@dataclass(frozen=True, slots=True)
class Walker:
    """A position ``p`` (ending at ``end``) over ``level``; ``flag`` says ``crd[p]`` equals the loop's index."""
    p: str
    end: str
    flag: str
    level: Level


@dataclass(frozen=True, slots=True)
class Prefetch:
    """Prefetch ``width`` elements at ``offset`` of the row of ``array`` (``row`` elements a row)
    gathered ``lines`` cache lines ahead; positions below ``limit`` (default: the loop's end) may be read."""
    array: Array
    row: object
    offset: object
    width: object
    lines: int
    limit: object = None


@dataclass(frozen=True, slots=True)
class For:
    """for var in lo .. hi step step  (kind: serial | simd | parts | tile)"""
    var: str
    lo: object
    hi: object
    body: tuple
    kind: str = "serial"
    step: object = None  # None: 1
    reduction: tuple = ()  # (op, scalar) of a simd reduction
    walkers: tuple = ()  # Walker(...) advanced alongside a dense loop (union with a dense operand)


@dataclass(frozen=True, slots=True)
class PosFor:
    """for p in positions of ``level``: var = crd[p]"""
    p: str
    level: Level
    var: str
    body: tuple
    prefetch: tuple = ()


@dataclass(frozen=True, slots=True)
class Merge:
    """while live: var = min crd over iters; if when: body; advance the matched iterators"""
    var: str
    iters: tuple
    live: object
    when: object
    body: tuple


@dataclass(frozen=True, slots=True)
class Let:
    """An immutable scalar ``name = value`` of type ``ty`` (T | int | bool)."""
    ty: str
    name: str
    value: object


@dataclass(frozen=True, slots=True)
class Decl:
    """A mutable scalar ``name = value``."""
    ty: str
    name: str
    value: object


@dataclass(frozen=True, slots=True)
class Workspace:
    """A value-typed array ``name[size]``: registers / stack, or a per-thread buffer (``heap``)."""
    name: str
    size: object
    heap: bool = False


@dataclass(frozen=True, slots=True)
class Assign:
    """target op= value  (op: '=', '+=', '*=', 'max=', 'min='); target a ``Var`` or a ``Load``."""
    target: object
    op: str
    value: object


@dataclass(frozen=True, slots=True)
class If:
    cond: object
    then: tuple
    orelse: tuple = ()


@dataclass(frozen=True, slots=True)
class Parallel:
    """A thread team (or, ``threads=False``, a serial block) with per-thread ``buffers``."""
    body: tuple
    buffers: tuple = ()
    threads: bool = True


@dataclass(frozen=True, slots=True)
class TileAcc:
    """Declare register accumulator ``name`` (TILE lanes), zeroed."""
    name: str


@dataclass(frozen=True, slots=True)
class TileAxpy:
    """``acc += scale * src[0 .. TILE)``; ``end`` (an address) bounds the loads on a partial tile."""
    acc: str
    scale: object
    src: AddrOf
    end: object = None


@dataclass(frozen=True, slots=True)
class TileSpill:
    """Store accumulator ``acc`` into workspace ``ws``."""
    acc: str
    ws: str


@dataclass
class Function:
    """One exported function: its parameters (``abi.Param``) and body."""
    name: str
    params: list
    body: tuple


# ---------------------------------------------------------------- printing


def expr(e) -> str:
    """Loop notation of a scalar expression."""
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Size):
        return f"N_{e.index}"
    if isinstance(e, TileWidth):
        return "TILE"
    if isinstance(e, Lit):
        return repr(e.value)
    if isinstance(e, (Bin, Cmp)):
        return f"({expr(e.a)} {e.op} {expr(e.b)})"
    if isinstance(e, Logic):
        return "(" + f" {e.op} ".join(map(expr, e.items)) + ")"
    if isinstance(e, Call):
        return f"{e.fn}({', '.join(map(expr, e.args))})"
    if isinstance(e, Select):
        return f"({expr(e.cond)} ? {expr(e.then)} : {expr(e.orelse)})"
    if isinstance(e, Load):
        return f"{e.array.name}({expr(e.index)})"
    if isinstance(e, Flat):
        return "flat(" + ", ".join([expr(e.first)] + [f"{expr(x)}/{expr(n)}" for x, n in e.rest]) + ")"
    if isinstance(e, Locate):
        return f"locate({e.operand}.{e.level}, {expr(e.parent)}, {expr(e.coord)})"
    if isinstance(e, AddrOf):
        return "&" + expr(e.load)
    if isinstance(e, Ptr):
        return f"{e.array.name} + {expr(e.offset)}"
    if isinstance(e, Bump):
        return f"{e.var}++"
    if e is None:
        return "-"
    raise TypeError(f"loopir: unknown expression {e!r}")


def _loop_line(n) -> str:
    if isinstance(n, For):
        tag = {"parts": "  (parallel: nonzero-balanced parts)", "simd": "  (simd)", "tile": "  (tile)"}.get(n.kind, "")
        step = f" step {expr(n.step)}" if n.step is not None else ""
        walk_ = "".join(f", walk {w.level.operand}.{w.level.level}" for w in n.walkers)
        return f"for {n.var} in {expr(n.lo)} .. {expr(n.hi)}{step}{walk_}:{tag}"
    if isinstance(n, PosFor):
        pf = "".join(f"  (prefetch {x.array.name} rows, {x.lines} lines ahead)" for x in n.prefetch)
        lv = n.level
        return f"for {n.p} in {lv.operand}.{lv.level} from {expr(lv.parent)}: {n.var} = crd({n.p}){pf}"
    if isinstance(n, Merge):
        names = ", ".join(f"{w.level.operand}.{w.level.level}" for w in n.iters)
        return f"merge {n.var} over {names} while {expr(n.live)}; when {expr(n.when)}:"
    if isinstance(n, If):
        return f"if {expr(n.cond)}:"
    bufs = ", ".join(b.name for b in n.buffers)
    return f"parallel{' with per-thread ' + bufs if bufs else ''}:"


def _line(n) -> str:
    if isinstance(n, (Let, Decl)):
        return f"{n.name} = {expr(n.value)}"
    if isinstance(n, Workspace):
        return f"workspace {n.name} of {expr(n.size)}{' (per thread)' if n.heap else ''}"
    if isinstance(n, Assign):
        return f"{expr(n.target)} {n.op} {expr(n.value)}"
    if isinstance(n, TileAcc):
        return f"tile {n.name} = 0"
    if isinstance(n, TileAxpy):
        return f"tile {n.acc} += {expr(n.scale)} * {expr(n.src)}" + (f" (bounded by {expr(n.end)})" if n.end else "")
    if isinstance(n, TileSpill):
        return f"{n.ws} = tile {n.acc}"
    raise TypeError(f"loopir: unknown node {type(n).__name__}")


def show(nodes, depth: int = 0) -> str:
    """Loop notation, one statement a line (what ``explain()`` prints as the loop IR)."""
    out = []
    pad = "  " * depth
    for n in nodes:
        if isinstance(n, (For, PosFor, Merge, If, Parallel)):
            out.append(pad + _loop_line(n))
            out.append(show(n.then if isinstance(n, If) else n.body, depth + 1))
            if isinstance(n, If) and n.orelse:
                out += [f"{pad}else:", show(n.orelse, depth + 1)]
        else:
            out.append(pad + _line(n))
    return "\n".join(x for x in out if x)


def walk(nodes):
    """Every statement, pre-order."""
    for n in nodes:
        yield n
        for attr in ("body", "then", "orelse"):
            yield from walk(getattr(n, attr, ()) or ())
