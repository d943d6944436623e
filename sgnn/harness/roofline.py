"""The memory model of an SpMM Y = A·X (CSR A, n × n, nnz stored values; X, Y n × F) per value dtype,
and the gather roofline it is measured against.

Bytes (``e`` the element size of the dtype: 8 float64, 4 float32, 2 bfloat16 / float16; indices int32):

- memory floor (what an SpMM must move at least, over the copy bandwidth):
  ``4(n+1) + (4+e)·nnz + 2·e·n·F`` (pos, crd + values once, X read once, Y written once);
- SpMM bytes (what it moves when every stored value gathers one row of X, cache hits included):
  gathered ``e·nnz·F`` plus streamed ``4(n+1) + (4+e)·nnz + e·n·F`` (pos, crd, values, Y);
- gather roofline: the best bandwidth, in the same byte model without the values
  (``e·nnz·F + 4(n+1) + 4·nnz + e·n·F``), of read-only probes that do what the SpMM does on the same
  CSR pattern: read the rows ``crd`` names, sum them per output row, write Y once
  (:func:`gather_bandwidth`). Candidates: ``probe`` (gather_probe.py: an OpenMP + AVX-512 C++ kernel
  independent of sgnn's generator, at several prefetch distances), ``embedding_bag`` (torch's
  ``embedding_bag(mode="sum")`` on the CSR offsets) and ``index_select`` (the former probe: it also
  writes an nnz × F copy, so it understates; kept for comparison). The best run of the best candidate
  is the roofline; an SpMM's median against it above 100% means the probes understate, and the bench
  says so (``PROBE UNDERSTATES``).

Cache effects match the SpMM's because the probe gathers with the graph's own ``crd``
(:func:`uniform_pattern`: uniformly random columns of an n-row table when no graph is given).
"""
from __future__ import annotations

import torch

from .gather_probe import check, gather_sum
from .timing import time_calls

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
          "float64": torch.float64, "fp64": torch.float64, "double": torch.float64}
SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}
PROBES = ("probe", "embedding_bag", "index_select")


def dtype_of(name) -> torch.dtype:
    """torch dtype of a config name (float32/fp32, bfloat16/bf16, float16/fp16/half, float64/fp64)."""
    if isinstance(name, torch.dtype) and name in SHORT:
        return name
    key = str(name).replace("torch.", "").lower()
    if key not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)} (got {name!r})")
    return DTYPES[key]


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def floor_bytes(n: int, nnz: int, f: int, dtype: torch.dtype = torch.float32) -> int:
    """Fewest bytes an SpMM must move: pos, crd + values once, X read once, Y written once."""
    e = itemsize(dtype)
    return 4 * (n + 1) + (4 + e) * nnz + 2 * e * n * f


