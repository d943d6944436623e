"""Scheduling: every decision between an expression and its loop nest, taken with no user input.

- **formats**: each sparse access gets a level order concordant with the loop order; a
  discordant, coordinate (COO) or doubly compressed (DCSR) operand is converted once (cached
  on the tensor) and the conversion is a listed decision;
- **loop order**: output indices that a sparse operand stores go outermost, in storage order;
  reductions are nested below them with a workspace over the dense output indices, which run
  innermost (SIMD);
- **output format**: dense, *sampled* (the pattern of one sparse operand, shared zero-copy) or
  *assembled* (union / intersection of several patterns, two-phase);
- **tiling**: only a dense output index is tiled: to a register tile, and when the gathered
  dense operand does not fit in the cache share the OS reports, the tile loop moves outermost;
- **parallelism**: the outermost loop, cut into nonzero-balanced parts.

Each decision is a ``Decision`` whose ``str`` says what and why.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import NotSupported, UserError
from .expr import Access, BinOp, Call, Const, Expr, Pattern, Reduce, Statement, walk
from .formats import CSC, CSR, Format
from .rewrite import normalize


# ---------------------------------------------------------------- machine


@functools.lru_cache(maxsize=1)
def cache_sizes() -> dict[int, int]:
    """Data/unified cache size in bytes per level, as the OS reports it (per instance)."""
    sizes: dict[int, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")):
        try:
            if (d / "type").read_text().strip() == "Instruction":
                continue
            level = int((d / "level").read_text())
            text = (d / "size").read_text().strip().upper()
            mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1], 1)
            sizes[level] = int(text.rstrip("KMG")) * mult
        except (OSError, ValueError):
            continue
    for level, name in ((1, "SC_LEVEL1_DCACHE_SIZE"), (2, "SC_LEVEL2_CACHE_SIZE"), (3, "SC_LEVEL3_CACHE_SIZE")):
        if level not in sizes:
            try:
                v = os.sysconf(name)
                if v > 0:
                    sizes[level] = v
            except (ValueError, OSError):
                pass
    sizes.setdefault(1, 32 * 1024)
    sizes.setdefault(2, 512 * 1024)
    return sizes


LINE_BYTES = 64
REGISTER_TILE_LINES = 8  # 8 cache lines = 8 zmm accumulators (128 floats / 64 doubles)
CACHE_SHARE = 1.0  # of the last-level cache a gathered operand panel may occupy
# Move the tile loop outermost only when the gathered operand is this many times the LLC: measured on
# the 2-vCPU VM (32 MiB L3 shared with neighbours), an arXiv-sized SpMM with prefetching ran as fast or
# faster untiled (F=64..256, 86-173 MiB gathered) than with 16-64 wide panels.
OUTER_TILE_FACTOR = 8
PREFETCH = True  # software prefetch of gathered rows that overflow PREFETCH_L2_FACTOR x L2
# Measured (2 threads, 1 MiB L2): gathered 1.3 / 2.5 MB (PubMed size, F=16/32) 17% / 12% faster without
# prefetch, 5 MB even, 10.8 MB (arXiv size, F=16) 3x faster with it.
PREFETCH_L2_FACTOR = 4
# Widths compiled as exact compile-time constants (constant strides, no remainder loop: Cora F=16
# 14.8 -> 11.2 us, docs/design-notes.md "exact tiles"). Any other width runs a generic kernel whose
# tile is the next bucket of whole 64-byte vectors and whose width is a run-time value (register
# accumulators, loads bounded by the operand's end, a masked store), so a sweep over hidden sizes
# 1..160 compiles about ten kernels instead of one per width.
EXACT_WIDTHS = (8, 16, 32, 64, 128)
WIDTH_BUCKET_LINES = (1, 2, 4, 8)  # bucket widths in cache lines (16/32/64/128 floats, 8/16/32/64 doubles)


# ---------------------------------------------------------------- operands


@dataclass(frozen=True)
class OperandInfo:
    """What a kernel specialises on for one operand (hashable: part of the memo key)."""

    sparse: bool
    ndim: int
    format: Format | None
    index_dtype: str | None  # "int32" / "int64"
    # "float32" / "float64" / None (pattern-only sparse) / "count" (multiplicities of a pattern:
    # values the kernel reads in the expression's dtype, see SparseTensor.counts)
    value_dtype: str | None

    @classmethod
    def of(cls, t) -> "OperandInfo":
        from .tensor import SparseTensor
        if isinstance(t, SparseTensor):
            vd = None if t.values is None else "count" if t.counts else str(t.values.dtype).replace("torch.", "")
            return cls(True, t.ndim, t.format, str(t.index_dtype).replace("torch.", ""), vd)
        return cls(False, t.dim(), None, None, str(t.dtype).replace("torch.", ""))


@dataclass(frozen=True)
class Slot:
    """An operand as the kernel sees it: after any format conversion."""

    key: str  # C-safe name
    operand: str  # the user's name
    info: OperandInfo
    convert_to: Format | None = None

    @property
    def sparse(self) -> bool:
        return self.info.sparse

    @property
    def format(self) -> Format | None:
        return self.convert_to or self.info.format

    def level_vars(self, access: Access) -> tuple[str, ...]:
        """The index variable each storage level stores."""
        if not self.sparse:
            return access.idx
        return tuple(access.idx[d] for d in self.format.order)


@dataclass(frozen=True)
class Decision:
    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}  ({self.reason})"


@dataclass(frozen=True)
class Tile:
    var: str
    size: int
    outer: bool  # the tile loop encloses the parallel loop (cache tiling)
    prefetch: bool = False  # software-prefetch the gathered rows (they overflow L2)
    exact: bool = False  # the tile spans the whole dimension: its size is a compile-time constant


@dataclass
class Schedule:
    stmt: Statement  # normalised
    slots: dict  # Access -> Slot
    outer: tuple[str, ...]  # output indices stored by a sparse operand, loop order
    inner: tuple[str, ...]  # dense output indices (workspace dimensions), innermost
    reduce_order: dict  # Reduce -> tuple of its loop indices in order
    output: str  # "dense" | "sampled" | "assembled"
    driver: Access | None  # the access whose pattern a sampled/assembled output follows
    out_format: Format | None
    tile: Tile | None
    parallel: bool
    partition_slot: Slot | None
    value_dtype: str  # the compute dtype: float32 / float64 (float32 for narrow storage)
    decisions: list = field(default_factory=list)
    storage_dtype: str = ""  # bfloat16 / float16 when operands are stored narrow, else "" (= value_dtype)

    def sparse_accesses(self):
        return [a for a, s in self.slots.items() if s.sparse]


# ---------------------------------------------------------------- domains


FULL = ("full",)


def _it(a: Access):
    return ("it", a)


def domain(e: Expr, v: str, level_of) -> tuple:
    """Iteration domain of index ``v`` in ``e`` as a formula over sparse level iterators.

    ``level_of(access, v)`` returns the Level that stores ``v`` when it is the access's next
    level, else None. Products intersect, sums unite; a dense level or dense operand is FULL.
    Results: ``("full",)``, ``("it", access)``, ``("and", [...])``, ``("or", [...])``,
    ``("walk", [...])`` (FULL united with iterators: a dense loop that walks them).
    """
    if isinstance(e, (Access, Pattern)):
        a = e.access if isinstance(e, Pattern) else e
        lv = level_of(a, v)
        return _it(a) if lv is not None and lv.iterates_by_position else FULL
    if isinstance(e, Const):
        return FULL
    if isinstance(e, Call):
        return domain(e.args[0], v, level_of)
    if isinstance(e, Reduce):
        return FULL if v in e.idx else domain(e.body, v, level_of)
    if isinstance(e, BinOp):
        a, b = domain(e.a, v, level_of), domain(e.b, v, level_of)
        if e.op in ("*",):
            return _and(a, b)
        if e.op == "/":
            return a
        return _or(a, b)
    raise NotSupported(f"domain of {type(e).__name__}")


def _and(a, b):
    if a == FULL:
        return b
    if b == FULL:
        return a
    if a[0] == "walk":
        return b if b[0] != "walk" else ("walk", a[1] + b[1])
    if b[0] == "walk":
        return a
    if a == b:
        return a
    return ("and", _flat("and", a) + _flat("and", b))


def _or(a, b):
    if a == FULL or b == FULL:
        rest = [x for x in (a, b) if x != FULL]
        its = [it for x in rest for it in iterators(x)]
        return ("walk", its) if its else FULL
    if a[0] == "walk" or b[0] == "walk":
        return ("walk", iterators(a) + iterators(b))
    if a == b:
        return a
    return ("or", _flat("or", a) + _flat("or", b))


def _flat(op, x):
    return list(x[1]) if x[0] == op else [x]


def iterators(f) -> list:
    """The distinct iterators (accesses) a domain formula mentions."""
    if f[0] == "it":
        return [f[1]]
    if f[0] == "full":
        return []
    if f[0] == "walk":
        out = []
        for a in f[1]:
            if a not in out:
                out.append(a)
        return out
    out = []
    for x in f[1]:
        for a in iterators(x):
            if a not in out:
                out.append(a)
    return out


# ---------------------------------------------------------------- scheduling


def reduces(e: Expr) -> list[Reduce]:
    """Reduce nodes, post-order (inner ones first)."""
    out = []

    def rec(x):
        from .expr import children
        for c in children(x):
            rec(c)
        if isinstance(x, Reduce) and x not in out:
            out.append(x)
    rec(e)
    return out


def _toposort(nodes: list[str], edges: set[tuple[str, str]]) -> list[str]:
    order, left = [], list(nodes)
    while left:
        free = [n for n in left if not any(b == n and a in left for a, b in edges)]
        if not free:  # a cycle: break it by taking the first remaining
            free = [left[0]]
        order.append(free[0])
        left.remove(free[0])
    return order


def _chain_edges(vars_in_order, allowed) -> set:
    vs = [v for v in vars_in_order if v in allowed]
    return {(a, b) for k, a in enumerate(vs) for b in vs[k + 1:]}


def make_schedule(stmt: Statement, infos: dict[str, OperandInfo]) -> Schedule:
    """Choose formats, loop order, output format, tiles and parallelism for ``stmt``."""
    expr = normalize(stmt.expr)
    stmt = Statement(stmt.idx, expr, stmt.name, stmt.inputs)
    decisions: list[Decision] = []
    accs = list(dict.fromkeys(x.access if isinstance(x, Pattern) else x
                              for x in walk(expr) if isinstance(x, (Access, Pattern))))
    for a in accs:
        if a.name not in infos:
            raise UserError(f"no tensor bound to {a.name!r} (expression uses {sorted({x.name for x in accs})})")
        if infos[a.name].ndim != len(a.idx):
            raise UserError(f"{a.name} is accessed with {len(a.idx)} indices {a.idx} but has "
                            f"{infos[a.name].ndim} dimensions")
    for r in reduces(expr):
        clash = set(r.idx) & set(stmt.idx)
        if clash:
            raise UserError(f"index {sorted(clash)} is both an output index and reduced")
    storage = _value_dtype(infos, accs)
    value_dtype = "float32" if storage in NARROW else storage
    out_set = set(stmt.idx)
    sparse_accs = [a for a in accs if infos[a.name].sparse]
    outer_set = {v for a in sparse_accs for v in _leading_vars(a, infos[a.name]) if v in out_set}
    inner = tuple(v for v in stmt.idx if v not in outer_set)
    # loop order of the outer indices: follow the stored level order of the sparse accesses
    edges: set = set()
    for a in sparse_accs:
        fmt = infos[a.name].format
        edges |= _chain_edges(tuple(a.idx[d] for d in fmt.order), outer_set)
    outer = tuple(_toposort([v for v in stmt.idx if v in outer_set], edges))
    # reduction loop orders
    red_list = reduces(expr)
    reduce_order = {}
    for r in red_list:
        redges: set = set()
        for a in sparse_accs:
            if a in _accesses_in(r.body):
                fmt = infos[a.name].format
                redges |= _chain_edges(tuple(a.idx[d] for d in fmt.order), set(r.idx))
        sparse_vars = {v for a in sparse_accs for v in a.idx}
        red_sorted = sorted(r.idx, key=lambda v: (v not in sparse_vars, r.idx.index(v)))
        reduce_order[r] = tuple(_toposort(red_sorted, redges))
    rank = {v: (0, k) for k, v in enumerate(outer)}
    for r in red_list:
        for k, v in enumerate(reduce_order[r]):
            rank[v] = (1, k)
    for k, v in enumerate(inner):
        rank[v] = (2, k)
    slots = {a: _slot_for(a, infos[a.name], rank, decisions) for a in accs}
    output, driver, out_format = _output_format(stmt, slots, outer, inner, decisions)
    slots = _unique_where_merged(stmt, slots, outer, output, decisions)
    tile = _tile(stmt, slots, outer, inner, value_dtype, infos, decisions)
    partition = _partition_slot(slots, outer)
    parallel = bool(outer)
    if parallel:
        how = (f"nonzero-balanced parts from {partition.operand}'s positions" if partition
               else "equal parts")
        decisions.append(Decision(f"parallel loop {outer[0]}", how))
    else:
        decisions.append(Decision("serial", "no output index is stored by a sparse operand, so no "
                                  "race-free outer loop exists"))
    decisions.insert(0, Decision(f"loop order {' > '.join(outer) or '-'} | reductions "
                                 + "; ".join(f"{r.op}_{','.join(reduce_order[r])}" for r in red_list)
                                 + f" | {' > '.join(inner) or '-'} innermost",
                                 "sparse output indices in storage order, reductions below, dense "
                                 "output indices innermost for SIMD"))
    return Schedule(stmt, slots, outer, inner, reduce_order, output, driver, out_format, tile,
                    parallel, partition, value_dtype, decisions,
                    storage_dtype=storage if storage in NARROW else "")


def _leading_vars(a: Access, info: OperandInfo) -> list[str]:
    """Indices a sparse access stores up to its last compressed level (trailing dense levels excluded:
    they can run innermost like any dense index, e.g. the head index of per-edge values)."""
    fmt = info.format
    last = max((k for k, lv in enumerate(fmt.levels) if lv.kind != "dense"), default=len(fmt.levels) - 1)
    return [a.idx[fmt.order[k]] for k in range(last + 1)]


def _accesses_in(e: Expr) -> list[Access]:
    return [x.access if isinstance(x, Pattern) else x for x in walk(e) if isinstance(x, (Access, Pattern))]


def _value_dtype(infos, accs) -> str:
    seen = {}
    for a in accs:
        vd = infos[a.name].value_dtype
        if vd not in (None, "count"):
            seen.setdefault(vd, a.name)
    if len(seen) > 1:
        names = ", ".join(f"{n} is {d}" for d, n in seen.items())
        raise UserError(f"dtype mismatch between operands ({names}); sgnn does not promote: convert them "
                        f"to one float dtype (e.g. .float() or .bfloat16())")
    vd = next(iter(seen), "float32")
    if vd not in ("float32", "float64", *NARROW):
        raise UserError(f"expected float32, float64, bfloat16 or float16 operands (got {vd})")
    return vd


# Narrow storage dtypes: operands stay narrow in memory; kernels convert on load and accumulate in
# float32 registers; the result is float32 rounded once (to nearest even) to the operands' dtype.
NARROW = ("bfloat16", "float16")


def _slot_for(a: Access, info: OperandInfo, rank, decisions) -> Slot:
    key = "a_" + a.name
    if not info.sparse:
        return Slot(key, a.name, info)
    fmt = info.format

    def concordant(f: Format) -> bool:
        ranks = [rank.get(a.idx[d], (1, 0)) for d in f.order]
        return ranks == sorted(ranks)

    natively = fmt.codes.startswith("d") and set(fmt.codes[1:]) <= {"s", "u", "d"}
    if natively and concordant(fmt):
        return Slot(key, a.name, info)
    if info.ndim != 2:
        raise NotSupported(f"{a.name}: format {fmt!r} is not concordant with the loop order "
                           f"and only matrices can be converted")
    for target in (CSR, CSC):
        if concordant(target):
            why = ("its level order is discordant with the loop order" if natively else
                   f"{fmt.name} levels are iterated through CSR/CSC")
            name = target.name
            if "u" in fmt.codes:  # keep repeated coordinates: each is one more term
                target, name = Format("du", order=target.order), f"{target.name} (repeats kept)"
                why += "; a non-unique level keeps its repeats"
            decisions.append(Decision(f"convert {a.name}: {fmt.name} -> {name}", why))
            return Slot(f"{key}_{c_name(target)}", a.name, info, target)
    raise NotSupported(f"{a.name}[{','.join(a.idx)}]: no level order is concordant with the loop order")


def _level_of(slots, bound_vars=None):
    def level_of(a: Access, v: str):
        s = slots[a]
        if not s.sparse:
            return None
        lv = s.level_vars(a)
        if v not in lv:
            return None
        return s.format.levels[lv.index(v)]
    return level_of


def _output_format(stmt, slots, outer, inner, decisions):
    if not outer:
        decisions.append(Decision("output dense", "no output index is stored by a sparse operand"))
        return "dense", None, None
    top = _top_level(stmt.expr)
    f = domain(top, outer[-1], _level_of(slots))
    if f[0] in ("full", "walk"):
        decisions.append(Decision("output dense", "the outputs' last sparse index has a full domain"))
        return "dense", None, None
    its = iterators(f)
    if f[0] == "it":
        a = f[1]
        lv = slots[a].level_vars(a)
        if tuple(v for v in lv) == outer:
            order = tuple(stmt.idx.index(v) for v in outer) + tuple(stmt.idx.index(v) for v in inner)
            codes = slots[a].format.codes + "d" * len(inner)
            fmt = Format(codes, order=order)
            decisions.append(Decision(f"output sampled: pattern of {a.name} ({fmt!r}), shared zero-copy",
                                      "every output entry lies in one sparse operand's pattern"))
            return "sampled", a, fmt
    if len(outer) == 2 and all(slots[a].format.levels[0].kind == "dense" for a in its):
        kind = "union" if f[0] == "or" else "intersection"
        fmt = Format("ds" + "d" * len(inner), order=tuple(stmt.idx.index(v) for v in (*outer, *inner)))
        decisions.append(Decision(f"output assembled: {kind} of {', '.join(a.name for a in its)} ({fmt!r})",
                                  "the output pattern merges several operands: count, prefix-sum, fill"))
        return "assembled", its[0], fmt
    raise NotSupported(f"output of {stmt}: a sparse output must follow one operand's pattern or merge "
                       f"matrices")


def _top_level(e: Expr) -> Expr:
    """``e`` with reductions over non-output indices kept (their domains propagate)."""
    return e


def _unique_where_merged(stmt, slots, outer, output, decisions):
    """Co-iteration needs unique coordinates: non-unique levels in a merge are summed first."""
    level_of = _level_of(slots)
    merged = set()
    for v in outer:
        f = domain(stmt.expr, v, level_of)
        if f[0] in ("and", "or", "walk"):
            merged |= set(iterators(f))
    for r in reduces(stmt.expr):
        for v in r.idx:
            f = domain(r.body, v, level_of)
            if f[0] in ("and", "or", "walk"):
                merged |= set(iterators(f))
    out = dict(slots)
    for a in merged:
        s = slots[a]
        if "u" in s.format.codes:
            target = CSR if s.format.order == (0, 1) else CSC
            info, why = s.info, "co-iteration needs unique coordinates"
            if info.value_dtype is None:  # pattern-only: merged repeats must still add up
                info, why = replace(info, value_dtype="count"), why + "; repeats become counts"
            decisions.append(Decision(f"convert {a.name}: sum duplicates ({target.name})", why))
            out[a] = Slot(f"{s.key}_{target.name}u", s.operand, info, target)
    return out


def c_name(fmt: Format) -> str:
    """A C identifier fragment naming a format (``csr``, ``du10``)."""
    return fmt.name if fmt.name.isidentifier() else fmt.codes + "".join(map(str, fmt.order))


def _tile(stmt, slots, outer, inner, value_dtype, infos, decisions) -> Tile | None:
    dense_inner = [v for v in inner if not any(s.sparse and v in a.idx for a, s in slots.items())]
    if not dense_inner:
        return None
    var = dense_inner[-1]
    if var != inner[-1]:
        return None
    elem = 4 if value_dtype == "float32" else 8
    line = LINE_BYTES // elem
    reg = REGISTER_TILE_LINES * line
    return Tile(var, reg, outer=False)  # size and placement are fixed at run time by tile_for()


def tile_for(sched: Schedule, sizes: dict[str, int]) -> tuple[Tile | None, Decision | None]:
    """The tile at run time: a register tile, moved outermost when the gathered panel overflows the cache."""
    t = sched.tile
    if t is None:
        return None, None
    elem = 4 if sched.value_dtype == "float32" else 8
    line = LINE_BYTES // elem
    n = sizes.get(t.var, 0)
    reg, exact = register_width(n, t.size, line)
    why = f"{reg} {elem}-byte accumulators ({-(-reg // line)} cache line(s))"
    gathered = [a for a, s in sched.slots.items() if not s.sparse and t.var in a.idx
                and any(v not in sched.stmt.idx for v in a.idx)]
    if exact:
        why += f"; the tile spans {t.var}: N_{t.var} is the constant {reg}"
    elif n < reg:
        why += f"; width {n} runs the generic {reg}-wide kernel (exact widths: {EXACT_WIDTHS})"
    if not gathered or not sched.parallel:
        return Tile(t.var, reg, False, exact=exact), Decision(f"tile {t.var} by {reg} (registers)", why)
    rows = max(1, max(_prod(sizes[v] for v in a.idx if v != t.var) for a in gathered))
    l2 = cache_sizes().get(2, 2**20)
    prefetch = PREFETCH and rows * n * elem > PREFETCH_L2_FACTOR * l2
    if prefetch:
        why += f"; prefetch gathered rows (they overflow {PREFETCH_L2_FACTOR}x L2)"
    llc_level = max(cache_sizes())
    llc = cache_sizes()[llc_level]
    budget = CACHE_SHARE * llc
    names = ", ".join(a.name for a in gathered)
    if rows * n * elem <= OUTER_TILE_FACTOR * llc:
        return Tile(t.var, reg, False, prefetch, exact), Decision(
            f"tile {t.var} by {reg} (registers)", f"{why}; gathered {names} ({rows * n * elem / 2**20:.1f} MiB) "
            f"is under {OUTER_TILE_FACTOR}x L{llc_level} ({llc / 2**20:.0f} MiB): no cache panels")
    width = _pow2_floor(max(line, min(int(budget // (rows * elem)) // line * line, t.size)))
    return Tile(t.var, width, True, prefetch), Decision(
        f"tile {t.var} by {width}, tile loop outermost",
        f"gathered {names} is {rows * n * elem / 2**20:.1f} MiB; a {width}-wide panel "
        f"({rows * width * elem / 2**20:.1f} MiB) fits {CACHE_SHARE:.0%} of L{llc_level} ({llc / 2**20:.0f} MiB)")


def register_width(n: int, most: int, line: int = 16) -> tuple[int, bool]:
    """(tile, exact) for a dense width ``n`` (``line`` values per cache line): exact for
    ``EXACT_WIDTHS``, else the smallest bucket that holds it (at most ``most``)."""
    if n in EXACT_WIDTHS and n <= most:
        return n, True
    buckets = [b * line for b in WIDTH_BUCKET_LINES if n <= b * line <= most]
    return (min(buckets) if buckets else most), False


def _pow2_floor(x: int) -> int:
    return 1 << (max(1, x).bit_length() - 1)


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def _partition_slot(slots, outer) -> Slot | None:
    """The sparse operand whose row lengths balance the parallel loop (most nonzeros wins at run time)."""
    if not outer:
        return None
    best = None
    for a, s in slots.items():
        if not s.sparse:
            continue
        lv = s.level_vars(a)
        f = s.format
        if len(f.levels) >= 2 and lv[0] == outer[0] and f.levels[0].kind == "dense" and f.levels[1].has_pos:
            best = best or s
    return best
