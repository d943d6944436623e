"""Scheduling: every decision between an expression and its loop nest, taken with no user input.

- **formats**: each sparse access gets a level order concordant with the loop order; a
  discordant, coordinate (COO) or doubly compressed (DCSR) operand is converted once (cached
  on the tensor) and the conversion is a listed decision;
- **loop order**: output indices that a sparse operand stores go outermost, in storage order;
  reductions are nested below them with a workspace over the dense output indices, which run
  innermost (SIMD);
- **output format**: dense, *sampled* (the pattern of one sparse operand, shared zero-copy) or
  *assembled* (union / intersection of several patterns, two-phase);
- **tiling**: the innermost dense output index may be tiled (``tile_var``); ``tiling.decide``
  fixes the tile once the sizes are known;
- **parallelism**: the outermost loop, cut into nonzero-balanced parts.

Each decision is a ``Decision`` whose ``str`` says what and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import NotSupported, UserError
from .domains import accesses_in, domain, iterators, level_of, reduces
from .expr import Access, Reduce, Statement
from .formats import CSC, CSR, Format
from .rewrite import normalize
from .tensor import SparseTensor


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
    tile_var: str | None  # the index a register tile may span (tiling.decide fixes the tile per sizes)
    parallel: bool
    partition_slot: Slot | None
    value_dtype: str  # the compute dtype: float32 / float64 (float32 for narrow storage)
    decisions: list = field(default_factory=list)
    storage_dtype: str = ""  # bfloat16 / float16 when operands are stored narrow, else "" (= value_dtype)

    @property
    def reductions(self) -> list[Reduce]:
        """The reductions, inner ones first."""
        return list(self.reduce_order)


# ---------------------------------------------------------------- scheduling


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


def _check(stmt: Statement, expr, accs, infos) -> None:
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


def _loop_order(stmt: Statement, expr, sparse_accs, infos) -> tuple:
    """(outer, inner, reduce_order): sparse output indices in storage order, each reduction's
    indices (sparse ones first, in storage order), dense output indices."""
    out_set = set(stmt.idx)
    outer_set = {v for a in sparse_accs for v in _leading_vars(a, infos[a.name]) if v in out_set}
    inner = tuple(v for v in stmt.idx if v not in outer_set)
    edges: set = set()
    for a in sparse_accs:
        fmt = infos[a.name].format
        edges |= _chain_edges(tuple(a.idx[d] for d in fmt.order), outer_set)
    outer = tuple(_toposort([v for v in stmt.idx if v in outer_set], edges))
    reduce_order = {}
    sparse_vars = {v for a in sparse_accs for v in a.idx}
    for r in reduces(expr):
        redges: set = set()
        for a in sparse_accs:
            if a in accesses_in(r.body):
                fmt = infos[a.name].format
                redges |= _chain_edges(tuple(a.idx[d] for d in fmt.order), set(r.idx))
        red_sorted = sorted(r.idx, key=lambda v: (v not in sparse_vars, r.idx.index(v)))
        reduce_order[r] = tuple(_toposort(red_sorted, redges))
    return outer, inner, reduce_order


def _rank(outer, inner, reduce_order) -> dict:
    rank = {v: (0, k) for k, v in enumerate(outer)}
    for order in reduce_order.values():
        for k, v in enumerate(order):
            rank[v] = (1, k)
    for k, v in enumerate(inner):
        rank[v] = (2, k)
    return rank


def make_schedule(stmt: Statement, infos: dict[str, OperandInfo]) -> Schedule:
    """Choose formats, loop order, output format, tiled index and parallelism for ``stmt``."""
    expr = normalize(stmt.expr)
    stmt = Statement(stmt.idx, expr, stmt.name, stmt.inputs)
    decisions: list[Decision] = []
    accs = list(dict.fromkeys(accesses_in(expr)))
    _check(stmt, expr, accs, infos)
    storage = _value_dtype(infos, accs)
    value_dtype = "float32" if storage in NARROW else storage
    outer, inner, reduce_order = _loop_order(stmt, expr, [a for a in accs if infos[a.name].sparse], infos)
    rank = _rank(outer, inner, reduce_order)
    slots = {a: _slot_for(a, infos[a.name], rank, decisions) for a in accs}
    output, driver, out_format = _output_format(stmt, slots, outer, inner, decisions)
    slots = _unique_where_merged(stmt, slots, outer, output, decisions)
    partition = _partition_slot(slots, outer)
    decisions.append(_parallel_decision(outer, partition))
    decisions.insert(0, Decision(f"loop order {' > '.join(outer) or '-'} | reductions "
                                 + "; ".join(f"{r.op}_{','.join(o)}" for r, o in reduce_order.items())
                                 + f" | {' > '.join(inner) or '-'} innermost",
                                 "sparse output indices in storage order, reductions below, dense "
                                 "output indices innermost for SIMD"))
    return Schedule(stmt, slots, outer, inner, reduce_order, output, driver, out_format,
                    _tile_var(slots, inner), bool(outer), partition, value_dtype, decisions,
                    storage_dtype=storage if storage in NARROW else "")


def _parallel_decision(outer, partition) -> Decision:
    if outer:
        how = (f"nonzero-balanced parts from {partition.operand}'s positions" if partition
               else "equal parts")
        return Decision(f"parallel loop {outer[0]}", how)
    return Decision("serial", "no output index is stored by a sparse operand, so no race-free outer loop exists")


def _tile_var(slots, inner) -> str | None:
    """The innermost dense output index, when no sparse operand stores it: the index a tile spans."""
    dense_inner = [v for v in inner if not any(s.sparse and v in a.idx for a, s in slots.items())]
    if not dense_inner or dense_inner[-1] != inner[-1]:
        return None
    return dense_inner[-1]


def _leading_vars(a: Access, info: OperandInfo) -> list[str]:
    """Indices a sparse access stores up to its last compressed level (trailing dense levels excluded:
    they can run innermost like any dense index, e.g. the head index of per-edge values)."""
    fmt = info.format
    last = max((k for k, lv in enumerate(fmt.levels) if not lv.has_locate), default=len(fmt.levels) - 1)
    return [a.idx[fmt.order[k]] for k in range(last + 1)]


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

    first, rest = fmt.levels[0], fmt.levels[1:]  # iterated natively: locate the first level, positions below
    natively = first.has_locate and all(lv.has_locate or lv.iterates_positions for lv in rest)
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
            if not all(lv.unique for lv in fmt.levels):  # keep repeated coordinates: each is one more term
                target, name = Format("du", order=target.order), f"{target.name} (repeats kept)"
                why += "; a non-unique level keeps its repeats"
            decisions.append(Decision(f"convert {a.name}: {fmt.name} -> {name}", why))
            return Slot(f"{key}_{c_name(target)}", a.name, info, target)
    raise NotSupported(f"{a.name}[{','.join(a.idx)}]: no level order is concordant with the loop order")


def _output_format(stmt, slots, outer, inner, decisions):
    if not outer:
        decisions.append(Decision("output dense", "no output index is stored by a sparse operand"))
        return "dense", None, None
    f = domain(stmt.expr, outer[-1], level_of(slots))
    if f[0] in ("full", "walk"):
        decisions.append(Decision("output dense", "the outputs' last sparse index has a full domain"))
        return "dense", None, None
    its = iterators(f)
    if f[0] == "it":
        a = f[1]
        if slots[a].level_vars(a) == outer:
            order = tuple(stmt.idx.index(v) for v in outer) + tuple(stmt.idx.index(v) for v in inner)
            codes = slots[a].format.codes + "d" * len(inner)
            fmt = Format(codes, order=order)
            decisions.append(Decision(f"output sampled: pattern of {a.name} ({fmt!r}), shared zero-copy",
                                      "every output entry lies in one sparse operand's pattern"))
            return "sampled", a, fmt
    if len(outer) == 2 and all(slots[a].format.levels[0].has_locate for a in its):
        kind = "union" if f[0] == "or" else "intersection"
        fmt = Format("ds" + "d" * len(inner), order=tuple(stmt.idx.index(v) for v in (*outer, *inner)))
        decisions.append(Decision(f"output assembled: {kind} of {', '.join(a.name for a in its)} ({fmt!r})",
                                  "the output pattern merges several operands: count, prefix-sum, fill"))
        return "assembled", its[0], fmt
    raise NotSupported(f"output of {stmt}: a sparse output must follow one operand's pattern or merge "
                       f"matrices")


def _unique_where_merged(stmt, slots, outer, output, decisions):
    """Co-iteration needs unique coordinates: non-unique levels in a merge are summed first."""
    find = level_of(slots)
    merged = set()
    for scope, v in [(stmt.expr, v) for v in outer] + [(r.body, v) for r in reduces(stmt.expr) for v in r.idx]:
        f = domain(scope, v, find)
        if f[0] in ("and", "or", "walk"):
            merged |= set(iterators(f))
    out = dict(slots)
    for a in merged:
        s = slots[a]
        if not all(lv.unique for lv in s.format.levels):
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


def _partition_slot(slots, outer) -> Slot | None:
    """The sparse operand whose row lengths balance the parallel loop (most nonzeros wins at run time)."""
    if not outer:
        return None
    for a, s in slots.items():
        f = s.format
        if s.sparse and len(f.levels) >= 2 and s.level_vars(a)[0] == outer[0] and f.levels[0].has_locate \
                and f.levels[1].iterates_positions:
            return s
    return None
