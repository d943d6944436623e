"""Tiling, decided once per set of index sizes: a register tile over the innermost dense output
index, exact (a compile-time width) for common widths, moved outermost when the gathered operand
overflows the last-level cache, with software prefetch when it overflows L2.

The schedule only names the index a tile may span (``Schedule.tile_var``); ``decide`` fixes the
tile from the sizes of one call.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .precision import cpu_flags
from .schedule import Decision


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
# Cache lines (accumulator vectors) of a register tile; 16 with AVX-512's 32 registers (F=256 fp32: 1 pass)
REGISTER_TILE_LINES, WIDE_TILE_LINES = 8, 16
CACHE_SHARE = 1.0  # LLC share of the old LLC-sized panels (panels are now one register tile; tests use it)
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


@dataclass(frozen=True)
class Tile:
    var: str
    size: int
    outer: bool  # the tile loop encloses the parallel loop (cache tiling)
    prefetch: bool = False  # software-prefetch the gathered rows (they overflow L2)
    exact: bool = False  # the tile spans the whole dimension: its size is a compile-time constant


def decide(sched, sizes: dict[str, int]) -> tuple[Tile | None, Decision | None]:
    """The tile for ``sizes``: a register tile, moved outermost when the gathered panel overflows the cache."""
    v = sched.tile_var
    if v is None:
        return None, None
    elem = 4 if sched.value_dtype == "float32" else 8
    line = LINE_BYTES // elem
    most = register_tile_lines() * line
    n = sizes.get(v, 0)
    reg, exact = register_width(n, most, line)
    why = f"{reg} {elem}-byte accumulators ({-(-reg // line)} cache line(s))"
    gathered = [a for a, s in sched.slots.items() if not s.sparse and v in a.idx
                and any(x not in sched.stmt.idx for x in a.idx)]
    if exact:
        why += f"; the tile spans {v}: N_{v} is the constant {reg}"
    elif n < reg:
        why += f"; width {n} runs the generic {reg}-wide kernel (exact widths: {EXACT_WIDTHS})"
    if not gathered or not sched.parallel:
        return Tile(v, reg, False, exact=exact), Decision(f"tile {v} by {reg} (registers)", why)
    rows = max(1, max(math.prod(sizes[x] for x in a.idx if x != v) for a in gathered))
    return _cache_tile(v, reg, most, exact, rows, n, elem, line, why, ", ".join(a.name for a in gathered))


def _cache_tile(v, reg, most, exact, rows, n, elem, line, why, names):
    """A register tile that stays innermost, or a cache panel whose loop encloses the parallel loop."""
    l2 = cache_sizes().get(2, 2**20)
    prefetch = PREFETCH and rows * n * elem > PREFETCH_L2_FACTOR * l2
    if prefetch:
        why += f"; prefetch gathered rows (they overflow {PREFETCH_L2_FACTOR}x L2)"
    llc_level, llc = max(cache_sizes().items())
    if rows * n * elem <= OUTER_TILE_FACTOR * llc:
        return Tile(v, reg, False, prefetch, exact), Decision(
            f"tile {v} by {reg} (registers)", f"{why}; gathered {names} ({rows * n * elem / 2**20:.1f} MiB) "
            f"is under {OUTER_TILE_FACTOR}x L{llc_level} ({llc / 2**20:.0f} MiB): no cache panels")
    big = f"gathered {names} is {rows * n * elem / 2**20:.1f} MiB, over {OUTER_TILE_FACTOR}x L{llc_level}"
    if n <= most:  # panels are one register tile wide: LLC-sized ones (F=512: 2 lines) ran at 0.3 of the probe
        return Tile(v, reg, False, prefetch, exact), Decision(f"tile {v} by {reg} (registers)", f"{why}; {big}")
    return Tile(v, most, True, prefetch), Decision(f"tile {v} by {most}, tile loop outermost", f"{big}; 1-tile panels")


def register_tile_lines() -> int:
    """Cache lines a register tile may span: half the vector registers (16 accumulators with AVX-512)."""
    return WIDE_TILE_LINES if "avx512f" in cpu_flags() else REGISTER_TILE_LINES


def register_width(n: int, most: int, line: int = 16) -> tuple[int, bool]:
    """(tile, exact) for a dense width ``n`` (``line`` values per cache line): exact for
    ``EXACT_WIDTHS``, else the smallest bucket that holds it (at most ``most``)."""
    if n in EXACT_WIDTHS and n <= most:
        return n, True
    buckets = [b * line for b in WIDTH_BUCKET_LINES if n <= b * line <= most]
    return (min(buckets) if buckets else most), False
