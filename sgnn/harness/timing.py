"""Warm, in-process wall-clock timing (one thread count for every framework): calls, forward passes,
training epochs."""
from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch


@dataclass(frozen=True)
class Timing:
    """Wall-clock statistics of ``repetitions`` calls after ``warmup`` untimed ones (milliseconds)."""

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    repetitions: int
    warmup: int
    p10_ms: float | None = None
    p90_ms: float | None = None

    @classmethod
    def of(cls, times_ms: list[float], warmup: int) -> Timing:
        """Statistics of per-call times (ms); p10/p90 are the nearest-rank quantiles."""
        s = sorted(times_ms)

        def q(p: float) -> float:
            return s[min(len(s) - 1, max(0, round(p * (len(s) - 1))))]
        std = statistics.stdev(s) if len(s) > 1 else 0.0
        return cls(statistics.median(s), statistics.fmean(s), std, s[0], len(s), warmup, q(0.1), q(0.9))

    @property
    def median_s(self) -> float:
        return self.median_ms / 1e3

    def asdict(self) -> dict:
        return asdict(self)


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch (sgnn's kernels follow torch.get_num_threads()), DGL, and OpenMP / MKL
    runtimes started later (OMP_NUM_THREADS, MKL_NUM_THREADS unless set)."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    torch.set_num_threads(n)
    if "dgl" in sys.modules or _has_dgl():
        import dgl.utils
        dgl.utils.set_num_threads(n)


@contextlib.contextmanager
def threads(n: int):
    """``set_threads(n)`` for a block; the previous torch thread count and OMP_NUM_THREADS come back."""
    old, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    set_threads(n)
    try:
        yield
    finally:
        set_threads(old)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def _has_dgl() -> bool:
    try:
        import dgl  # noqa: F401
    except ImportError:
        return False
    return True


def time_calls(fn: Callable[[], object], repetitions: int, warmup: int = 0,
               advance: Callable[[], None] = lambda: None) -> Timing:
    """``warmup`` untimed calls, then ``repetitions`` calls timed one by one (gc paused)."""
    if repetitions < 1:
        raise ValueError(f"time_calls: expected repetitions >= 1 (got {repetitions})")
    return Timing.of(call_times(fn, repetitions, warmup, advance), warmup)


def call_times(fn: Callable[[], object], repetitions: int, warmup: int = 0,
               advance: Callable[[], None] = lambda: None) -> list[float]:
    """The per-call times (ms) of ``time_calls``: ``advance()`` runs after each timed call."""
    for _ in range(warmup):
        fn()
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repetitions):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            advance()
    finally:
        gc.enable()
    return times


def adaptive_repetitions(fn: Callable[[], object], repetitions: int, minimum: int,
                         budget_s: float) -> tuple[int, float]:
    """(``repetitions``, fewer (down to ``minimum``) when that many calls of ``fn`` would take longer than
    ``budget_s``; the seconds per call estimated from two calls)."""
    est = time_calls(fn, 2).median_s
    return max(min(minimum, repetitions), min(repetitions, int(budget_s / max(est, 1e-9)))), est


def bench(fn: Callable[[], torch.Tensor], warmup: int, repetitions: int,
          advance: Callable[[], None] = lambda: None) -> tuple[Timing, torch.Tensor]:
    """Time ``fn()`` under inference_mode, gc paused; returns the timing and the first output."""
    if repetitions < 1:
        raise ValueError(f"bench: expected repetitions >= 1 (got {repetitions})")
    with torch.inference_mode():
        out = fn()
        t = time_calls(fn, repetitions, max(warmup - 1, 0), advance)
    return replace(t, warmup=max(warmup, 1)), out


def training_epoch(forward: Callable[[], torch.Tensor], params: list, data, m) -> Callable[[], None]:
    """One full-batch epoch: zero_grad, forward, cross entropy on the train mask, backward, Adam step."""
    opt = torch.optim.Adam(params, lr=float(m.lr), weight_decay=float(m.weight_decay))
    mask, y = data.train_mask, data.y[data.train_mask]

    def epoch():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(forward()[mask], y)
        loss.backward()
        opt.step()
    return epoch


def bench_training(forward: Callable[[], torch.Tensor], params: list, data, m, warmup: int, epochs: int,
                   advance: Callable[[], None] = lambda: None) -> Timing:
    """Time full-batch training epochs (zero_grad, forward, loss on the train mask, backward, Adam step)."""
    if epochs < 1:
        raise ValueError(f"bench_training: expected epochs >= 1 (got {epochs})")
    return time_calls(training_epoch(forward, params, data, m), epochs, max(warmup, 1), advance)
