"""Large buffers on transparent huge pages.

A fresh multi-megabyte torch tensor is a new anonymous mapping: writing it the first time takes
one page fault per 4 KiB page (an 87 MB tensor: 21,000 faults, 16 ms of a 23 ms fill here), and
gathering rows from it at random misses the TLB. Linux backs a mapping with 2 MiB pages when it is
advised to (``/sys/kernel/mm/transparent_hugepage/enabled`` = ``madvise`` or ``always``).

* ``empty(shape, dtype)`` is ``torch.empty`` plus ``madvise(MADV_HUGEPAGE)`` on the 2 MiB-aligned
  interior *before* the first touch, so the kernel faults in huge pages (512× fewer faults).

A hint only: any failure (no libc, THP off, memory from the malloc heap) leaves the memory as it
was. ``SGNN_HUGEPAGES=0`` turns it off. (Collapsing an already-touched operand onto huge pages with
MADV_COLLAPSE was measured too: 2-5% faster gathers at arXiv size for a copy costing 13-180 ms,
not worth it.)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

MIN_BYTES = 4 << 20          # below this, a tensor likely lives in the malloc heap: leave it
_HUGE = 2 << 20
_MADV_HUGEPAGE = 14


def _load_madvise():
    if os.environ.get("SGNN_HUGEPAGES", "1") == "0" or not os.path.exists("/proc/self/maps"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _load_madvise()


def _aligned(t: torch.Tensor) -> tuple[int, int] | None:
    nbytes = t.numel() * t.element_size()
    if _madvise is None or nbytes < MIN_BYTES:
        return None
    start = t.data_ptr()
    a, b = (start + _HUGE - 1) & ~(_HUGE - 1), (start + nbytes) & ~(_HUGE - 1)
    return (a, b - a) if b > a else None


def advise(t: torch.Tensor) -> bool:
    """Advise huge pages for ``t``'s memory (effective for pages not yet touched)."""
    r = _aligned(t)
    return r is not None and _madvise(r[0], r[1], _MADV_HUGEPAGE) == 0


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)``, on huge pages when it is large."""
    t = torch.empty(shape, dtype=dtype)
    if _madvise is not None and t.numel() * t.element_size() >= MIN_BYTES:
        advise(t)
    return t
