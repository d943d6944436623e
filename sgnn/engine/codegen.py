"""Rendering: loop IR → a self-contained C++17 translation unit with a plain C ABI.

The only module that writes C. The prototype comes from the ``abi.Param`` list the runtime also
builds its ``ctypes`` signature and argument order from.
"""
from __future__ import annotations

from .loopir import (AddrOf, Assign, Bin, Bump, Call, Cmp, Decl, Flat, For, Function, If, Let, Lit, Load, Locate,
                     Logic, Merge, Parallel, PosFor, Ptr, Select, Size, TileAcc, TileAxpy, TileSpill, TileWidth,
                     Var, Workspace)

_TY = {"int": "int64_t", "T": "T", "bool": "bool"}
_CTYPE = {"float32": "float", "float64": "double", "bfloat16": "sg::bf16", "float16": "sg::f16"}
_ELEM = {"index32": "int32_t", "index64": "int64_t", "int64": "int64_t"}
_LOGIC = {"and": " && ", "or": " || "}
_CLAUSE = {"sum": "+", "max": "max", "min": "min"}
PREFETCH_MAX_BYTES = 1024  # of a gathered row prefetched ahead: a whole 16-line register tile's span


class Renderer:
    """Renders one kernel; ``sty`` is the operands' element type (``S`` for narrow storage, else ``T``),
    ``wide`` the operand keys (``"out"``: the output) a mixed kernel stores as ``T`` instead."""

    def __init__(self, sty: str, wide=frozenset()):
        self.sty, self.wide = sty, wide

    def elem(self, operand: str) -> str:
        return "T" if operand in self.wide else self.sty

    # ------------------------------------------------------------ parameters
    def ctype(self, p) -> str:
        if p.kind in ("size", "count", "seed"):
            return "int64_t"
        if p.kind == "threads":
            return "int32_t"
        elem = self.elem(p.array.operand) if p.elem == "value" else _ELEM[p.elem]
        return f"{elem}*" if p.writable else f"const {elem}*"

    def prototype(self, params, constant: str | None) -> str:
        out = []
        for p in params:
            ct, name = self.ctype(p), f"{p.name}_arg" if p.name == constant else p.name
            out.append(f"{ct} {'SG_RESTRICT ' if p.writable else ''}{name}")
        return ", ".join(out)

    # ------------------------------------------------------------ expressions
    def x(self, e) -> str:
        if isinstance(e, Var):
            return e.name
        if isinstance(e, Size):
            return f"N_{e.index}"
        if isinstance(e, TileWidth):
            return "TILE"
        if isinstance(e, Lit):
            return _literal(e)
        if isinstance(e, Bin):
            return self.binary(e)
        if isinstance(e, Cmp):
            return f"{self.x(e.a)} {e.op} {self.x(e.b)}"
        if isinstance(e, Logic):
            items = (f"({self.x(i)})" if isinstance(i, Cmp) else self.x(i) for i in e.items)
            return "(" + _LOGIC[e.op].join(items) + ")"
        if isinstance(e, Call):
            ty = {"T": "<T>", "int": "<int64_t>", None: ""}[e.ty]
            return f"sg::{e.fn}{ty}({', '.join(self.x(a) for a in e.args)})"
        if isinstance(e, Select):
            return f"({self.x(e.cond)} ? {self.x(e.then)} : {self.x(e.orelse)})"
        if isinstance(e, Load):
            return f"{e.array.name}[{self.x(e.index)}]"
        return self.address(e)

    def binary(self, e: Bin) -> str:
        a, b = self.x(e.a), self.x(e.b)
        if e.ty == "int":
            return f"{a} {e.op} {b}"
        if e.op in ("max", "min"):
            return f"sg::{e.op}<T>({a}, {b})"
        return f"({a} {e.op} {b})"

    def address(self, e) -> str:
        if isinstance(e, Flat):
            out = self.x(e.first)
            for v, n in e.rest:
                out = f"({out}) * {self.x(n)} + {self.x(v)}"
            return out
        if isinstance(e, Locate):
            coord = self.x(e.coord)
            return f"{self.x(e.parent)} * {self.x(e.extent)} + {coord}" if e.level else coord
        if isinstance(e, AddrOf):
            return "&" + self.x(e.load)
        if isinstance(e, Ptr):
            return f"{e.array.name} + {self.x(e.offset)}"
        if isinstance(e, Bump):
            return f"{e.var}++"
        raise TypeError(f"codegen: unknown expression {e!r}")

    def cond(self, e) -> str:
        return self.x(e) if isinstance(e, Logic) else f"({self.x(e)})"

    # ------------------------------------------------------------ statements
    def block(self, nodes, d: int) -> list[str]:
        out: list[str] = []
        for n in nodes:
            out += self.node(n, d)
        return out

    def node(self, n, d: int) -> list[str]:
        p = "  " * d
        if isinstance(n, Parallel):
            return self.parallel(n, d)
        if isinstance(n, For):
            return self.loop(n, d)
        if isinstance(n, PosFor):
            return self.pos_loop(n, d)
        if isinstance(n, Merge):
            return self.merge(n, d)
        if isinstance(n, If):
            out = [f"{p}if {self.cond(n.cond)} {{", *self.block(n.then, d + 1)]
            if n.orelse:
                out += [f"{p}}} else {{", *self.block(n.orelse, d + 1)]
            return out + [f"{p}}}"]
        return [p + s for s in self.simple(n)]

    def simple(self, n) -> list[str]:
        if isinstance(n, Let):
            return [f"const {_TY[n.ty]} {n.name} = {self.x(n.value)};"]
        if isinstance(n, Decl):
            return [f"{_TY[n.ty]} {n.name} = {self.x(n.value)};"]
        if isinstance(n, Workspace):
            return [f"T {n.name}[{self.x(n.size)}];"]
        if isinstance(n, Assign):
            t, v = self.x(n.target), self.x(n.value)
            if n.op in ("max=", "min="):
                return [f"{t} = sg::{n.op[:3]}<T>({t}, {v});"]
            return [f"{t} {n.op} {v};"]
        if isinstance(n, TileAcc):
            return [f"sg::Tile<T, TILE> {n.name};", f"sg::tile_zero({n.name});"]
        if isinstance(n, TileAxpy):
            args = f"{n.acc}, {self.x(n.scale)}, {self.x(n.src)}"
            if n.end is None:
                return [f"sg::tile_axpy({args});"]
            return [f"sg::tile_axpy_bounded({args}, {self.x(n.end)});"]
        if isinstance(n, TileSpill):
            return [f"sg::tile_spill({n.acc}, {n.ws});"]
        raise TypeError(f"codegen: unknown node {type(n).__name__}")

    def parallel(self, n: Parallel, d: int) -> list[str]:
        p = "  " * d
        alloc = [f"{p}  T* {b.name} = sg::scratch<T>({self.x(b.size)});" for b in n.buffers]
        free = [f"{p}  free({b.name});" for b in n.buffers]
        head = [f"{p}#pragma omp parallel num_threads(nthreads)"] if n.threads else []
        return [*head, f"{p}{{", *alloc, *self.block(n.body, d + 1), *free, f"{p}}}"]

    def loop(self, n: For, d: int) -> list[str]:
        p = "  " * d
        out = []
        if n.kind == "parts":
            out.append(f"{p}#pragma omp for schedule(dynamic, 1)")
        elif n.kind == "simd":
            red = f" reduction({_CLAUSE[n.reduction[0]]}:{n.reduction[1]})" if n.reduction else ""
            out.append(f"{p}#pragma omp simd{red}")
        step = "++" if n.step is None else f" += {self.x(n.step)}"
        out.append(f"{p}for (int64_t {n.var} = {self.x(n.lo)}; {n.var} < {self.x(n.hi)}; {n.var}{step}) {{")
        out += [f"{p}  {self.flag(w, n.var)}" for w in n.walkers]
        out += self.block(n.body, d + 1)
        out += [f"{p}  {w.p} += {w.flag};" for w in n.walkers]
        return out + [f"{p}}}"]

    def flag(self, w, var: str) -> str:
        crd = f"{w.level.operand}_crd{w.level.level}"
        return f"const bool {w.flag} = {w.p} < {w.end} && {crd}[{w.p}] == {var};"

    def pos_loop(self, n: PosFor, d: int) -> list[str]:
        p, lv = "  " * d, n.level
        pos, crd, parent = f"{lv.operand}_pos{lv.level}", f"{lv.operand}_crd{lv.level}", self.x(lv.parent)
        out = [f"{p}for (int64_t {n.p} = {pos}[{parent}], {n.p}_hi = {pos}[{parent} + 1]; {n.p} < {n.p}_hi; "
               f"{n.p}++) {{", f"{p}  const int64_t {n.var} = {crd}[{n.p}];"]
        for m, x in enumerate(n.prefetch):  # software prefetch (into L2) of a row gathered d nonzeros later
            out += self.prefetch(x, f"{n.p}_ahead{m}", n.p, crd, p)
        return out + [*self.block(n.body, d + 1), f"{p}}}"]

    def prefetch(self, x, ahead: str, pv: str, crd: str, p: str) -> list[str]:
        nbytes = f"sg::min<int64_t>(({self.x(x.width)}) * sizeof({self.elem(x.array.operand)}), {PREFETCH_MAX_BYTES})"
        limit = f"{pv}_hi" if x.limit is None else self.x(x.limit)
        return [f"{p}  const int64_t {ahead} = sg::prefetch_ahead((int64_t)({nbytes}), {x.lines});  // invariant",
                f"{p}  if ({pv} + {ahead} < {limit}) {{",
                f"{p}    const char* pf = (const char*)({x.array.name} + (int64_t){crd}[{pv} + {ahead}] * "
                f"({self.x(x.row)}) + ({self.x(x.offset)}));",
                f"{p}    for (int64_t q = 0; q < (int64_t)({nbytes}); q += 64) __builtin_prefetch(pf + q, 0, 2);",
                f"{p}  }}"]

    def merge(self, n: Merge, d: int) -> list[str]:
        p = "  " * d
        mins = [f"({w.p} < {w.end} ? (int64_t){w.level.operand}_crd{w.level.level}[{w.p}] : INT64_MAX)"
                for w in n.iters]
        first = mins[0]
        for m in mins[1:]:
            first = f"sg::min<int64_t>({first}, {m})"
        out = [f"{p}while {self.cond(n.live)} {{", f"{p}  const int64_t {n.var} = {first};"]
        out += [f"{p}  {self.flag(w, n.var)}" for w in n.iters]
        out += [f"{p}  if {self.cond(n.when)} {{", *self.block(n.body, d + 2), f"{p}  }}"]
        out += [f"{p}  {w.p} += {w.flag};" for w in n.iters]
        return out + [f"{p}}}"]


