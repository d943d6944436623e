"""The kernel ABI, declared once: the ordered parameters of every generated function.

``params(sched)`` lists them: the index sizes, dropout seeds, each operand's arrays (a sparse operand's ``pos`` /
``crd`` per level and its values, a dense operand's buffer), the output arrays, then the parallel
launch (partition bounds, part count, thread count). ``codegen`` renders the C prototype from this
list, ``argtypes`` gives the ctypes signature and ``operand_arrays`` the runtime's argument order.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

from .expr import Keep, walk
from .loopir import Array
from .lower_scalar import seed_param


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter. ``kind``: size | seed | array | count (int64) | threads (int32). An array's ``elem``
    is ``index32`` / ``index64`` (sparse indices), ``value`` (the operands' element type) or ``int64``."""

    name: str
    kind: str
    array: Array | None = None
    elem: str = ""
    writable: bool = False


def size_indices(sched) -> list[str]:
    """Every index of the statement, in parameter order: output indices, then reduced ones."""
    vs = list(sched.stmt.idx)
    for r in sched.reductions:
        vs += [v for v in r.idx if v not in vs]
    return vs


def seed_operands(sched) -> list[str]:
    """The operands whose value is a dropout seed (``expr.Keep``), passed as int64 scalars."""
    return list(dict.fromkeys(k.seed for k in walk(sched.stmt.expr) if isinstance(k, Keep)))


def unique_slots(sched) -> list:
    """The schedule's slots, one per key (two accesses of one operand share its arrays)."""
    first: dict = {}
    for sl in sched.slots.values():
        first.setdefault(sl.key, sl)
    return list(first.values())


def _operand(sl) -> list[Param]:
    if not sl.sparse:
        return [Param(sl.key, "array", Array(sl.key, "dense"), "value")]
    elem = "index32" if sl.info.index_dtype == "int32" else "index64"
    out = []
    for k, lv in enumerate(sl.format.levels):
        for role in ("pos", "crd"):
            if lv.has_array(role):
                arr = Array(sl.key, role, k)
                out.append(Param(arr.name, "array", arr, elem))
    if sl.info.value_dtype is not None:
        out.append(Param(f"{sl.key}_val", "array", Array(sl.key, "val"), "value"))
    return out


def _output(kind: str) -> list[Param]:
    if kind == "dense":
        roles = [("dense", "value")]
    elif kind == "sampled":
        roles = [("val", "value")]
    else:
        roles = [("pos", "int64"), ("crd", "int64"), ("val", "value")]
    return [Param(Array("out", r).name, "array", Array("out", r), elem, writable=True) for r, elem in roles]


def params(sched) -> tuple[Param, ...]:
    """The parameters of every function of ``sched``'s kernel, in order."""
    out = [Param(f"N_{v}", "size") for v in size_indices(sched)]
    out += [Param(seed_param(n), "seed") for n in seed_operands(sched)]
    for sl in unique_slots(sched):
        out += _operand(sl)
    out += _output(sched.output)
    out += [Param("bounds", "array", Array("bounds", "bounds"), "int64"), Param("nparts", "count"),
            Param("nthreads", "threads")]
    return tuple(out)


def argtypes(ps) -> list:
    """ctypes argument types: arrays as void*, sizes and counts as int64, the thread count as int32."""
    return [ctypes.c_void_p if p.kind == "array" else ctypes.c_int32 if p.kind == "threads" else ctypes.c_int64
            for p in ps]


def operand_arrays(ps) -> list[tuple[str, tuple | None]]:
    """Per operand in argument order: ``(key, None)`` for a dense one, ``(key, (("pos", k) | ("crd", k)
    | ("val", None), ...))`` for a sparse one."""
    out: dict = {}
    for p in ps:
        a = p.array
        if p.kind != "array" or a.operand in ("out", "bounds"):
            continue
        if a.role == "dense":
            out[a.operand] = None
        else:
            out.setdefault(a.operand, []).append((a.role, a.level))
    return [(k, None if v is None else tuple(v)) for k, v in out.items()]
