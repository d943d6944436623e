"""Spill mode (``config(spill_dir=...)``): large buffers are mappings of unlinked files, results are
bit-identical, nothing is left on disk, and bad settings or a full disk fail with clear errors."""
from __future__ import annotations

import os
from collections import namedtuple

import pytest
import torch

import sgnn
from sgnn.engine import memory
from sgnn.layers import GATConv, GCNConv, SAGEConv

N, E, F = 30_000, 150_000, 64  # N x F float32 = 7.7 MB: above memory.MIN_BYTES and the 1 MiB used here
LAYERS = {"gcn": lambda i, o: GCNConv(i, o), "sage": lambda i, o: SAGEConv(i, o, aggr="mean"),
          "gat": lambda i, o: GATConv(i, o // 2, heads=2)}


@pytest.fixture(scope="module")
def graph():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, F, generator=g), torch.randint(0, N, (2, E), generator=g)


def two_layers(kind: str) -> torch.nn.Module:
    torch.manual_seed(1)
    first, second = LAYERS[kind](F, F), LAYERS[kind](F, F)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = first, second

        def forward(self, x, ei):
            return self.b(torch.relu(self.a(x, ei)), ei)
    return Net()


def spilled_buffers(model, x, ei):
    """The layers' output and the memory.empty buffers of one call, recorded."""
    made, real = [], memory.empty

    def record(shape, dtype):
        made.append(real(shape, dtype))
        return made[-1]
    memory.empty = record
    try:
        with torch.inference_mode():
            out = model(x, ei)
    finally:
        memory.empty = real
    return out, made


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_spilled_forward_is_bit_identical(kind, graph, tmp_path):
    x, ei = graph
    model = two_layers(kind)
    with torch.inference_mode():
        ref = model(x, ei)
    with sgnn.config(spill_dir=tmp_path, spill_min_bytes=1 << 20):
        out, made = spilled_buffers(model, x, ei)
        big = [t for t in made if t.numel() * t.element_size() >= memory.MIN_BYTES]
        assert big and all(memory.is_spilled(t) for t in big)
        assert not any(memory.is_spilled(t) for t in made if t.numel() * t.element_size() < 1 << 20)
        assert os.listdir(tmp_path) == []  # unlinked as soon as mapped
    assert torch.equal(out, ref)
    assert memory.is_spilled(out) and not memory.is_spilled(ref)


def test_small_and_default_buffers_stay_anonymous(tmp_path):
    assert memory.empty((3000, 1000), torch.float32).untyped_storage().filename is None
    with sgnn.config(spill_dir=tmp_path):  # default spill_min_bytes: 256 MiB
        assert not memory.is_spilled(memory.empty((3000, 1000), torch.float32))
    with sgnn.config(spill_dir=tmp_path, spill_min_bytes=1):
        assert not memory.is_spilled(memory.empty((100, 100), torch.float32))  # under 4 MiB: not read
        t = memory.empty((1 << 20, 2), torch.float64)
        assert memory.is_spilled(t) and t.shape == (1 << 20, 2) and t.dtype == torch.float64
        t.fill_(0.5)
        assert float(t.sum()) == 0.5 * t.numel()


def test_env_var_form(graph, tmp_path, monkeypatch):
    x, ei = graph
    monkeypatch.setenv("SGNN_SPILL_DIR", str(tmp_path))
    monkeypatch.setenv("SGNN_SPILL_MIN_BYTES", str(1 << 20))
    assert sgnn.settings().spill_dir == tmp_path and sgnn.settings().spill_min_bytes == 1 << 20
    with torch.inference_mode():
        out = GCNConv(F, F)(x, ei)
    assert memory.is_spilled(out) and os.listdir(tmp_path) == []
    monkeypatch.setenv("SGNN_SPILL_MIN_BYTES", "lots")
    with pytest.raises(sgnn.UserError, match="SGNN_SPILL_MIN_BYTES"):
        memory.empty((3000, 1000), torch.float32)


def test_bad_spill_dir_is_named(tmp_path, monkeypatch):
    missing, afile = tmp_path / "missing", tmp_path / "afile"
    afile.write_text("")
    for bad, why in [(missing, "does not exist"), (afile, "is not a directory")]:
        with pytest.raises(sgnn.UserError, match=f"{bad}.*{why}"):
            with sgnn.config(spill_dir=bad):
                pass
    monkeypatch.setenv("SGNN_SPILL_DIR", str(missing))  # the environment's: at first use
    sgnn.settings()
    with pytest.raises(sgnn.UserError, match=f"SGNN_SPILL_DIR.*{missing}.*does not exist"):
        memory.empty((3000, 1000), torch.float32)
    monkeypatch.delenv("SGNN_SPILL_DIR")
    gone = tmp_path / "gone"
    gone.mkdir()
    with sgnn.config(spill_dir=gone, spill_min_bytes=1 << 20):
        gone.rmdir()  # removed after config checked it
        with pytest.raises(sgnn.UserError, match=f"{gone}.*does not exist"):
            memory.empty((3000, 1000), torch.float32)


def test_unwritable_spill_dir_is_named(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root may write any directory: report this one as the kernel would to others
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: access(p, mode) and str(p) != str(ro))
    with pytest.raises(sgnn.UserError, match=f"{ro}.*not writable"):
        with sgnn.config(spill_dir=ro):
            pass


@pytest.mark.parametrize("value", [0, -5, 1.5, "1 MiB", True])
def test_spill_min_bytes_is_validated(value):
    with pytest.raises(sgnn.UserError, match="spill_min_bytes"):
        with sgnn.config(spill_min_bytes=value):
            pass


def test_full_disk_is_out_of_memory(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(memory.shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - 4096, 4096))
    with sgnn.config(spill_dir=tmp_path, spill_min_bytes=1 << 20):
        with pytest.raises(sgnn.OutOfMemory, match=f"{12_000_000} bytes.*{tmp_path}.*only 4096 bytes"):
            memory.empty((3000, 1000), torch.float32)
    assert os.listdir(tmp_path) == []  # refused before the file was made
