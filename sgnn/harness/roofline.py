"""The memory model of an SpMM Y = A·X (CSR A, n × n, nnz stored values; X, Y n × F) per value dtype,
and the gather roofline it is measured against.

Bytes (``e`` the element size of the dtype: 4 for float32, 2 for bfloat16 / float16; indices int32):

- memory floor (what an SpMM must move at least, over the copy bandwidth):
  ``4(n+1) + (4+e)·nnz + 2·e·n·F`` (pos, crd + values once, X read once, Y written once);
- gather roofline (what it moves when every stored value gathers one row of X):
  gathered ``e·nnz·F`` plus streamed ``4(n+1) + (4+e)·nnz + e·n·F`` (pos, crd, values, Y), over the
  measured bandwidth of gathering random rows of width F in that dtype (:func:`gather_bandwidth`).

For float32 these are the formulas bench_spmm always used (``4(n+1) + 8 nnz + 8 n F`` and
``4 nnz F + 4(n+1) + 8 nnz + 4 n F``).
"""
from __future__ import annotations

import torch

from .timing import time_calls

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def dtype_of(name) -> torch.dtype:
    """torch dtype of a config name (float32/fp32, bfloat16/bf16, float16/fp16/half)."""
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
    """Bytes counted at gather bandwidth: gathered plus streamed."""
    return gathered_bytes(nnz, f, dtype) + streamed_bytes(n, nnz, f, dtype)


def gather_rows(n: int, nnz: int, f: int, dtype: torch.dtype, buffer_mib: int) -> int:
    """How many rows one gather run reads: nnz, at most ``buffer_mib`` MiB of them (at least 1)."""
    return max(1, min(nnz, buffer_mib * 2**20 // (itemsize(dtype) * f)))


def gather_bandwidth(n: int, f: int, rows: int, dtype: torch.dtype = torch.float32, reps: int = 7,
                     seed: int = 0) -> dict:
    """The gather roofline of SpMM: ``rows`` uniformly random rows of an ``n × f`` matrix of ``dtype``,
    read by one ``torch.index_select(X, 0, idx, out=buf)`` with int32 indices (streamed, as a CSR's
    columns) into a ``rows × f`` buffer. Bytes = rows·f·e + rows·4 (the buffer's writes are not
    counted); ``bytes_per_s`` is the best of ``reps`` runs (a roofline: what this machine reaches),
    the median is reported next to it."""
    if min(n, f, rows, reps) < 1:
        raise ValueError(f"gather_bandwidth: expected n, f, rows, reps >= 1 (got {n}, {f}, {rows}, {reps})")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=gen).to(dtype)
    idx = torch.randint(0, n, (rows,), generator=gen, dtype=torch.int32)
    buf = torch.empty(rows, f, dtype=dtype)
    t = time_calls(lambda: torch.index_select(x, 0, idx, out=buf), reps, warmup=1)
    nbytes = rows * f * itemsize(dtype) + rows * 4
    best = nbytes / t.min_ms * 1e3
    return {"n": n, "F": f, "dtype": SHORT[dtype], "rows": rows, "bytes": nbytes, "bytes_per_s": best,
            "best_gb_per_s": best / 1e9, "median_gb_per_s": nbytes / t.median_s / 1e9, "reps": reps,
            "threads": torch.get_num_threads()}


def fractions(seconds: float, n: int, nnz: int, f: int, dtype: torch.dtype, copy_bw: float,
              gather_bw: float) -> dict:
    """An SpMM's time as fractions of the memory floor and of the gather roofline (1 = at the limit)."""
    if seconds <= 0:
        raise ValueError(f"fractions: expected a positive time (got {seconds})")
    return {"gflops": 2 * nnz * f / seconds / 1e9,
            "floor_fraction": floor_bytes(n, nnz, f, dtype) / copy_bw / seconds,
            "gather_bytes_per_s": gather_bw,
            "roofline_bytes": roofline_bytes(n, nnz, f, dtype),
            "roofline_fraction": roofline_bytes(n, nnz, f, dtype) / gather_bw / seconds}
