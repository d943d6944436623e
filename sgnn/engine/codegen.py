"""Rendering: loop IR → a self-contained C++17 translation unit with a plain C ABI.

The kernel's signature comes from ``Lowerer.params()`` (declared once in Python); the same list
gives the ``ctypes`` argument types, so the two cannot drift apart.
"""
from __future__ import annotations

import ctypes

from .loopir import (Assign, Comment, Decl, For, Function, If, Intrinsic, Let, Merge, Parallel, PosFor,
                     Workspace)

CTYPES = {"int64_t": ctypes.c_int64, "int32_t": ctypes.c_int32}


def argtypes(params) -> list:
    """ctypes argument types for a parameter list: pointers as void*, scalars as their C type."""
    return [ctypes.c_void_p if "*" in ct else CTYPES[ct] for _, ct in params]


def render(fns: list[Function], *, name: str, value_ctype: str, tile: int | None, header: str,
           constant: str | None = None, storage_ctype: str | None = None, portable: bool = False) -> str:
    """C++ source of ``fns``; ``constant`` names a size parameter whose value is ``TILE`` (an exact
    tile): the body sees it as a compile-time constant (constant strides, no remainder loop).
    ``storage_ctype`` (``sg::bf16`` / ``sg::f16``) is ``S``, the operands' narrow element type;
    ``portable`` keeps such kernels off the bf16 / fp16 conversion instructions."""
    narrow = ["#define SG_NARROW 1", *(["#define SG_PORTABLE 1"] if portable else [])] if storage_ctype else []
    lines = [f"// sgnn kernel {name}", *[f"// {h}" for h in header.splitlines()], *narrow,
             '#include "sgnn_runtime.h"', f"typedef {value_ctype} T;",
             *([f"typedef {storage_ctype} S;"] if storage_ctype else [])]
    if tile:
        lines.append(f"static constexpr int64_t TILE = {tile};")
    for fn in fns:
        names = [f"{n}_arg" if n == constant else n for n, _ in fn.params]
        sig = ", ".join(f"{ct} {'SG_RESTRICT ' if '*' in ct and not ct.startswith('const') else ''}{n}"
                        for n, (_, ct) in zip(names, fn.params))
        lines.append(f'extern "C" void {name}_{fn.name}({sig}) {{')
        if constant in dict(fn.params):
            lines.append(f"  constexpr int64_t {constant} = TILE;  // the runtime passes {constant}_arg == TILE")
            lines.append(f"  (void){constant}_arg;")
        lines += _block(fn.body, 1)
        lines.append("}")
    return "\n".join(lines) + "\n"


def _block(nodes, d: int) -> list[str]:
    out: list[str] = []
    for n in nodes:
        out += _node(n, d)
    return out


def _node(n, d: int) -> list[str]:
    p = "  " * d
    if isinstance(n, Parallel):
        alloc = [f"{p}  T* {b.name} = sg::scratch<T>({b.size});" for b in n.buffers]
        free = [f"{p}  free({b.name});" for b in n.buffers]
        head = [f"{p}#pragma omp parallel num_threads(nthreads)"] if n.threads else []
        return [*head, f"{p}{{", *alloc, *_block(n.body, d + 1), *free, f"{p}}}"]
    if isinstance(n, For):
        out = []
        if n.kind == "parts":
            out.append(f"{p}#pragma omp for schedule(dynamic, 1)")
        elif n.kind == "simd":
            red = f" reduction({n.reduction})" if n.reduction else ""
            out.append(f"{p}#pragma omp simd{red}")
        step = "++" if n.step == "1" else f" += {n.step}"
        out.append(f"{p}for (int64_t {n.var} = {n.lo}; {n.var} < {n.hi}; {n.var}{step}) {{")
        for w in n.walkers:
            out.append(f"{p}  const bool {w.flag} = {w.p} < {w.end} && {w.crd}[{w.p}] == {n.var};")
        out += _block(n.body, d + 1)
        for w in n.walkers:
            out.append(f"{p}  {w.p} += {w.flag};")
        out.append(f"{p}}}")
        return out
    if isinstance(n, PosFor):
        out = [f"{p}for (int64_t {n.p} = {n.lo}, {n.p}_hi = {n.hi}; {n.p} < {n.p}_hi; {n.p}++) {{",
               f"{p}  const int64_t {n.var} = {n.crd}[{n.p}];"]
        for m, x in enumerate(n.prefetch):  # software prefetch (into L2) of a row gathered d nonzeros later
            ahead = f"{n.p}_ahead{m}"
            out += [f"{p}  const int64_t {ahead} = sg::prefetch_ahead((int64_t)({x.nbytes}), {x.lines});  // invariant",
                    f"{p}  if ({n.p} + {ahead} < {x.limit or n.p + '_hi'}) {{",
                    f"{p}    const char* pf = (const char*)({x.array} + (int64_t){n.crd}[{n.p} + {ahead}] * "
                    f"({x.row}) + ({x.offset}));",
                    f"{p}    for (int64_t q = 0; q < (int64_t)({x.nbytes}); q += 64) __builtin_prefetch(pf + q, 0, 2);",
                    f"{p}  }}"]
        return out + [*_block(n.body, d + 1), f"{p}}}"]
    if isinstance(n, Merge):
        out = [f"{p}while {n.loop_cond} {{"]
        mins = [f"({w.p} < {w.end} ? (int64_t){w.crd}[{w.p}] : INT64_MAX)" for w in n.iters]
        expr = mins[0]
        for m in mins[1:]:
            expr = f"sg::min<int64_t>({expr}, {m})"
        out.append(f"{p}  const int64_t {n.var} = {expr};")
        for w in n.iters:
            out.append(f"{p}  const bool {w.flag} = {w.p} < {w.end} && {w.crd}[{w.p}] == {n.var};")
        out.append(f"{p}  if {n.body_cond} {{")
        out += _block(n.body, d + 2)
        out.append(f"{p}  }}")
        for w in n.iters:
            out.append(f"{p}  {w.p} += {w.flag};")
        out.append(f"{p}}}")
        return out
    if isinstance(n, Let):
        return [f"{p}const {n.ctype} {n.name} = {n.value};"]
    if isinstance(n, Decl):
        return [f"{p}{n.ctype} {n.name} = {n.value};"]
    if isinstance(n, Workspace):
        return [f"{p}{n.ctype} {n.name}[{n.size}];"]
    if isinstance(n, Assign):
        if n.op in ("max=", "min="):
            f = "max" if n.op == "max=" else "min"
            return [f"{p}{n.target} = sg::{f}<T>({n.target}, {n.value});"]
        return [f"{p}{n.target} {n.op} {n.value};"]
    if isinstance(n, If):
        out = [f"{p}if ({n.cond}) {{", *_block(n.then, d + 1)]
        if n.orelse:
            out += [f"{p}}} else {{", *_block(n.orelse, d + 1)]
        return out + [f"{p}}}"]
    if isinstance(n, Comment):
        return [f"{p}// {n.text}"]
    if isinstance(n, Intrinsic):
        return [f"{p}{n.text};"]
    raise TypeError(f"codegen: unknown node {type(n).__name__}")
