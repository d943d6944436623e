"""The software-prefetch path (on for gathered operands larger than L2) on small inputs: the cache
sizes are patched down so that prefetching kernels run on every kind of row (empty rows, rows shorter
than the prefetch distance, the last rows of the matrix, where the prefetch stream has to stop)."""
from __future__ import annotations

import pytest
import torch

import sgnn
from sgnn.engine import runtime, tiling

from engine_cases import dense_rand


@pytest.fixture
def tiny_caches(monkeypatch):
    monkeypatch.setattr(tiling, "cache_sizes", lambda: {1: 32, 2: 64, 3: 4096})
    monkeypatch.setattr(runtime, "_plans", runtime.LRU(runtime.PLANS))


def power_law_csr(n: int, m: int, seed: int, dtype) -> tuple[sgnn.SparseTensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    deg = (torch.rand(n, generator=g).pow(-1.5) - 1).clamp(max=m).long()   # many 0- and 1-length rows, a few hubs
    deg[torch.rand(n, generator=g) < 0.3] = 0
    row = torch.repeat_interleave(torch.arange(n), deg)
    col = torch.randint(0, m, (row.numel(),), generator=g)
    vals = dense_rand(seed + 1, row.numel(), dtype=dtype)
    A = sgnn.SparseTensor.from_coo(row, col, vals, (n, m))
    return A, A.to_dense().to(torch.float64)


def check(out: torch.Tensor, ref: torch.Tensor, dtype) -> None:
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    scale = max(float(ref.abs().max()), 1.0) if ref.numel() else 1.0
    assert float((out.to(torch.float64) - ref).abs().max()) <= tol * scale * 10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("f", [1, 16, 40, 128, 300])
def test_spmm_with_prefetch(tiny_caches, f, dtype):
    A, Ad = power_law_csr(300, 250, seed=f, dtype=dtype)
    X = dense_rand(7, 250, f, dtype=dtype)
    e = sgnn.explain("ik,kj->ij", A, X)
    assert "prefetch" in str(e)
    check(sgnn.einsum("ik,kj->ij", A, X), Ad @ X.to(torch.float64), dtype)


def test_spmm_csc_operand_with_prefetch(tiny_caches):
    A, Ad = power_law_csr(200, 180, seed=3, dtype=torch.float32)
    X = dense_rand(8, 180, 64, dtype=torch.float32)
    csc = A.to("csc")
    check(sgnn.einsum("ik,kj->ij", csc, X), Ad @ X.to(torch.float64), torch.float32)


def test_attention_with_prefetch(tiny_caches):
    """The two-pass row softmax with prefetched rows against the dense reference."""
    A, Ad = power_law_csr(150, 150, seed=5, dtype=torch.float32)
    H, C = 2, 24
    f32 = torch.float32
    a_s, a_d, X = dense_rand(1, 150, H, dtype=f32), dense_rand(2, 150, H, dtype=f32), dense_rand(3, 150, H, C, dtype=f32)
    i, j, h, c = sgnn.indices("i j h c")
    A_, S_, D_, X_ = sgnn.tensors("A S D X")
    st = sgnn.compute((i, h, c), sgnn.sum_(j, sgnn.softmax(j, sgnn.leaky_relu(D_[i, h] + S_[j, h], 0.2),
                                                           over=A_[i, j]) * X_[j, h, c]))
    ops = dict(A=A.with_values(None), S=a_s, D=a_d, X=X)
    assert "prefetch" in str(sgnn.explain(st, **ops))
    out = sgnn.evaluate(st, **ops)
    mask = Ad != 0
    logits = torch.nn.functional.leaky_relu(a_d.double()[:, None, :] + a_s.double()[None, :, :], 0.2)
    logits = logits.masked_fill(~mask[:, :, None], float("-inf"))
    att = torch.softmax(logits, dim=1).nan_to_num(0.0)          # rows without neighbours: zero
    ref = torch.einsum("ijh,jhc->ihc", att, X.double())
    check(out, ref, torch.float32)


@pytest.mark.parametrize("flags,lines", [({"avx512f", "avx2"}, 16), ({"avx2"}, 8), (set(), 8)])
def test_register_tile_spans_half_the_vector_registers(monkeypatch, flags, lines):
    """16 accumulator lines with AVX-512's 32 registers (F=256 float32 in one pass), else 8."""
    monkeypatch.setattr(tiling, "cpu_flags", lambda: frozenset(flags))
    assert tiling.register_tile_lines() == lines


@pytest.mark.parametrize("lines", [8, 16])
@pytest.mark.parametrize("f,outer", [(40, False), (128, False), (300, True), (700, True)])
def test_cache_panels_never_narrower_than_a_register_tile(tiny_caches, monkeypatch, lines, f, outer):
    """A gathered operand far over the LLC: a row one register tile spans gets no panels; a wider one
    gets panels of exactly one register tile (not the few lines an LLC-sized panel would be), and the
    panelled, prefetching kernel is right, including the partial last panel."""
    monkeypatch.setattr(tiling, "register_tile_lines", lambda: lines)
    A, Ad = power_law_csr(120, 400, seed=f, dtype=torch.float32)
    X = dense_rand(9, 400, f, dtype=torch.float32)
    e = sgnn.explain("ik,kj->ij", A, X)
    most = lines * 16
    assert e.tile.prefetch and e.tile.outer == (outer and f > most)
    assert e.tile.size == (most if e.tile.outer else min(tiling.register_width(f, most)[0], most))
    check(sgnn.einsum("ik,kj->ij", A, X), Ad @ X.to(torch.float64), torch.float32)


def test_prefetch_covers_a_wide_tile_span(tiny_caches, monkeypatch):
    """A 256-float tile prefetches all 16 lines of its span (the old 512-byte cap fetched half)."""
    monkeypatch.setattr(tiling, "register_tile_lines", lambda: 16)
    A, _ = power_law_csr(100, 300, seed=2, dtype=torch.float32)
    cpp = sgnn.explain("ik,kj->ij", A, dense_rand(3, 300, 256, dtype=torch.float32)).cpp
    assert "static constexpr int64_t TILE = 256;" in cpp
    assert "sg::min<int64_t>((TILE) * sizeof(T), 1024)" in cpp
