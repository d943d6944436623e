"""Warm, in-process timing of a whole forward pass, with one thread count for every framework."""
from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

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

    def asdict(self) -> dict:
        return asdict(self)


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch (sgnn's kernels follow torch.get_num_threads()), DGL, and OpenMP
    runtimes loaded later (OMP_NUM_THREADS)."""
    os.environ["OMP_NUM_THREADS"] = str(n)
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


def bench(fn: Callable[[], torch.Tensor], warmup: int, repetitions: int,
          advance: Callable[[], None] = lambda: None) -> tuple[Timing, torch.Tensor]:
    """Time ``fn()`` under inference_mode, gc paused; returns the timing and the first output."""
    if repetitions < 1:
        raise ValueError(f"bench: expected repetitions >= 1 (got {repetitions})")
    times = []
    with torch.inference_mode():
        out = fn()
        for _ in range(max(warmup - 1, 0)):
            fn()
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
    std = statistics.stdev(times) if len(times) > 1 else 0.0
    stats = statistics.median(times), statistics.fmean(times), std, min(times)
    return Timing(*stats, repetitions, max(warmup, 1)), out


def bench_training(forward: Callable[[], torch.Tensor], params: list, data, m, warmup: int, epochs: int,
                   advance: Callable[[], None] = lambda: None) -> Timing:
    """Time full-batch training epochs (zero_grad, forward, loss on the train mask, backward, Adam step)."""
    if epochs < 1:
        raise ValueError(f"bench_training: expected epochs >= 1 (got {epochs})")
    opt = torch.optim.Adam(params, lr=float(m.lr), weight_decay=float(m.weight_decay))
    mask, y = data.train_mask, data.y[data.train_mask]

    def epoch():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(forward()[mask], y)
        loss.backward()
        opt.step()
    for _ in range(max(warmup, 1)):
        epoch()
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(epochs):
            t0 = time.perf_counter()
            epoch()
            times.append((time.perf_counter() - t0) * 1e3)
            advance()
    finally:
        gc.enable()
    std = statistics.stdev(times) if len(times) > 1 else 0.0
    return Timing(statistics.median(times), statistics.fmean(times), std, min(times), epochs, max(warmup, 1))
