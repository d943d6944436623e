"""The machine under the benchmarks: CPU model, flags and caches (lscpu), the load of other processes
(waiting for a quiet machine) and copy bandwidth (the gather roofline per dtype: ``roofline.py``)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .timing import time_calls

CACHE_KEYS = ("L1d cache", "L1i cache", "L2 cache", "L3 cache")


def lscpu() -> dict:
    """``lscpu``'s model name, flags line and cache sizes (from /proc/cpuinfo where lscpu is missing)."""
    fields = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False,
                             env={**os.environ, "LC_ALL": "C"}).stdout
        fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines()) if v}
    except (OSError, subprocess.SubprocessError):
        pass
    if "Model name" not in fields:
        fields.update(_cpuinfo())
    return {"model_name": fields.get("Model name", platform.processor() or "?"),
            "flags": fields.get("Flags", "?"),
            "caches": {k.split()[0]: fields[k] for k in CACHE_KEYS if k in fields}}


def _cpuinfo() -> dict:
    out = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = {"model name": "Model name", "flags": "Flags"}.get(key.strip())
            if key and key not in out:
                out[key] = value.strip()
    except OSError:
        pass
    return out


def machine_info() -> dict:
    """CPU (lscpu model name, flags, caches), cores, torch thread count, python and torch versions."""
    cpu = lscpu()
    return {"cpu": cpu["model_name"], "flags": cpu["flags"], "caches": cpu["caches"],
            "cores": os.cpu_count(), "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__}


def header_lines(info: dict) -> list[str]:
    """The two lines every benchmark table starts with: lscpu's model name (+ caches) and its flags."""
    caches = ", ".join(f"{k} {v}" for k, v in info.get("caches", {}).items())
    return [f"CPU (lscpu model name): {info['cpu']}; {info['cores']} cores; {caches}",
            f"flags: {info['flags']}"]


# --- other processes ------------------------------------------------------------------------------

class CpuMonitor:
    """CPU time that *other* processes used while this one ran: /proc/stat minus our own (and our
    children's) CPU time. Benchmarks on a shared machine need to know."""

    def __init__(self):
        self.start()

    @staticmethod
    def _busy_s() -> float:
        try:
            f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return float("nan")
        idle = f[3] + (f[4] if len(f) > 4 else 0)          # idle + iowait
        return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> None:
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy_s(), self._own_s()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def others(self) -> float:
        """Cores' worth of CPU that other processes used since ``start()`` (0 = quiet, 1 = one core)."""
        wall = self.elapsed()
        other = (self._busy_s() - self.busy0) - (self._own_s() - self.own0)
        return max(0.0, other / wall) if wall > 0 else 0.0


def log(msg: str) -> None:
    """A time-stamped progress line on stderr."""
    print(f"[harness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Quiet:
    """Waiting for a quiet machine (config ``quiet``): before a timed block, wait up to ``wait_s`` (and
    ``budget_s`` in total) until other processes use under ``threshold`` cores over ``window_s``;
    ``timed(block)`` re-measures a block up to ``retries`` times when others used more than
    ``retry_load`` cores meanwhile and keeps the quietest attempt."""

    def __init__(self, q):
        self.wait_s, self.budget_s = float(q.wait_s), float(q.budget_s)
        self.threshold, self.window_s = float(q.threshold), float(q.window_s)
        self.retries, self.retry_load = int(q.retries), float(q.retry_load)
        self.sample_s, self.waited = float(q.sample_s), 0.0

    def wait(self) -> float:
        """Wait (bounded) for a quiet machine; the other processes' load measured last."""
        limit = min(self.wait_s, max(0.0, self.budget_s - self.waited))
        if limit <= 0:
            return float("nan")
        t0, said = time.perf_counter(), False
        while True:
            m = CpuMonitor()
            time.sleep(self.window_s)
            load = m.others()
            spent = time.perf_counter() - t0
            if load < self.threshold or spent >= limit:
                self.waited += max(0.0, spent - self.window_s)
                if load >= self.threshold:
                    log(f"other processes still use {load:.2f} cores after {spent:.0f} s; measuring anyway")
                return load
            if not said:
                log(f"other processes use {load:.2f} cores; waiting up to {limit:.0f} s for a quiet machine")
                said = True

    def timed(self, block: Callable[[], object], retries: int | None = None) -> tuple[object, dict]:
        """``block()`` after ``wait()``, again (up to ``retries``, default ``quiet.retries`` times) while
        others were busy; (the quietest attempt's result, its load fields)."""
        best, retries = None, self.retries if retries is None else retries
        for attempt in range(1 + max(retries, 0)):
            wait_load = self.wait()
            mon = CpuMonitor()
            result = block()
            if mon.elapsed() < 1.0 and self.sample_s > 0:   # /proc/stat counts 10 ms ticks: sample after
                mon.start()
                time.sleep(self.sample_s)
            load = mon.others()
            if best is None or load < best[1]["others_cores"]:
                best = result, {"others_cores": load, "others_wait_cores": wait_load, "attempts": attempt + 1}
            if load < self.retry_load or self.waited >= self.budget_s:
                break
            if attempt < retries:
                log(f"other processes used {load:.2f} cores while timing; measuring again "
                    f"({attempt + 1}/{retries})")
        return best


# --- bandwidth --------------------------------------------------------------------------------------

def copy_bandwidth(mib: int = 256, reps: int = 15) -> dict:
    """Copy bandwidth with the current torch thread count: median of timed ``dst.copy_(src)`` on ``mib``
    MiB float32 tensors, counting bytes read plus bytes written."""
    n = mib * 2**20 // 4
    src, dst = torch.rand(n), torch.zeros(n)        # both written once, so every page is mapped
    t = time_calls(lambda: dst.copy_(src), reps, warmup=2)
    nbytes = 2 * n * 4
    return {"bytes_per_s": nbytes / t.median_s, "gb_per_s": nbytes / t.median_s / 1e9, "mib": mib,
            "reps": reps, "threads": torch.get_num_threads(), "best_gb_per_s": nbytes / t.min_ms * 1e3 / 1e9}
