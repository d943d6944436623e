"""Large buffers on transparent huge pages.

A fresh multi-megabyte torch tensor is a new anonymous mapping: writing it the first time takes
one page fault per 4 KiB page (an 87 MB tensor: 21,000 faults, 16 ms of a 23 ms fill here), and
gathering rows from it at random misses the TLB. Linux backs a mapping with 2 MiB pages when it is
advised to (``/sys/kernel/mm/transparent_hugepage/enabled`` = ``madvise`` or ``always``).

* ``empty(shape, dtype)`` is ``torch.empty`` plus ``madvise(MADV_HUGEPAGE)`` on the 2 MiB-aligned
  interior *before* the first touch, so the kernel faults in huge pages (512× fewer faults).

* ``check_fits(nbytes, what)`` raises ``OutOfMemory`` naming the bytes needed and available when
  an allocation cannot fit: available is the least of MemAvailable, the address-space limit
  (``RLIMIT_AS``) minus what is mapped, and the cgroup's ``memory.max`` minus its use. ``empty``
  checks every buffer of 64 MiB or more, so a graph too big for the machine fails with a clear
  message instead of being killed by the kernel mid-layer.

* Spill mode (``config(spill_dir=...)``): a buffer of at least ``spill_min_bytes`` is instead a
  shared mapping of a fresh file in that directory, unlinked at once (nothing is left on disk, even
  if the process is killed; the space is freed with the tensor). The OS writes its pages back and
  evicts them under memory pressure, so RAM bounds what is resident, not what is allocated. Its
  blocks are reserved up front (``posix_fallocate``: a full disk is an ``OutOfMemory`` now, not a
  SIGBUS at write-back) and it is checked against the disk's free space instead of the memory left.

A hint only: any failure (no libc, THP off, memory from the malloc heap) leaves the memory as it
was. ``SGNN_HUGEPAGES=0`` turns it off. (Collapsing an already-touched operand onto huge pages with
MADV_COLLAPSE was measured too: 2-5% faster gathers at arXiv size for a copy costing 13-180 ms,
not worth it.)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import shutil
import tempfile

import torch

from ..config import spill as spill_settings
from ..errors import OutOfMemory

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
TRIM_BYTES = 256 << 20  # before a buffer this large, free memory the malloc heap keeps is returned


def _load_trim():
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_trim = _load_trim()  # glibc's malloc_trim (about 1 ms): freed block-sized chunks otherwise stay resident


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


CHECK_BYTES = 64 << 20  # allocations from this size up are checked against the memory left


def _read_kb(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_left() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


def available_bytes() -> int | None:
    """Bytes this process can still allocate and touch (None when nothing can be read)."""
    left = [_read_kb("/proc/meminfo", "MemAvailable:"), _cgroup_left()]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        mapped = _read_kb("/proc/self/status", "VmSize:")
        left.append(soft - mapped if mapped is not None else None)
    left = [v for v in left if v is not None]
    return min(left) if left else None


def check_fits(nbytes: int, what: str) -> None:
    """Raise ``OutOfMemory`` when ``nbytes`` more cannot fit (see ``available_bytes``)."""
    free = available_bytes()
    if free is not None and nbytes > free:
        raise OutOfMemory(f"{what} needs {nbytes / 2**30:.2f} GiB but only {max(free, 0) / 2**30:.2f} GiB "
                          f"is available (MemAvailable, RLIMIT_AS and the cgroup limit); free memory, use "
                          f"fewer or narrower layers, spill activations to disk (sgnn.config(spill_dir=...)) or "
                          f"partition the graph (sgnn.distributed)")


def _spilled(dims: tuple, dtype: torch.dtype, nbytes: int, where, what: str) -> torch.Tensor:
    free = shutil.disk_usage(where).free
    if nbytes > free:
        raise OutOfMemory(f"{what} needs {nbytes} bytes ({nbytes / 2**30:.2f} GiB) of disk in the spill "
                          f"directory {str(where)!r}, but its filesystem has only {free} bytes "
                          f"({free / 2**30:.2f} GiB) free; free disk space or choose another spill_dir")
    fd, path = tempfile.mkstemp(prefix="sgnn-spill-", dir=where)
    try:
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as err:
            raise OutOfMemory(f"{what}: reserving {nbytes} bytes in the spill directory {str(where)!r} "
                              f"failed ({err.strerror})") from None
        t = torch.from_file(path, shared=True, size=nbytes // dtype.itemsize, dtype=dtype)
    finally:
        os.unlink(path)
        os.close(fd)
    return t.view(dims)


def is_spilled(t: torch.Tensor) -> bool:
    """Whether ``t``'s memory is a spill file's mapping (``empty`` in spill mode)."""
    name = t.untyped_storage().filename
    return name is not None and os.path.basename(name).startswith("sgnn-spill-")


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)``, on huge pages when it is large; checked against the
    memory left when it is 64 MiB or more; a spill file's mapping in spill mode (module docstring)."""
    dims = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
    n = 1
    for s in dims:
        n *= s
    nbytes = n * dtype.itemsize
    what = f"a {'x'.join(map(str, dims))} {str(dtype)[6:]} buffer"
    if nbytes >= MIN_BYTES:
        where, least = spill_settings()
        if where is not None and nbytes >= least:
            return _spilled(dims, dtype, nbytes, where, what)
    if nbytes >= CHECK_BYTES:
        if nbytes >= TRIM_BYTES and _trim is not None:
            _trim(0)
        check_fits(nbytes, what)
    t = torch.empty(shape, dtype=dtype)
    if _madvise is not None and nbytes >= MIN_BYTES:
        advise(t)
    return t