def gathered_bytes(nnz: int, f: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of X rows gathered: one row of F elements per stored value."""
    return itemsize(dtype) * nnz * f


def streamed_bytes(n: int, nnz: int, f: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes read or written in order: pos, crd, values and Y."""
    e = itemsize(dtype)
    return 4 * (n + 1) + (4 + e) * nnz + e * n * f


def roofline_bytes(n: int, nnz: int, f: int, dtype: torch.dtype = torch.float32) -> int:
    """An SpMM's bytes in the gather model: gathered plus streamed (pos, crd, values, Y)."""
    return gathered_bytes(nnz, f, dtype) + streamed_bytes(n, nnz, f, dtype)


def probe_bytes(n: int, nnz: int, f: int, dtype: torch.dtype = torch.float32) -> int:
    """A gather probe's bytes in the same model: gathered, pos, crd and Y (no values)."""
    return roofline_bytes(n, nnz, f, dtype) - itemsize(dtype) * nnz


def uniform_pattern(n: int, nnz: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An int32 CSR pattern of n rows with nnz // n or nnz // n + 1 entries each, columns uniform over n."""
    if n < 1 or nnz < 0:
        raise ValueError(f"uniform_pattern: expected n >= 1, nnz >= 0 (got {n}, {nnz})")
    gen = torch.Generator().manual_seed(seed)
    deg = torch.full((n,), nnz // n, dtype=torch.int64)
    deg[: nnz % n] += 1
    pos = torch.zeros(n + 1, dtype=torch.int32)
    pos[1:] = deg.cumsum(0).to(torch.int32)
    return pos, torch.randint(0, n, (nnz,), generator=gen, dtype=torch.int32)


def _candidates(pos, crd, x, y, probes, aheads) -> dict:
    """name -> call, for every candidate probe (the C++ probe once per prefetch distance)."""
    out = {}
    if "probe" in probes:
        for a in aheads:
            out[f"probe ahead={int(a)}"] = lambda a=int(a): gather_sum(pos, crd, x, y, ahead=a, checked=True)
    if "embedding_bag" in probes:
        out["embedding_bag"] = lambda: torch.nn.functional.embedding_bag(
            crd, x, pos, mode="sum", include_last_offset=True)
    if "index_select" in probes:
        buf = torch.empty(crd.numel(), x.size(1), dtype=x.dtype)
        out["index_select"] = lambda: torch.index_select(x, 0, crd, out=buf)
    return out


def gather_bandwidth(pos: torch.Tensor, crd: torch.Tensor, f: int, dtype: torch.dtype = torch.float32,
                     reps: int = 7, probes=PROBES, aheads=(0, 8, 16, 32, 64), seed: int = 0) -> dict:
    """The gather roofline of an SpMM with this int32 CSR pattern (``pos``, ``crd``; X has as many rows
    as Y) at width ``f`` in ``dtype``: each candidate of ``probes`` runs ``reps`` times after one warm-up,
    bandwidth = :func:`probe_bytes` / time. ``bytes_per_s`` is the best run of the best candidate (a
    roofline: what this machine reaches); every candidate's best and median are in ``candidates``."""
    bad = [p for p in probes if p not in PROBES]
    if bad or not probes:
        raise ValueError(f"gather_bandwidth: probes must be some of {PROBES} (got {list(probes)})")
    if min(f, reps) < 1 or ("probe" in probes and (not aheads or min(int(a) for a in aheads) < 0)):
        raise ValueError(f"gather_bandwidth: expected f, reps >= 1 and aheads >= 0 (got {f}, {reps}, "
                         f"{list(aheads)})")
    n = pos.numel() - 1
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=gen).to(dtype)
    y = torch.empty(n, f, dtype=dtype)
    check(pos, crd, x, y)
    nbytes = probe_bytes(n, crd.numel(), f, dtype)
    cands = {}
    for name, fn in _candidates(pos, crd, x, y, probes, aheads).items():
        t = time_calls(fn, reps, warmup=1)
        cands[name] = {"best_gb_per_s": nbytes / t.min_ms / 1e6, "median_gb_per_s": nbytes / t.median_ms / 1e6}
    best = max(cands, key=lambda k: cands[k]["best_gb_per_s"])
    bw = cands[best]["best_gb_per_s"]
    return {"n": n, "nnz": crd.numel(), "F": f, "dtype": SHORT[dtype], "bytes": nbytes, "bytes_per_s": bw * 1e9,
            "best_gb_per_s": bw, "median_gb_per_s": cands[best]["median_gb_per_s"], "best_probe": best,
            "candidates": cands, "reps": reps, "threads": torch.get_num_threads()}


def fractions(seconds: float, n: int, nnz: int, f: int, dtype: torch.dtype, copy_bw: float,
              gather_bw: float) -> dict:
    """An SpMM's time against the machine (1 = at the limit): bytes (:func:`roofline_bytes`), achieved
    bandwidth, fraction of the gather roofline, of the copy (stream) bandwidth, and of the memory floor
    over the copy bandwidth. ``probe_understates``: the roofline fraction is above 1, which a roofline
    cannot allow: the probes, not the SpMM, are wrong."""
    if seconds <= 0 or copy_bw <= 0 or gather_bw <= 0:
        raise ValueError(f"fractions: expected a positive time and bandwidths (got {seconds}, {copy_bw}, "
                         f"{gather_bw})")
    nbytes = roofline_bytes(n, nnz, f, dtype)
    achieved = nbytes / seconds
    return {"gflops": 2 * nnz * f / seconds / 1e9,
            "roofline_bytes": nbytes,
            "achieved_gb_per_s": achieved / 1e9,
            "gather_bytes_per_s": gather_bw,
            "roofline_fraction": achieved / gather_bw,
            "stream_fraction": achieved / copy_bw,
            "floor_fraction": floor_bytes(n, nnz, f, dtype) / copy_bw / seconds,
            "probe_understates": achieved > gather_bw}
