"""Runtime: plans (schedule + compiled kernels) called on tensor memory without copies.

A ``Plan`` is memoised per (expression, operand signatures); it holds one compiled ``Kernel``
per tile choice. A call checks shapes, converts operands whose format the schedule asked for
(cached on the tensor), allocates the output with ``torch.empty`` and passes raw pointers, each
checked by ``native.pointer``.

Threads may share plans and tensors. Every cache is bounded (``caches.LRU``: plans, kernels per
plan, kernels per size, uniform bounds) or lives on the tensor it derives from; a value whose
address a kernel receives is built once and kept alive with the pointer (see ``caches``).
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, replace as dc_replace

import torch

from ..config import log, settings
from ..errors import InternalError, UserError
from . import abi, codegen, compiler, memory
from .caches import LRU
from .expr import Statement
from .loopir import show
from .lower import lower
from .native import plain, pointer, real_mode
from .operands import check_out
from .schedule import Decision, OperandInfo, Schedule, make_schedule
from .tensor import SparseTensor
from .tiling import Tile, decide
from .validate import mixed_dtypes
from .verify import verify

_dispatch_modes = torch._C._len_torch_dispatch_stack  # nonzero under FakeTensorMode & co (see real_mode)
PLANS = 256  # memoised plans (expression × operand signatures)
KERNELS_PER_PLAN = 32  # tile choices compiled per plan (bucketed widths keep this small)
SIZES_PER_PLAN = 64  # index sizes → kernel, per plan (one entry per distinct graph size)

_DTYPE_NAME = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
               torch.bfloat16: "bfloat16", torch.int32: "int32", torch.int64: "int64"}


@dataclass
class Kernel:
    """One compiled kernel: its C functions, source, loop IR and cache facts."""

    fns: dict
    lib: ctypes.CDLL  # keeps the shared object (and the memo entry naming it) alive
    params: list
    source: str
    loop_ir: str
    info: dict
    tile: Tile | None
    tile_decision: Decision | None


def operand_info(t) -> OperandInfo:
    """The specialisation key of an operand (cached on sparse tensors, which are immutable)."""
    if isinstance(t, SparseTensor):
        return t.derived("info", lambda: OperandInfo.of(t))
    return OperandInfo(False, t.dim(), None, None, _DTYPE_NAME.get(t.dtype, str(t.dtype)))


def as_operand(t, name: str):
    """A SparseTensor, or a dense CPU tensor (made contiguous: documented copy for strided views)."""
    if isinstance(t, SparseTensor):
        return t
    if type(t) is torch.Tensor and t.is_cpu and t.layout == torch.strided and t.is_contiguous() \
            and not t.requires_grad:
        return t  # the common case, decided with the cheapest checks
    if not isinstance(t, torch.Tensor):
        raise UserError(f"operand {name}: expected a torch.Tensor or sgnn.SparseTensor (got {type(t).__name__})")
    t = plain(t, "a dense operand", f"operand {name}")
    if t.layout != torch.strided:
        return SparseTensor.from_torch(t)
    if t.requires_grad and torch.is_grad_enabled():
        t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    return t


class Plan:
    """A scheduled statement; kernels are compiled per tile on first use."""

    def __init__(self, stmt: Statement, infos: dict[str, OperandInfo], out_dtype: torch.dtype | None = None):
        self.stmt = stmt
        self.infos = infos
        wide = frozenset()  # float32 operands of a mixed kernel (validate.mixed_dtypes): read wide
        if out_dtype is not None:  # the schedule sees them in the narrow dtype
            narrow, wide = mixed_dtypes({n: i.value_dtype for n, i in infos.items()}, out_dtype)
            infos = {n: dc_replace(i, value_dtype=narrow) if n in wide else i for n, i in infos.items()}
        self.sched: Schedule = make_schedule(stmt, infos)
        self.wide = frozenset(sl.key for sl in self.sched.slots.values() if sl.operand in wide)
        self.kernels = LRU(KERNELS_PER_PLAN)
        self._lock = threading.Lock()  # one compile per tile, even when threads race
        s = self.sched
        self.params = abi.params(s)  # the ABI: C prototype, ctypes argtypes and argument order
        self.vars = abi.size_indices(s)
        # where each index's size is read from: (operand name, dimension) for every access using it
        self.size_sources: dict[str, list] = {v: [] for v in self.vars}
        for a, sl in s.slots.items():
            for d, v in enumerate(a.idx):
                if v in self.size_sources and (sl.operand, d) not in self.size_sources[v]:
                    self.size_sources[v].append((sl.operand, d))
        self.value_dtype = getattr(torch, s.storage_dtype or s.value_dtype)  # the operands' and the result's dtype
        self.out_dtype = out_dtype or self.value_dtype  # ... unless a mixed kernel writes float32
        self.slot_names = [(sl.key, sl.operand) for sl in abi.unique_slots(s)]
        self.needs_conversion = any(sl.convert_to is not None for sl in s.slots.values())
        # slots reading multiplicities as values: cast to the plan's dtype (ones when pattern-only)
        self.count_keys = [sl.key for sl in abi.unique_slots(s) if sl.info.value_dtype == "count"]
        self.by_sizes = LRU(SIZES_PER_PLAN)  # index sizes -> kernel (the tile depends on the sizes only)
        self.array_args = _array_args(s, self.params, self.value_dtype, self.wide)
        self.dense_dtype = {key: torch.float32 if key in self.wide else self.value_dtype for key, _ in self.slot_names}
        self.seeds = abi.seed_operands(s)  # operands passed as int64 scalars (dropout seeds)

    # ------------------------------------------------------------ compile
    def variant(self) -> tuple:
        """What else a kernel depends on: the portable-math setting, for narrow operands."""
        return (settings().portable_math,) if self.sched.storage_dtype else ()

    def kernel(self, tile: Tile | None, tile_decision: Decision | None) -> Kernel:
        key = (tile, *self.variant())
        k = self.kernels.get(key)
        if k is not None:
            return k
        with self._lock:
            k = self.kernels.get(key)
            if k is None:
                k = self.kernels.put(key, self._build(tile, tile_decision))
        return k

    def _build(self, tile: Tile | None, tile_decision: Decision | None) -> Kernel:
        fns = lower(self.sched, tile, self.params)
        verify(fns, self.params)
        header = str(self.sched.stmt) + "\n" + "\n".join(str(d) for d in self.sched.decisions)
        narrow = self.sched.storage_dtype
        source = codegen.render(fns, name="sgnn", value_dtype=self.sched.value_dtype,
                                tile=tile.size if tile else None, header=header,
                                exact=tile.var if tile is not None and tile.exact else None,
                                storage_dtype=narrow or None, portable=bool(narrow) and settings().portable_math,
                                wide=self.wide | ({"out"} if self.out_dtype != self.value_dtype else set()))
        log(2, "schedule:\n  " + "\n  ".join(str(d) for d in self.sched.decisions))
        ir = "\n".join(f"{fn.name}:\n{show(fn.body, 1)}" for fn in fns)
        log(3, "loop IR:\n" + ir)
        log(4, "C++:\n" + source)
        lib, info = compiler.build(source, name=f"kernel[{self.stmt}]")
        cfns = {}
        for fn in fns:
            f = lib[f"sgnn_{fn.name}"]  # a fresh function object: its argtypes are this plan's own
            f.argtypes = abi.argtypes(fn.params)
            f.restype = None
            cfns[fn.name] = f
        return Kernel(cfns, lib, self.params, source, ir, info, tile, tile_decision)

    # ------------------------------------------------------------ call
    def sizes(self, ops: dict) -> dict[str, int]:
        sizes = {}
        for v, srcs in self.size_sources.items():
            first = None
            for name, d in srcs:
                n = ops[name].shape[d]
                if first is None:
                    first, sizes[v] = (name, d), n
                elif n != sizes[v]:
                    raise UserError(f"size mismatch for index {v!r}: {first[0]} has {sizes[v]} (dimension "
                                    f"{first[1]}) but {name} has {n} (dimension {d})")
        return sizes

    def prepare(self, ops: dict):
        """Converted operands per slot key, index sizes, tile and kernel."""
        s = self.sched
        by_slot = {}
        for sl in s.slots.values():
            t = ops[sl.operand]
            t = t.to(sl.convert_to) if sl.convert_to is not None else t
            if sl.info.value_dtype == "count":
                t = t.with_counts(self.value_dtype)
            if sl.sparse and t.index_dtype != getattr(torch, sl.info.index_dtype):
                raise InternalError(f"{sl.operand}: kernel expects {sl.info.index_dtype} indices but the "
                                    f"converted operand has {t.index_dtype}")
            by_slot[sl.key] = t
        sizes = self.sizes(ops)
        tile, why = decide(s, sizes)
        return by_slot, sizes, tile, why

    def __call__(self, ops: dict, out: torch.Tensor | None = None):
        """Run on operands from ``as_operand`` (which vets dense tensors: plain, CPU, contiguous);
        ``out``: where a dense result goes (``operands.check_out``), else a fresh tensor."""
        if _dispatch_modes():
            real_mode("sgnn kernel call")
        seeds = [_seed(ops[n], n) for n in self.seeds]
        if self.needs_conversion:
            by_slot, sizes, tile, why = self.prepare(ops)
            return self.run(self.kernel(tile, why), by_slot, sizes, seeds, out)
        by_slot = {key: ops[name] for key, name in self.slot_names}
        for key in self.count_keys:
            by_slot[key] = by_slot[key].with_counts(self.value_dtype)
        sizes = self.sizes(ops)
        skey = (*sizes.values(), *self.variant()) if self.sched.storage_dtype else tuple(sizes.values())
        k = self.by_sizes.recent.get(skey) or self.by_sizes.get(skey)
        if k is None:
            k = self.by_sizes.put(skey, self.kernel(*decide(self.sched, sizes)))
        return self.run(k, by_slot, sizes, seeds, out)

    def run(self, k: Kernel, by_slot: dict, sizes: dict, seeds=(), out=None):
        s = self.sched
        args = [sizes[v] for v in self.vars] + list(seeds)
        vdt, ddt = self.out_dtype, self.dense_dtype
        for key, arrays in self.array_args:  # dense: checked per call; sparse: once per tensor
            t = by_slot[key]
            if arrays is None:  # as_operand vetted its type, device, layout and contiguity
                p = t.data_ptr()
                args.append(p if p and t.dtype is ddt[key] else pointer(t, ddt[key], key))
                continue
            ptrs = t._derived.get(arrays[3])  # a sparse tensor's arrays never move: checked once, cached
            if ptrs is None:
                ptrs = t.derived(arrays[3], lambda: _array_pointers(t, *arrays[:3]))
            args.extend(ptrs)
        out_shape = tuple(sizes[v] for v in s.stmt.idx)
        inner = 1
        for v in s.inner:
            inner *= sizes[v]
        bounds, tail, _ = self.launch(by_slot, sizes, inner, torch.get_num_threads())  # keeps bounds alive
        if s.output == "dense":
            out = memory.empty(out_shape, vdt) if out is None else check_out(out, out_shape, vdt, by_slot.values())
            k.fns["compute"](*args, out.data_ptr() or _out(out), *tail)
            return out
        driver = by_slot[s.slots[s.driver].key]
        n_extra = len(s.inner)
        if s.output == "sampled":
            vals = memory.empty((driver.nnz * inner,), vdt)
            k.fns["compute"](*args, _out(vals), *tail)
            return SparseTensor(out_shape, s.out_format, list(driver.pos) + [None] * n_extra,
                                list(driver.crd) + [None] * n_extra, vals, check=False)
        pos = torch.zeros(sizes[s.outer[0]] + 1, dtype=torch.int64)
        dummy = torch.empty(0, dtype=torch.int64)
        k.fns["count"](*args, _out(pos), dummy.data_ptr(), dummy.data_ptr(), *tail)
        torch.cumsum(pos, 0, out=pos)
        nnz = int(pos[-1])
        crd = torch.empty(nnz, dtype=torch.int64)
        vals = memory.empty((nnz * inner,), vdt)
        k.fns["compute"](*args, _out(pos), _out(crd), _out(vals), *tail)
        return SparseTensor(out_shape, s.out_format, [None, pos] + [None] * n_extra,
                            [None, crd] + [None] * n_extra, vals, check=False)

    def launch(self, by_slot, sizes, inner: int, nthreads: int) -> tuple:
        """(bounds, (bounds address, parts, threads), _) for the kernel's parallel loop, one thread when
        the work is too small for a team. Cached on the partitioning tensor per thread count, with
        the smallest dense width worth the team; the caller keeps ``bounds`` referenced while the
        kernel runs."""
        s = self.sched
        if s.partition_slot is None or not s.outer:
            if nthreads > 1 and self.work(by_slot, sizes, inner) < PARALLEL_MIN_WORK:
                nthreads = 1  # a thread team costs more than it saves on a tiny problem
            bounds, nparts = self.bounds(by_slot, sizes, nthreads)
            return bounds, (bounds.data_ptr(), nparts, nthreads), 0
        part, key = by_slot[s.partition_slot.key], ("launch", nthreads)
        hit = part._derived.get(key)
        if hit is None:
            def make():
                bounds, nparts = self.bounds(by_slot, sizes, nthreads)
                min_inner = -(-PARALLEL_MIN_WORK // max(1, self.work(by_slot, sizes, 1))) if nthreads > 1 else 0
                return bounds, (bounds.data_ptr(), nparts, nthreads), min_inner
            hit = part.derived(key, make)
        return self.launch(by_slot, sizes, inner, 1) if inner < hit[2] else hit

    def work(self, by_slot, sizes, inner: int) -> int:
        """Rough operation count: (rows + nonzeros of the partitioning operand) × dense inner width."""
        s = self.sched
        if not s.outer:
            return 0
        rows = sizes[s.outer[0]]
        nnz = by_slot[s.partition_slot.key].nnz if s.partition_slot is not None else rows
        return (rows + nnz) * inner

    def bounds(self, by_slot, sizes, nthreads):
        s = self.sched
        if not s.outer:
            return _EMPTY_BOUNDS, 0
        n = sizes[s.outer[0]]
        nparts = max(1, min(n, nthreads * 8)) if n else 0
        if s.partition_slot is not None:
            t = by_slot[s.partition_slot.key]
            return t.derived(("parts", nparts), lambda: _checked(balanced_bounds(t.pos[1], nparts))), nparts
        return _UNIFORM.get_or_build((n, nparts), lambda: _checked(_uniform(n, nparts))), nparts


def _seed(t, name: str) -> int:
    """A dropout seed operand's value: a one-element int64 tensor."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.numel() != 1:
        raise UserError(f"operand {name}: a dropout seed must be a one-element int64 tensor (got {t!r:.60})")
    return int(t)


