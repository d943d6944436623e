"""Python threads sharing plans and freshly built tensors (tracker issue 8, bug 3).

Before the fix, four threads calling SpMM on a new ``SparseTensor`` crashed within a few graphs:
two threads built the partition bounds at once, the second store freed the first thread's tensor,
and its kernel read freed memory. Here 4 threads race on every graph's first call (conversions,
partitions, pointer caches) and on the first call of each expression (plan and kernel builds),
for SpMM, SDDMM and attention, and every result is checked against a float64 torch reference.

The stress tests hit the race window by chance; ``test_shared_values_are_built_once`` widens it
on purpose (the builders sleep) in a child process, where the old code crashed every time.
"""
from __future__ import annotations

import os
import random
import string
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest
import torch

import sgnn

THREADS = 4
GRAPHS = 20
N, E, F, HEADS = 3000, 30000, 16, 2  # the probe's size; (N + E) * F is past the parallel threshold


def _names(k: int) -> list[str]:
    return random.Random(uuid.uuid4().int).sample(string.ascii_lowercase, k)


def _spec(pattern: str) -> str:
    """``pattern`` (e.g. "ab,bc->ac") under fresh index names: a new plan, raced on its first call."""
    return pattern.translate(str.maketrans("abc", "".join(_names(3))))


def _attention_stmt():
    i, j, h, c = sgnn.indices(" ".join(_names(4)))
    A, X, AD, AS = sgnn.tensors("A X ad as_")
    score = sgnn.leaky_relu(AD[i, h] + AS[j, h], 0.2)
    return sgnn.compute((i, h, c), sgnn.sum_(j, sgnn.softmax(j, score, over=A[i, j]) * X[j, h, c]))


class Graph:
    """A random graph as a fresh SparseTensor and as coalesced edge lists (the reference's view)."""

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        ei = torch.randint(0, N, (2, E), generator=g)
        vals = torch.rand(E, generator=g) + 0.5
        fmt = "csr" if seed % 2 == 0 else "csc"  # a CSC operand is converted (once, under the lock)
        self.A = sgnn.SparseTensor.from_coo(ei[1], ei[0], vals, (N, N), format=fmt)
        self.key, inv = torch.unique(ei[1] * N + ei[0], return_inverse=True)
        self.vals = torch.zeros(self.key.numel(), dtype=torch.float64).index_add_(0, inv, vals.double())
        self.r, self.c = self.key // N, self.key % N

    def spmm(self, x):
        return torch.zeros(N, x.shape[1], dtype=torch.float64).index_add_(0, self.r, self.vals[:, None] * x[self.c])

    def sddmm(self, out, x, y):
        """The sampled output's values next to the reference at its own coordinates."""
        rr, cc = (a.long() for a in out.coordinates())
        at = torch.searchsorted(self.key, rr * N + cc)
        return out.values.double(), self.vals[at] * (x[rr] * y[cc]).sum(1)

    def attention(self, ad, as_, x):
        s = torch.nn.functional.leaky_relu(ad[self.r] + as_[self.c], 0.2)  # [edges, heads]
        m = torch.full((N, HEADS), float("-inf"), dtype=torch.float64)
        m = m.scatter_reduce(0, self.r[:, None].expand_as(s), s, "amax")
        w = torch.exp(s - m[self.r])
        z = torch.zeros(N, HEADS, dtype=torch.float64).index_add_(0, self.r, w)
        acc = torch.zeros(N, HEADS, x.shape[2], dtype=torch.float64).index_add_(0, self.r, w[:, :, None] * x[self.c])
        return torch.where(z[:, :, None] > 0, acc / z.clamp_min(1e-300)[:, :, None], torch.zeros_like(acc))


@pytest.fixture(scope="module")
def operands():
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(N, F, generator=g), "y": torch.randn(N, F, generator=g),
            "ad": torch.randn(N, HEADS, generator=g), "as_": torch.randn(N, HEADS, generator=g),
            "xh": torch.randn(N, HEADS, F, generator=g)}


