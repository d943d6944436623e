"""Loop IR: the concrete loop nest ``lower`` produces and ``codegen`` renders.

Scalar expressions inside the nodes are C expression strings (already resolved to array loads);
the structure (loops, merges, workspaces, the parallel loop) is explicit so it can be printed,
verified and rendered. One printer serves ``str()`` and ``explain()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class For:
    """for var in lo .. hi  (kind: serial | simd | parts | tile)"""

    var: str
    lo: str
    hi: str
    body: tuple
    kind: str = "serial"
    step: str = "1"
    reduction: str = ""  # an OpenMP reduction clause for a simd loop
    walkers: tuple = ()  # Walker(...) advanced alongside a dense loop (union with a dense operand)


@dataclass(frozen=True, slots=True)
class PosFor:
    """for p in lo .. hi: var = crd[p]   (position iteration over one compressed level)"""

    p: str
    lo: str
    hi: str
    var: str
    crd: str
    body: tuple
    prefetch: tuple = ()  # Prefetch(...) of rows gathered through crd[p + d]


@dataclass(frozen=True, slots=True)
class Prefetch:
    """prefetch bytes of array[base(crd[p + d]) ...] ahead of the gather, d = sg::prefetch_ahead(bytes, lines)"""

    array: str
    row: str  # elements per gathered row
    offset: str  # element offset within the row (the tile start)
    nbytes: str
    lines: int  # cache lines in flight: the distance d in nonzeros follows from the row's bytes
    limit: str = ""  # positions below this may be read: the level's nnz, so the stream crosses rows


@dataclass(frozen=True, slots=True)
class Walker:
    """a position pointer that follows a dense loop over a compressed level (in = crd[p] == var)"""

    p: str
    end: str
    lo: str
    hi: str
    crd: str
    flag: str


@dataclass(frozen=True, slots=True)
class Merge:
    """while loop_cond: var = min crd over live iterators; if body_cond: body; advance matched"""

    var: str
    iters: tuple  # Walker per co-iterated level
    loop_cond: str
    body_cond: str
    body: tuple


@dataclass(frozen=True, slots=True)
class Let:
    """const ctype name = value"""

    ctype: str
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Decl:
    """ctype name = value   (mutable)"""

    ctype: str
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Workspace:
    """ctype name[size] (a register tile when size is a constant, else a per-thread buffer)"""

    ctype: str
    name: str
    size: str
    heap: bool = False


@dataclass(frozen=True, slots=True)
class Assign:
    """target op= value   (op: '=', '+=', 'max=', 'min=')"""

    target: str
    op: str
    value: str


@dataclass(frozen=True, slots=True)
class Intrinsic:
    """a call into csrc/sgnn_runtime.h, e.g. sg::tile_axpy(acc, h, &X[row])"""

    text: str


@dataclass(frozen=True, slots=True)
class If:
    cond: str
    then: tuple
    orelse: tuple = ()


@dataclass(frozen=True, slots=True)
class Parallel:
    """an OpenMP parallel region over ``nthreads`` with per-thread buffers"""

    body: tuple
    buffers: tuple = ()  # Workspace(heap=True) allocated once per thread
    threads: bool = True  # False: a serial block (buffers allocated once)


@dataclass(frozen=True, slots=True)
class Comment:
    text: str


@dataclass
class Function:
    """One exported C function: parameters (name, ctype) and a body."""

    name: str
    params: list
    body: tuple
    preamble: list = field(default_factory=list)


def _ind(n: int) -> str:
    return "  " * n


def show(nodes, depth: int = 0) -> str:
    """Loop notation, one statement a line (what ``explain()`` prints as the loop IR)."""
    out = []
    for n in nodes:
        pad = _ind(depth)
        if isinstance(n, For):
            tag = {"parts": "  (parallel: nonzero-balanced parts)", "simd": "  (simd)",
                   "tile": "  (tile)"}.get(n.kind, "")
            step = f" step {n.step}" if n.step != "1" else ""
            walk = "".join(f", walk {w.crd}" for w in n.walkers)
            out.append(f"{pad}for {n.var} in {n.lo} .. {n.hi}{step}{walk}:{tag}")
            out.append(show(n.body, depth + 1))
        elif isinstance(n, PosFor):
            pf = "".join(f"  (prefetch {x.array} rows, {x.lines} lines ahead)" for x in n.prefetch)
            out.append(f"{pad}for {n.p} in {n.lo} .. {n.hi}: {n.var} = {n.crd}[{n.p}]{pf}")
            out.append(show(n.body, depth + 1))
        elif isinstance(n, Merge):
            names = ", ".join(w.crd for w in n.iters)
            out.append(f"{pad}merge {n.var} over {names} while {n.loop_cond}; when {n.body_cond}:")
            out.append(show(n.body, depth + 1))
        elif isinstance(n, (Let, Decl)):
            out.append(f"{pad}{n.name} = {n.value}")
        elif isinstance(n, Workspace):
            out.append(f"{pad}workspace {n.name}[{n.size}]{' (per thread)' if n.heap else ''}")
        elif isinstance(n, Assign):
            out.append(f"{pad}{n.target} {n.op} {n.value}")
        elif isinstance(n, If):
            out.append(f"{pad}if {n.cond}:")
            out.append(show(n.then, depth + 1))
            if n.orelse:
                out.append(f"{pad}else:")
                out.append(show(n.orelse, depth + 1))
        elif isinstance(n, Parallel):
            bufs = ", ".join(b.name for b in n.buffers)
            out.append(f"{pad}parallel{' with per-thread ' + bufs if bufs else ''}:")
            out.append(show(n.body, depth + 1))
        elif isinstance(n, Comment):
            out.append(f"{pad}# {n.text}")
        elif isinstance(n, Intrinsic):
            out.append(f"{pad}{n.text}")
    return "\n".join(x for x in out if x)


def walk(nodes):
    """Every node, pre-order."""
    for n in nodes:
        yield n
        for attr in ("body", "then", "orelse"):
            yield from walk(getattr(n, attr, ()) or ())
