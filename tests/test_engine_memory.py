"""Huge-page buffers (sgnn.engine.memory): same results, advice taken where the kernel offers THP."""
from pathlib import Path

import pytest
import torch

import sgnn
from sgnn.engine import memory


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    return text[text.index("[") + 1:text.index("]")] if "[" in text else "unknown"


@pytest.mark.parametrize("shape,dtype", [((3, 5), torch.float32), ((1 << 20, 3), torch.float64), ((0, 7), torch.float32)])
def test_empty_is_a_plain_tensor(shape, dtype):
    t = memory.empty(shape, dtype)
    assert t.shape == shape and t.dtype == dtype and t.is_contiguous()
    t.fill_(1.5)
    assert float(t.sum()) == 1.5 * t.numel()


def test_small_tensors_are_left_alone():
    assert not memory.advise(torch.empty(100, 100))


@pytest.mark.skipif(_thp_mode() not in ("madvise", "always") or memory._madvise is None,
                    reason="transparent huge pages not offered here")
def test_large_tensors_are_advised():
    assert memory.advise(torch.empty(4 << 20, dtype=torch.float32))


def test_large_spmm_output_matches_dense():
    """A kernel output above the huge-page threshold (4 MiB) is written correctly."""
    n, f = 9000, 128
    gen = torch.Generator().manual_seed(0)
    ei = torch.randint(0, n, (2, 20000), generator=gen)
    A = sgnn.SparseTensor.from_edge_index(ei, num_nodes=n)
    X = torch.randn(n, f, generator=gen)
    Y = sgnn.einsum("ik,kj->ij", A, X)
    assert Y.numel() * 4 >= memory.MIN_BYTES
    torch.testing.assert_close(Y, A.to_dense() @ X, rtol=1e-5, atol=1e-4)