def _close(out, ref, what: str) -> None:
    err = float((out.double() - ref).abs().max()) if ref.numel() else 0.0
    assert err <= 1e-4 * max(1.0, float(ref.abs().max())), f"{what}: max error {err:.3g}"


def _race(work, n: int = THREADS) -> None:
    """Run ``work(k)`` on ``n`` threads released together; re-raise the first failure."""
    barrier, errors = threading.Barrier(n), []

    def run(k):
        try:
            barrier.wait()
            work(k)
        except BaseException as e:  # noqa: BLE001 - reported in the main thread
            errors.append(e)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("omp", [1, 2])
def test_threads_share_plans_and_fresh_tensors(operands, threads, omp):
    o = {k: v for k, v in operands.items()}
    d = {k: v.double() for k, v in operands.items()}
    spmm, sddmm, att = _spec("ab,bc->ac"), _spec("ab,ac,bc->ab"), _attention_stmt()
    with threads(omp):
        for seed in range(GRAPHS):
            G = Graph(seed)
            ref_spmm, ref_att = G.spmm(d["x"]), G.attention(d["ad"], d["as_"], d["xh"])

            def work(k):
                for _ in range(2):
                    _close(sgnn.einsum(spmm, G.A, o["x"]), ref_spmm, f"spmm graph {seed}")
                    _close(*G.sddmm(sgnn.einsum(sddmm, G.A, o["x"], o["y"]), d["x"], d["y"]), f"sddmm graph {seed}")
                    out = sgnn.evaluate(att, A=G.A, ad=o["ad"], as_=o["as_"], X=o["xh"])
                    _close(out, ref_att, f"attention graph {seed}")
            _race(work)


def test_threads_build_their_own_tensors(operands):
    """Conversions (native coo_to_csr / transpose) and kernel calls from 4 threads at once."""
    spmm = _spec("ab,bc->ac")
    x = operands["x"]

    def work(k):
        for seed in range(k, 24, THREADS):
            G = Graph(1000 + seed)
            _close(sgnn.einsum(spmm, G.A, x), G.spmm(x.double()), f"thread {k} graph {seed}")
            col = torch.zeros(N, dtype=torch.float64).index_add_(0, G.c, G.vals)
            _close(sgnn.einsum("ij->j", G.A), col, f"thread {k} column sums {seed}")
    _race(work)


BUILT_ONCE = """
    import threading, time, torch, sgnn
    from sgnn.engine import convert_formats, runtime
    calls = {"bounds": 0, "convert": 0}

    def slowed(name, fn):
        def f(*a):
            calls[name] += 1
            time.sleep(0.02)  # the window in which a second thread used to build (and free) its own copy
            return fn(*a)
        return f
    runtime.balanced_bounds = slowed("bounds", runtime.balanced_bounds)
    convert_formats.convert_format = slowed("convert", convert_formats.convert_format)
    n, e, graphs = 500, 5000, 6
    x = torch.randn(n, 16)
    for seed in range(graphs):
        g = torch.Generator().manual_seed(seed)
        ei = torch.randint(0, n, (2, e), generator=g)
        A = sgnn.SparseTensor.from_coo(ei[1], ei[0], None, (n, n), format="csc")  # SpMM converts it to CSR
        ref = A.to_dense() @ x
        barrier, bad = threading.Barrier(4), []

        def work():
            barrier.wait()
            for _ in range(2):
                bad.append(not torch.allclose(sgnn.einsum("ik,kj->ij", A, x), ref, atol=1e-4))
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not any(bad), f"wrong result on graph {seed}"
    print(calls["bounds"], calls["convert"], graphs)
"""


def test_shared_values_are_built_once():
    """Partition bounds and a format conversion of a fresh tensor, raced by 4 threads: each is
    built exactly once per tensor, and every result is right (the old code segfaulted here)."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(BUILT_ONCE)], capture_output=True, text=True,
                       timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-3000:]}"
    bounds, conversions, graphs = map(int, r.stdout.split())
    assert conversions == graphs, f"{conversions} conversions for {graphs} fresh tensors"
    assert bounds == graphs, f"{bounds} partition builds for {graphs} fresh tensors"
