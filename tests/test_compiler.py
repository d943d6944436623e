"""The on-disk kernel cache, written and read by child processes (after tinygrad's test_disk_cache).

Each test gets a fresh cache directory, and the children build their sparse operand with
``from_csr`` (no conversion), so each child compiles exactly the kernel under test.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import sgnn
from sgnn.engine import compiler

CHILD = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import torch, sgnn
    spec, width = sys.argv[1], int(sys.argv[2])
    barrier = os.environ.get("BARRIER")
    if barrier:  # start compiling together with the sibling process
        Path(barrier, f"ready-{os.getpid()}").touch()
        while not Path(barrier, "go").exists():
            time.sleep(0.005)
    pos, crd = torch.tensor([0, 2, 2, 3]), torch.tensor([0, 2, 1])
    A = sgnn.SparseTensor.from_csr(pos, crd, torch.tensor([1.0, 2.0, 3.0]), (3, 3))
    x = torch.arange(3 * width, dtype=torch.float32).reshape(3, width)
    out = sgnn.einsum(spec, A, x)
    print(json.dumps({"out": out.tolist(), "key": sgnn.explain(spec, A, x).cache_key}))
""")


def reference(width: int) -> list:
    a = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    return (a @ torch.arange(3 * width, dtype=torch.float32).reshape(3, width)).tolist()


def start(cache: Path, spec="ik,kj->ij", width=5, **env) -> subprocess.Popen:
    e = {**os.environ, "SGNN_CACHE_DIR": str(cache), "SGNN_DEBUG": "1", **env}
    return subprocess.Popen([sys.executable, "-c", CHILD, spec, str(width)], env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p: subprocess.Popen) -> tuple[dict, str]:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def run(cache: Path, spec="ik,kj->ij", width=5, **env) -> tuple[dict, str]:
    return finish(start(cache, spec, width, **env))


def kernel_files(cache: Path, suffix=".so") -> list[Path]:
    return sorted(p for p in cache.glob(f"*/*{suffix}"))


def misses(log: str) -> int:
    return sum(1 for ln in log.splitlines() if ln.startswith("[sgnn] kernel[") and ": miss " in ln)


def hits(log: str) -> int:
    return sum(1 for ln in log.splitlines() if ln.startswith("[sgnn] kernel[") and ": hit " in ln)


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> tuple[Path, dict]:
    """A cache directory holding one kernel, built by a child process, and that child's answer."""
    cache = tmp_path_factory.mktemp("warm-cache")
    first, log = run(cache)
    assert first["out"] == reference(5) and misses(log) == 1
    return cache, first


def test_second_process_reads_the_cache(warm):
    """A second process loads the binary (SGNN_ASSERT_CACHED=1 proves it compiles nothing); a kernel
    that is not cached is then an error, not a silent compile."""
    cache, first = warm
    reader = start(cache, SGNN_ASSERT_CACHED="1")
    other = start(cache, spec="ab,bc->ac", SGNN_ASSERT_CACHED="1")  # other index names: another kernel
    second, log = finish(reader)
    assert second == first and (hits(log), misses(log)) == (1, 0)
    _, err = other.communicate(timeout=300)
    assert other.returncode != 0 and "CompilerError" in err and "SGNN_ASSERT_CACHED" in err
    so = kernel_files(cache)
    assert [p.stem for p in so] == [first["key"]]
    meta = json.loads(so[0].with_suffix(".json").read_text())
    assert meta["sha256"] and meta["compile_ms"] > 0


def test_truncated_binary_is_rebuilt(warm, tmp_path):
    """A ``.so`` cut off mid-write (a crash, a full disk) fails its hash check and is rebuilt."""
    cache = tmp_path / "cache"
    shutil.copytree(warm[0], cache)
    (so,) = kernel_files(cache)
    size = so.stat().st_size
    with open(so, "r+b") as f:
        f.truncate(size // 3)
    second, log = run(cache)
    assert second["out"] == reference(5)
    assert misses(log) == 1 and "corrupted" in log
    assert so.stat().st_size == size
    assert compiler._valid_entry(so, so.with_suffix(".json"))


def test_concurrent_compiles_share_one_binary(tmp_path):
    """Two processes compiling the same kernel at once: both succeed, one builds, one binary."""
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    procs = [start(cache, BARRIER=str(barrier)) for _ in range(2)]
    deadline = time.time() + 120
    while len(list(barrier.glob("ready-*"))) < 2:
        assert time.time() < deadline and all(p.poll() is None for p in procs), "children did not start"
        time.sleep(0.01)
    (barrier / "go").touch()
    (a, log_a), (b, log_b) = (finish(p) for p in procs)
    assert a["out"] == b["out"] == reference(5)
    assert a["key"] == b["key"]
    assert misses(log_a) + misses(log_b) == 1, "the file lock should let exactly one process compile"
    assert [p.stem for p in kernel_files(cache)] == [a["key"]]
    assert not list(cache.glob("*/.*.so")), "a temporary build file was left behind"


def test_cache_disabled_writes_nothing(tmp_path):
    out, log = run(tmp_path, SGNN_CACHE="0")
    assert out["out"] == reference(5) and misses(log) == 1
    assert kernel_files(tmp_path) == []


def test_cache_key_covers_source_and_flags():
    src = '#include "sgnn_runtime.h"\nextern "C" void f() {}\n'
    key = compiler.cache_key(src)
    assert key == compiler.cache_key(src)
    assert key != compiler.cache_key(src + "\n")
    with sgnn.config(cxxflags="-DSGNN_TEST_FLAG"):
        assert key != compiler.cache_key(src)
