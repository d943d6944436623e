"""Resident memory of this process: current RSS, the kernel's high-water mark, peak growth over a block.

torch has no allocator statistics on CPU and tracemalloc does not see its C++ allocations, so peaks
come from /proc/self/status: ``PeakRss`` resets VmHWM through /proc/self/clear_refs (Linux >= 4.0) and
reads it back (exact, no overhead), or samples VmRSS from a thread where the reset is not allowed.
"""
from __future__ import annotations

import ctypes
import gc
import threading
from pathlib import Path

MIB = 2 ** 20
GIB = 2 ** 30


def _status_bytes(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes (None without procfs)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """Current resident set size of this process (VmRSS, else psutil)."""
    v = _status_bytes("VmRSS")
    if v is not None:
        return v
    import psutil
    return psutil.Process().memory_info().rss


def vm_hwm_bytes() -> int | None:
    """The kernel's resident high-water mark VmHWM (since start or the last ``reset_hwm``)."""
    return _status_bytes("VmHWM")


def vm_size_bytes() -> int | None:
    """Virtual address space in use (VmSize): what RLIMIT_AS limits."""
    return _status_bytes("VmSize")


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS; False where /proc/self/clear_refs is not writable."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def release_memory() -> None:
    """gc, then glibc ``malloc_trim(0)``: freed heap pages go back to the OS, so a peak measured next
    starts from what is really in use."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def mem_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None without procfs)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fits(nbytes: int, fraction: float = 0.9) -> tuple[bool, int | None]:
    """(whether ``nbytes`` fit in ``fraction`` of MemAvailable, MemAvailable); unknown counts as fitting."""
    avail = mem_available()
    return (avail is None or nbytes <= fraction * avail), avail


class PeakRss:
    """Peak growth of this process's resident set over a ``with`` block, in bytes (``increase``).

    On entry: ``release_memory()`` (unless ``release=False``), the baseline VmRSS, then VmHWM is reset:
    on exit VmHWM - baseline is the exact peak (``method == "VmHWM"``). Without the reset a thread
    samples VmRSS every ``interval_s`` (``method == "sampler"``; it can miss shorter peaks).
    """

    def __init__(self, interval_s: float = 0.002, release: bool = True):
        self.interval_s, self.release = interval_s, release
        self.method, self.base, self.peak, self._thread = None, 0, 0, None

    def __enter__(self) -> PeakRss:
        if self.release:
            release_memory()
        self.base = rss_bytes()
        if reset_hwm():
            self.method = "VmHWM"
            return self
        self.method, self._stop, self.peak = "sampler", threading.Event(), self.base

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, rss_bytes())
                self._stop.wait(self.interval_s)
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes())
        else:
            self.peak = max(vm_hwm_bytes() or 0, rss_bytes())
        return False

    @property
    def increase(self) -> int:
        return max(0, self.peak - self.base)

    @property
    def increase_mib(self) -> float:
        return self.increase / MIB