def _literal(e: Lit) -> str:
    if e.ty == "int":
        return str(e.value)
    if e.value == float("inf"):
        return "SG_INF"
    if e.value == float("-inf"):
        return "-SG_INF"
    return f"T({e.value!r})"


def render(fns: list[Function], *, name: str, value_dtype: str, tile: int | None, header: str,
           exact: str | None = None, storage_dtype: str | None = None, portable: bool = False,
           wide=frozenset()) -> str:
    """C++ source of ``fns`` computing in ``value_dtype``; ``exact`` names an index whose size is
    ``TILE`` (an exact tile): the body sees it as a compile-time constant (constant strides, no
    remainder loop). ``storage_dtype`` (bfloat16 / float16) is ``S``, the operands' narrow element
    type; ``portable`` keeps such kernels off the bf16 / fp16 conversion instructions. ``wide``: the
    operands (``"out"``: the output) of such a kernel stored in ``value_dtype`` instead (a mixed
    kernel, ``validate.mixed_dtypes``)."""
    value_ctype, storage_ctype = _CTYPE[value_dtype], _CTYPE.get(storage_dtype)
    constant = None if exact is None else f"N_{exact}"
    narrow = ["#define SG_NARROW 1", *(["#define SG_PORTABLE 1"] if portable else [])] if storage_ctype else []
    lines = [f"// sgnn kernel {name}", *[f"// {h}" for h in header.splitlines()], *narrow,
             '#include "sgnn_runtime.h"', f"typedef {value_ctype} T;",
             *([f"typedef {storage_ctype} S;"] if storage_ctype else [])]
    if tile:
        lines.append(f"static constexpr int64_t TILE = {tile};")
    r = Renderer("S" if storage_ctype else "T", frozenset(wide) if storage_ctype else frozenset())
    for fn in fns:
        lines.append(f'extern "C" void {name}_{fn.name}({r.prototype(fn.params, constant)}) {{')
        if constant in {p.name for p in fn.params}:
            lines.append(f"  constexpr int64_t {constant} = TILE;  // the runtime passes {constant}_arg == TILE")
            lines.append(f"  (void){constant}_arg;")
        lines += r.block(fn.body, 1)
        lines.append("}")
    return "\n".join(lines) + "\n"