def _out(t: torch.Tensor) -> int:
    """The address of an output sgnn just allocated (``real_mode`` ruled out fake allocations)."""
    p = t.data_ptr()
    return p if p or not t.numel() else pointer(t, t.dtype, "output")


def _uniform(n: int, nparts: int) -> torch.Tensor:
    return torch.linspace(0, n, nparts + 1).round().to(torch.int64) if nparts else _EMPTY_BOUNDS


def _checked(bounds: torch.Tensor) -> torch.Tensor:
    """Partition bounds, refused before they are cached if torch produced no real memory."""
    pointer(bounds, torch.int64, "partition bounds")
    return bounds


def _array_pointers(t: SparseTensor, arrays: tuple, idt: torch.dtype, vdt) -> tuple:
    """Checked addresses of the level arrays ``arrays`` names (``("pos", k)``, ``("crd", k)``, ``("val", None)``)."""
    out = []
    for kind, lk in arrays[1:]:
        a = t.values if kind == "val" else (t.pos[lk] if kind == "pos" else t.crd[lk])
        if a is None:
            raise InternalError(f"the kernel reads {kind}[{lk}] but the operand has none")
        out.append(pointer(a, vdt if kind == "val" else idt, f"sparse operand {kind}{lk if lk is not None else ''}"))
    return tuple(out)


_EMPTY_BOUNDS = torch.zeros(1, dtype=torch.int64)
_UNIFORM = LRU(64)  # (rows, parts) -> equal-row bounds
PARALLEL_MIN_WORK = 32768  # below this many (row + nonzero) × width updates, run on one thread
ROW_COST = 1  # a row costs about as much as this many nonzeros (loop overhead, output write)


def balanced_bounds(pos: torch.Tensor, nparts: int) -> torch.Tensor:
    """Row boundaries cutting ``rows + nnz`` work into ``nparts`` nearly equal parts."""
    n = pos.numel() - 1
    if nparts <= 0:
        return _EMPTY_BOUNDS
    cost = pos.to(torch.int64) + ROW_COST * torch.arange(n + 1, dtype=torch.int64)
    targets = torch.linspace(0, float(cost[-1]), nparts + 1, dtype=torch.float64)
    b = torch.searchsorted(cost.to(torch.float64), targets).to(torch.int64)
    b[0], b[-1] = 0, n
    return torch.cummax(b, 0).values.contiguous()


def _array_args(s: Schedule, params, value_dtype: torch.dtype, wide=frozenset()) -> list:
    """Per operand in ABI order (``abi.operand_arrays``): ``(key, None)`` for a dense one, ``(key,
    (arrays, index dtype, value dtype, cache key))`` for a sparse one, ``arrays`` naming its level
    arrays; the cache key (a string: its hash is computed once) names their checked addresses."""
    slots = {sl.key: sl for sl in abi.unique_slots(s)}
    out = []
    for key, arrays in abi.operand_arrays(params):
        if arrays is None:
            out.append((key, None))
            continue
        sl = slots[key]
        vdt = (torch.float32 if key in wide else value_dtype) if sl.info.value_dtype is not None else None
        idt = getattr(torch, sl.info.index_dtype)
        out.append((key, (("ptrs", *arrays), idt, vdt, f"pointers {list(arrays)} {idt} {vdt}")))
    return out


# ---------------------------------------------------------------- memo and entry points

_plans = LRU(PLANS)


def _fast_key(t):
    """A cheap hashable stand-in for ``operand_info(t)`` (the plan memo is hit on every call)."""
    if isinstance(t, SparseTensor):
        key = t._derived.get("plan_key")
        if key is None:  # racing threads compute equal tuples: no lock needed
            key = t._derived["plan_key"] = (t.format.codes, t.format.order, t.index_dtype,
                                            None if t.values is None else "count" if t.counts else t.values.dtype)
        return key
    return (t.dtype, t.dim())


def plan_for(stmt: Statement, ops: dict, memo_key=None, out_dtype=None) -> Plan:
    key = (memo_key if memo_key is not None else stmt, *ops, *[_fast_key(t) for t in ops.values()])
    key = key if out_dtype is None else (*key, out_dtype)
    p = _plans.recent.get(key) or _plans.get(key)
    if p is None:
        p = _plans.get_or_build(key, lambda: Plan(stmt, {n: operand_info(t) for n, t in ops.items()}, out_dtype))
    return p


def result_spec(stmt: Statement, ops: dict, memo_key=None, out_dtype=None) -> tuple[tuple, torch.dtype]:
    """(shape, dtype) of ``evaluate``'s dense result on these operands, without running it."""
    p = plan_for(stmt, ops := {n: as_operand(t, n) for n, t in ops.items()}, memo_key, out_dtype)
    return tuple(p.sizes(ops)[v] for v in stmt.idx), p.out_dtype


def evaluate(stmt: Statement, ops: dict, memo_key=None, out_dtype=None, out=None):
    """Compile (once) and run ``stmt`` on the named operands. ``out_dtype=torch.float32``: a mixed
    kernel, operands float32 or one narrow dtype, result float32 (``validate.mixed_dtypes``).
    ``out``: a dense result is written into this tensor (``operands.check_out``) and returned."""
    ops = {n: as_operand(t, n) for n, t in ops.items()}
    missing = [n for n in stmt.inputs if n not in ops]
    if missing:
        raise UserError(f"no tensor bound to {missing} (the expression reads {list(stmt.inputs)})")
    p = plan_for(stmt, ops, memo_key, out_dtype)
    if out is not None and p.sched.output != "dense":
        raise UserError(f"out: only a dense result can be written into a given tensor (not {p.sched.output})")
    return p(ops, out)


__all__ = ["Plan", "Kernel", "evaluate", "result_spec", "plan_for", "balanced_bounds"]
