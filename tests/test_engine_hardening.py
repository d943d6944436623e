"""Regression tests for the engine bugs of tracker issue 8 (an independent probe's findings).

1. tensors without real storage (PyG ``EdgeIndex`` via ``as_subclass``, meta, FakeTensor,
   functional tensors) never reach native code: plain views where the data is real, else UserError;
2. ``from_scipy`` checks everything, whatever scipy's flags say, and accepts every scipy format;
4. caches stay bounded over thousands of distinct sizes;
5. repeated coordinates of a pattern-only tensor keep adding up through every conversion;
6. an unusable cache directory falls back to a private temporary one (one warning);
7. a hung compiler is killed with its process group after ``SGNN_COMPILE_TIMEOUT``; stale build
   files are swept;
8. a missing compiler and corrupted cache entries give a clear error / a rebuild;
9. feature widths are bucketed: widths 1..160 compile about ten kernels.

Bug 3 (threads) is in ``test_engine_threads.py``, bug 10 (the fuzz suite) in ``test_engine_fuzz.py``.
Cases that crashed the process before the fix also run in a child process, so a regression fails
one test instead of the session.
"""
from __future__ import annotations

import gc
import os
import random
import string
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from child_helpers import assert_each_raises_in_child

import sgnn
from sgnn.engine import compiler, convert, diskcache, runtime
from sgnn.engine.native import plain, pointer
from sgnn.errors import CompilerError, UserError

S = sgnn.SparseTensor
t = torch.tensor


def fresh_spec() -> str:
    """SpMM under index names no other test uses (plans and kernels are memoised per spec)."""
    a, b, c = random.Random(uuid.uuid4().int).sample(string.ascii_letters, 3)
    return f"{a}{b},{b}{c}->{a}{c}"


def child(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=240, env={**os.environ, **env})


# ---------------------------------------------------------------- 1. the native pointer gate

EDGES = [[0, 1, 1], [1, 0, 2]]


def test_edge_index_subclass_gives_the_right_result():
    from torch_geometric import EdgeIndex
    ei = EdgeIndex(t(EDGES), sparse_size=(3, 3))
    want = S.from_edge_index(t(EDGES), 3).to_dense()
    assert torch.equal(S.from_edge_index(ei, 3).to_dense(), want)
    assert torch.equal(S.from_coo(ei[1], ei[0], None, (3, 3)).to_dense(), want)
    A = S.from_edge_index(ei)  # num_nodes inferred from the subclass's data
    x = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(sgnn.einsum("ik,kj->ij", A, x), want @ x)


def test_subclasses_with_real_storage_are_unwrapped_without_copies():
    class Tagged(torch.Tensor):
        pass
    x = torch.arange(6.0).reshape(3, 2)
    tagged = x.as_subclass(Tagged)
    view = plain(tagged, "x", "test")
    assert type(view) is torch.Tensor and view.data_ptr() == x.data_ptr()
    A = S.from_dense(torch.eye(3))
    assert torch.equal(sgnn.einsum("ik,kj->ij", A, tagged), x)
    vals = torch.nn.Parameter(torch.ones(3))
    B = S.from_csr(t([0, 1, 2, 3]), t([0, 1, 2]), vals, (3, 3))
    assert type(B.values) is torch.Tensor and torch.equal(B.to_dense(), torch.eye(3))


def _fake(*shape):
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        return torch.ones(*shape)


NO_DATA = {
    "meta": lambda *s: torch.empty(*s, device="meta"),
    "fake": _fake,
}


@pytest.mark.parametrize("kind", list(NO_DATA))
def test_tensors_without_data_are_user_errors(kind):
    make = NO_DATA[kind]
    name = "meta" if kind == "meta" else "FakeTensor"
    A = S.from_dense(torch.eye(3))
    cases = [
        lambda: sgnn.einsum("ik,kj->ij", A, make(3, 2)),
        lambda: S.from_coo(make(2).long(), t([0, 1]), None, (3, 3)),
        lambda: S.from_csr(t([0, 1]), t([0]), make(1), (1, 1)),
        lambda: S.from_edge_index(make(2, 3).long(), 3),
        lambda: S.from_dense(make(3, 3)),
        lambda: convert.coo_to_csr(make(2).long(), t([0, 1]), None, (3, 3)),
        lambda: convert.csr_transpose(t([0, 1]), t([0]), make(1), (1, 1)),
    ]
    for case in cases:
        with pytest.raises(UserError, match=name):
            case()


def test_functional_tensor_is_user_error():
    A = S.from_dense(torch.eye(2))
    seen = []

    def f(x):
        try:
            sgnn.einsum("ik,kj->ij", A, x)
        except UserError as e:
            seen.append(str(e))
        return x
    torch.func.functionalize(f)(torch.ones(2, 2))
    assert seen and "functional" in seen[0]


def test_calling_under_fake_tensor_mode_is_user_error():
    """Real inputs, but torch would allocate the output (and any conversion) as fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    A, x = S.from_dense(torch.eye(3)), torch.ones(3, 2)
    B = S.from_dense(torch.eye(3), format="csc")
    with FakeTensorMode():
        with pytest.raises(UserError, match="FakeTensorMode"):
            sgnn.einsum("ik,kj->ij", A, x)
        with pytest.raises(UserError, match="FakeTensorMode"):
            sgnn.einsum("ik,kj->ij", B, x)  # its CSR conversion must not be cached as fake arrays
    assert torch.equal(sgnn.einsum("ik,kj->ij", B, x), x)


def test_pointer_checks_everything():
    x = torch.ones(4, 4)
    assert pointer(x, torch.float32, "x") == x.data_ptr()
    assert pointer(torch.empty(0), torch.float32, "x") is not None
    for bad, match in [(x.t(), "contiguous"), (x.double(), "dtype"), (torch.empty(4, device="meta"), "meta"),
                       (x.to_sparse(), "strided")]:
        with pytest.raises(UserError, match=match):
            pointer(bad, torch.float32, "x")


def test_no_data_never_crashes_a_child_process():
    """The probe's crashing cases, each in one child: every one raises, the process exits cleanly."""
    assert_each_raises_in_child("""
        import numpy as np, scipy.sparse as sp, torch, sgnn
        from torch_geometric import EdgeIndex
        S = sgnn.SparseTensor
        ei = EdgeIndex(torch.tensor([[0, 1, 1], [1, 0, 2]]), sparse_size=(3, 3))
        A = S.from_edge_index(ei.as_subclass(torch.Tensor), 3)
        assert A.nnz == 3 and sgnn.einsum("ik,kj->ij", A, torch.ones(3, 2)).sum().item() == 6.0
        def csr(indptr, indices, data, shape):
            m = sp.csr_matrix(shape)
            m.indptr, m.indices, m.data = indptr, indices, data
            m.has_canonical_format = True  # scipy's flag: trusted by the old code
            return m
        bad = [
            lambda: S.from_scipy(csr(np.array([0, 1, 1], np.int32), np.array([10**8], np.int32),
                                     np.ones(1, np.float32), (2, 3))),
            lambda: S.from_scipy(csr(np.array([0, 1, 1], np.int32), np.array([3], np.int32),
                                     np.ones(1, np.float32), (2, 3))),
            lambda: sgnn.einsum("ik,kj->ij", A, torch.empty(3, 2, device="meta")),
        ]
    """)


# ---------------------------------------------------------------- 2. from_scipy


def _lying_csr(indptr, indices, data, shape):
    """A CSR whose arrays are set by hand and whose flags claim it is canonical."""
    m = sp.csr_matrix(shape)
    m.indptr, m.indices, m.data = indptr, indices, data
    m.has_sorted_indices = True
    m.has_canonical_format = True
    return m


@pytest.mark.parametrize("col,match", [(100_000_000, r"\[0, 3\).*100000000"), (3, r"\[0, 3\).*3"),
                                       (-1, r"-1")])
def test_from_scipy_checks_bounds_whatever_the_flags_say(col, match):
    m = _lying_csr(np.array([0, 1, 1], np.int32), np.array([col], np.int32), np.ones(1, np.float32), (2, 3))
    with pytest.raises(UserError, match=match):
        S.from_scipy(m)


def test_from_scipy_checks_pointers():
    m = _lying_csr(np.array([0, 2, 1], np.int32), np.array([0, 1], np.int32), np.ones(2, np.float32), (2, 3))
    with pytest.raises(UserError, match="non-decreasing"):
        S.from_scipy(m)
    m = _lying_csr(np.array([0, 1], np.int32), np.array([0], np.int32), np.ones(1, np.float32), (2, 3))
    with pytest.raises(UserError, match="pos of length 3"):
        S.from_scipy(m)


def test_from_scipy_unifies_index_dtypes():
    m = _lying_csr(np.array([0, 1, 2], np.int64), np.array([2, 0], np.int32), np.array([1.0, 2.0]), (2, 3))
    a = S.from_scipy(m)
    assert a.pos[1].dtype == a.crd[1].dtype == torch.int32
    assert torch.equal(a.to_dense(), torch.tensor([[0, 0, 1.0], [2.0, 0, 0]], dtype=torch.float64))
    big = _lying_csr(np.array([0, 1, 1], np.int64), np.array([2**40], np.int64), np.ones(1), (2, 3))
    with pytest.raises(UserError, match="1099511627776"):  # checked before narrowing to int32
        S.from_scipy(big)


def test_from_scipy_non_contiguous_and_big_endian_data():
    base = np.arange(1.0, 9.0)
    m = _lying_csr(np.array([0, 2, 4], np.int32), np.array([0, 2, 1, 2], np.int32), base[::2], (2, 3))
    assert not m.data.flags.c_contiguous
    assert S.from_scipy(m).values.tolist() == [1.0, 3.0, 5.0, 7.0]
    m.data = np.array([1.0, 2.0, 3.0, 4.0], dtype=">f8")
    assert S.from_scipy(m).values.tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("dtype,want", [(np.int64, torch.float32), (np.bool_, torch.float32),
                                        (np.longdouble, torch.float64), (np.float32, torch.float32),
                                        (np.uint32, torch.float32),
                                        (np.float64, torch.float64), (np.int8, torch.float32)])
def test_from_scipy_value_dtypes(dtype, want):
    dense = np.array([[0, 1, 0], [2, 0, 3]]).astype(dtype)
    a = S.from_scipy(sp.csr_matrix(dense))
    assert a.values.dtype == want
    assert torch.equal(a.to_dense(), torch.from_numpy(dense.astype(np.float64)).to(want))


def test_from_scipy_refuses_complex():
    with pytest.raises(UserError, match="complex"):
        S.from_scipy(sp.csr_matrix(np.array([[1j, 0], [0, 1]])))


FORMATS = ["csr", "csc", "coo", "bsr", "lil", "dok", "dia", "csr_array", "csc_array", "coo_array"]


def _scipy(fmt: str, dense: np.ndarray):
    if fmt.endswith("_array"):
        return getattr(sp, fmt)(dense)
    return sp.csr_matrix(dense).asformat(fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_from_scipy_accepts_every_format(fmt):
    rng = np.random.default_rng(1)
    dense = rng.integers(-3, 4, (7, 5)) * (rng.random((7, 5)) < 0.4)
    a = S.from_scipy(_scipy(fmt, dense.astype(np.float64)))
    assert torch.equal(a.to_dense(), torch.from_numpy(dense.astype(np.float64)))


def test_from_scipy_sums_coo_duplicates():
    m = sp.coo_matrix((np.array([1.0, 2.0, 4.0]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
    assert S.from_scipy(m).to_dense().tolist() == [[0.0, 3.0], [4.0, 0.0]]


def test_from_scipy_canonicalises_unsorted_rows_and_duplicates():
    rng = np.random.default_rng(2)
    dense = (rng.random((30, 30)) < 0.2) * rng.integers(1, 5, (30, 30)).astype(np.float64)
    p = rng.permutation(30)
    m = sp.csr_matrix(dense)[p][:, p]  # column permutation: unsorted indices
    assert not m.has_sorted_indices
    a = S.from_scipy(m)
    assert a.format == sgnn.CSR and torch.equal(a.to_dense(), torch.from_numpy(dense[p][:, p]))
    dup = _lying_csr(np.array([0, 3], np.int32), np.array([2, 0, 2], np.int32), np.array([1.0, 2.0, 3.0]), (1, 3))
    b = S.from_scipy(dup)
    assert b.crd[1].tolist() == [0, 2] and b.values.tolist() == [2.0, 4.0]


def test_from_scipy_shares_canonical_memory():
    m = sp.random(40, 30, density=0.1, format="csr", random_state=3, dtype=np.float32)
    a = S.from_scipy(m)
    assert a.values.data_ptr() == m.data.__array_interface__["data"][0]
    assert a.crd[1].data_ptr() == m.indices.__array_interface__["data"][0]


# ---------------------------------------------------------------- 4. bounded caches


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_caches_stay_bounded_over_distinct_sizes():
    """2,000 fresh graphs of 2,000 distinct node counts through one plan: cache sizes and RSS flat."""
    spec = fresh_spec()
    x_all = torch.randn(2100, 16)
    g = torch.Generator().manual_seed(0)
    rss = []
    for n in range(50, 2050):
        A = S.from_edge_index(torch.randint(0, n, (2, 3 * n), generator=g), n)
        out = sgnn.einsum(spec, A, x_all[:n])
        assert out.shape == (n, 16)
        if n in (550, 2049):
            gc.collect()
            rss.append(_rss_mb())
    plan = runtime.plan_for(sgnn.engine.api._einsum_stmt(spec, 2), {"t0": A, "t1": x_all[:n]}, memo_key=spec)
    assert len(plan.by_sizes) <= runtime.SIZES_PER_PLAN
    assert len(plan.kernels) <= 4
    assert len(runtime._UNIFORM) <= 64 and len(runtime._plans) <= runtime.PLANS
    assert rss[1] - rss[0] < 40, f"RSS grew from {rss[0]:.0f} to {rss[1]:.0f} MiB over 1,500 graphs"


def test_lru_keeps_recent_entries():
    from sgnn.engine.caches import LRU
    c = LRU(4)
    for k in range(100):
        c.put(k, k)
        assert c.get(0, "gone") in (0, "gone")
        c.get(k)
    assert len(c) <= 4 and 99 in c
    hot = LRU(4)
    hot.put("hot", 1)
    for k in range(100):
        hot.put(("cold", k), k)
        assert hot.get("hot") == 1, f"a key used after every insert was evicted after {k} inserts"


# ---------------------------------------------------------------- 5. multiplicity of repeated coordinates


def as_dense(x) -> torch.Tensor:
    return x.to_dense() if isinstance(x, S) else x


def pattern_dups(fmt="csr"):
    return S.from_coo(t([0, 0]), t([1, 1]), None, (2, 2), format=fmt, sum_duplicates=False)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_pattern_duplicates_add_up_everywhere(fmt):
    A = pattern_dups(fmt)
    dense = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    assert A.values is None and torch.equal(A.to_dense(), dense)
    assert torch.equal(sgnn.einsum("ij->i", A), dense.sum(1))
    assert torch.equal(sgnn.einsum("ij->j", A), dense.sum(0))
    assert torch.equal(sgnn.einsum("ij->", A), dense.sum())
    assert torch.equal(sgnn.einsum("ij->ji", A).to_dense(), dense.T)
    y = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    assert torch.equal(sgnn.einsum("ij,ij->ij", A, y).to_dense(), dense * y)
    assert torch.equal(sgnn.einsum("ij,ij->ij", A, A).to_dense(), dense * dense)
    assert torch.equal(as_dense(sgnn.einsum("ji,ij->ij", A, y)), dense.T * y)  # transposed access
    B = S.from_dense(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    i, j = sgnn.indices("i j")
    X, Y = sgnn.tensors("X Y")
    assert torch.equal(as_dense(sgnn.evaluate(sgnn.compute((i, j), X[i, j] + Y[i, j]), X=A, Y=B)),
                       dense + B.to_dense())
    assert torch.equal(as_dense(sgnn.einsum("ik,kj->ij", A, B)), dense @ B.to_dense())
    assert torch.equal(as_dense(sgnn.einsum("ik,kj->ij", B, A)), B.to_dense() @ dense)
    for target in ("csr", "csc", "coo", "dcsr"):
        assert torch.equal(A.to(target).to_dense(), dense), target
    assert torch.equal(A.to_torch().to_dense(), dense) and A.to_scipy().toarray().tolist() == dense.tolist()


def test_merged_pattern_duplicates_become_counts():
    p, c, v = convert.coo_to_csr(t([0, 0, 1]), t([1, 1, 0]), None, (2, 2), sum_duplicates=True)
    assert c.tolist() == [1, 0] and v.tolist() == [2.0, 1.0]
    A = S.from_coo(t([0, 0, 1]), t([1, 1, 0]), None, (2, 2))
    assert A.counts and A.values.tolist() == [2.0, 1.0]
    p2, c2, v2 = convert.sum_duplicates(t([0, 2, 2]), t([1, 1]), None, (2, 2))
    assert c2.tolist() == [1] and v2.tolist() == [2.0]


def test_counts_take_the_expression_dtype():
    """Counts are whole numbers: a float64 expression reads them as float64 (no dtype mismatch)."""
    A = S.from_edge_index(t([[1, 1, 0], [0, 0, 1]]), 2)  # the edge 1 -> 0 twice
    assert A.counts
    x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    out = sgnn.einsum("ik,kj->ij", A, x)
    assert out.dtype == torch.float64 and out.tolist() == [[4.0], [1.0]]
    assert sgnn.einsum("ik,kj->ij", A, x.float()).tolist() == [[4.0], [1.0]]
    assert sgnn.einsum("ij->i", pattern_dups("coo")).dtype == torch.float32


# ---------------------------------------------------------------- 6. unusable cache directories


@pytest.fixture
def fresh_fallback(monkeypatch):
    """A clean slate for ``diskcache``: the next unusable directory warns and makes a new fallback."""
    monkeypatch.setattr(diskcache, "_fallback", None)
    diskcache.reset()
    yield
    diskcache.reset()


def _compile_fresh_kernel():
    A = S.from_csr(t([0, 1, 2]), t([1, 0]), t([2.0, 3.0]), (2, 2))
    return sgnn.einsum(fresh_spec(), A, torch.ones(2, 3))


def test_cache_dir_under_a_regular_file_falls_back(tmp_path, monkeypatch, fresh_fallback):
    f = tmp_path / "a-file"
    f.write_text("not a directory")
    monkeypatch.setenv("SGNN_CACHE_DIR", str(f / "cache"))
    with pytest.warns(RuntimeWarning, match="SGNN_CACHE_DIR") as record:
        out = _compile_fresh_kernel()
        out2 = _compile_fresh_kernel()  # a second kernel: no second warning
    assert torch.equal(out, torch.tensor([[2.0] * 3, [3.0] * 3])) and torch.equal(out, out2)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    assert list(diskcache._fallback.glob("*/*.so"))


def test_read_only_cache_dir_falls_back(tmp_path, monkeypatch, fresh_fallback):
    ro = tmp_path / "read-only"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(diskcache.os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    monkeypatch.setenv("SGNN_CACHE_DIR", str(ro))
    with pytest.warns(RuntimeWarning, match="unusable"):
        _compile_fresh_kernel()
    assert not list(ro.iterdir())


def test_write_failure_inside_the_cache_falls_back(tmp_path, monkeypatch, fresh_fallback):
    """The directory looks writable but writing in it fails (e.g. a read-only bind mount)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SGNN_CACHE_DIR", str(cache))
    real = compiler._cached

    def failing(source, key, name, root):
        if root == cache:
            raise PermissionError(13, "Permission denied", str(root))
        return real(source, key, name, root)
    monkeypatch.setattr(compiler, "_cached", failing)
    with pytest.warns(RuntimeWarning, match="Permission denied"):
        _compile_fresh_kernel()


def test_no_usable_directory_is_compiler_error(tmp_path, monkeypatch, fresh_fallback):
    f = tmp_path / "a-file"
    f.write_text("")
    monkeypatch.setenv("SGNN_CACHE_DIR", str(f / "cache"))

    def no_tmp(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(diskcache.tempfile, "mkdtemp", no_tmp)
    with pytest.raises(CompilerError, match="SGNN_CACHE_DIR"):
        _compile_fresh_kernel()


# ---------------------------------------------------------------- 7. hung compilers, stale build files

HANG = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "hanging-compiler 1.0"; exit 0; fi
sleep 120 &
echo $! > "{pidfile}"
sleep 120
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie waits for a non-reaping init: it is dead


def test_hung_compiler_is_killed_with_its_children(tmp_path):
    pidfile, script = tmp_path / "child.pid", tmp_path / "hang.sh"
    script.write_text(HANG.format(pidfile=pidfile))
    script.chmod(0o755)
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    with sgnn.config(cxx=str(script), compile_timeout=1.0, cache_dir=cache):
        with pytest.raises(CompilerError, match="SGNN_COMPILE_TIMEOUT"):
            _compile_fresh_kernel()
    assert time.perf_counter() - t0 < 15
    pid = int(pidfile.read_text())
    deadline = time.time() + 5
    while not _gone(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert _gone(pid), f"the compiler's child {pid} outlived the timeout"
    assert not list(cache.glob("*/.*.so")), "the killed build left its temporary binary"


def test_compile_timeout_from_environment(monkeypatch):
    monkeypatch.setenv("SGNN_COMPILE_TIMEOUT", "2.5")
    assert sgnn.settings().compile_timeout == 2.5
    monkeypatch.setenv("SGNN_COMPILE_TIMEOUT", "nonsense")
    assert sgnn.settings().compile_timeout == 300.0


def test_stale_build_files_are_swept(tmp_path):
    d = tmp_path / "ab"
    d.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    files = {
        "dead": d / f".abkey.{dead.pid}.x1y2.so",
        "live": d / f".abkey.{os.getpid()}.x3y4.so",
        "old": d / ".abkey.legacy.so",
        "meta_dead": d / f"abkey.json.{dead.pid}",
        "fresh_legacy": d / ".abkey.other.so",
        "entry": d / "abkey.so",
    }
    for p in files.values():
        p.write_text("x")
    hour_ago = time.time() - 2 * diskcache.STALE_SECONDS
    os.utime(files["old"], (hour_ago, hour_ago))
    assert diskcache.sweep(tmp_path) == 3
    assert {k for k, p in files.items() if p.exists()} == {"live", "fresh_legacy", "entry"}


def test_opening_a_cache_sweeps_it(tmp_path, monkeypatch, fresh_fallback):
    leftover = tmp_path / "cd" / ".cdkey.999999999.zz.so"
    leftover.parent.mkdir()
    leftover.write_text("x")
    monkeypatch.setenv("SGNN_CACHE_DIR", str(tmp_path))
    assert diskcache.root() == tmp_path and not leftover.exists()


# ---------------------------------------------------------------- 8. missing compiler, corrupted entries


def test_missing_compiler_is_compiler_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SGNN_CXX", "/nonexistent")
    monkeypatch.setenv("SGNN_CACHE_DIR", str(tmp_path))
    with pytest.raises(CompilerError, match="/nonexistent.*SGNN_CXX"):
        _compile_fresh_kernel()


BUILD_CHILD = """
    import json, sys
    from pathlib import Path
    from sgnn.engine import compiler
    out = []
    for src in sys.argv[1:]:
        lib, info = compiler.build(Path(src).read_text())
        out.append({"answer": lib.sgnn_answer(), "hit": info["hit"], "path": info["path"]})
    print(json.dumps(out))
"""
DAMAGES = ["garbage_json", "no_json", "garbage_so_matching_hash", "empty_so"]


def _build_in_child(cache: Path, sources: list[Path]) -> list[dict]:
    """A fresh process: glibc's dlopen would hand this one the library it already mapped."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(BUILD_CHILD), *map(str, sources)],
                       capture_output=True, text=True, timeout=240,
                       env={**os.environ, "SGNN_CACHE_DIR": str(cache), "SGNN_DEBUG": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    return json.loads(r.stdout.strip().splitlines()[-1])


def _damage(so: Path, how: str) -> None:
    meta = so.with_suffix(".json")
    if how == "garbage_json":
        meta.write_text("{not json")
    elif how == "no_json":
        meta.unlink()
    elif how == "garbage_so_matching_hash":  # passes the hash check, then fails to load
        so.write_bytes(b"\x7fELF garbage")
        meta.write_text('{"sha256": "%s"}' % compiler._sha(so))
    else:
        so.write_bytes(b"")


def test_corrupted_cache_entries_are_rebuilt(tmp_path):
    sources = []
    for n, how in enumerate(DAMAGES):
        src = tmp_path / f"{how}.cpp"
        src.write_text(f'// {uuid.uuid4()}\n#include "sgnn_runtime.h"\nextern "C" int sgnn_answer() {{ return {n}; }}\n')
        sources.append(src)
    cache = tmp_path / "cache"
    first = _build_in_child(cache, sources)
    assert [r["answer"] for r in first] == list(range(len(DAMAGES))) and not any(r["hit"] for r in first)
    for r, how in zip(first, DAMAGES):
        _damage(Path(r["path"]), how)
    second = _build_in_child(cache, sources)
    assert [r["answer"] for r in second] == list(range(len(DAMAGES)))
    for r in second:
        so = Path(r["path"])
        assert compiler._valid_entry(so, so.with_suffix(".json"))


# ---------------------------------------------------------------- 9. width bucketing


def test_widths_share_bucketed_kernels():
    """Feature widths 1..160: about ten kernels (exact 8/16/32/64/128 + one generic kernel per
    bucket), every result exact on integer data."""
    spec = fresh_spec()
    g = torch.Generator().manual_seed(1)
    A = S.from_coo(torch.randint(0, 30, (90,), generator=g), torch.randint(0, 20, (90,), generator=g),
                   torch.randint(-3, 4, (90,), generator=g).float(), (30, 20))
    dense = A.to_dense().double()
    for F in range(1, 161):
        x = torch.randint(-3, 4, (20, F), generator=g).float()
        out = sgnn.einsum(spec, A, x)
        assert torch.equal(out, (dense @ x.double()).float()), F
    plan = runtime.plan_for(sgnn.engine.api._einsum_stmt(spec, 2), {"t0": A, "t1": x}, memo_key=spec)
    assert len(plan.kernels) <= 12, sorted(str(k) for k in plan.kernels._new)


BUCKETS = [  # (width, most, values per cache line) -> (tile, exact); float32: 16 per line, float64: 8
    (1, 128, 16, (16, False)), (8, 128, 16, (8, True)), (12, 128, 16, (16, False)), (16, 128, 16, (16, True)),
    (17, 128, 16, (32, False)), (100, 128, 16, (128, False)), (128, 128, 16, (128, True)),
    (160, 128, 16, (128, False)), (0, 128, 16, (16, False)), (5, 64, 8, (8, False)), (8, 64, 8, (8, True)),
    (12, 64, 8, (16, False)), (64, 64, 8, (64, True)), (128, 64, 8, (64, False))]


@pytest.mark.parametrize("n,most,line,want", BUCKETS)
def test_register_width_buckets(n, most, line, want):
    from sgnn.engine.tiling import register_width
    assert register_width(n, most, line) == want


GUARDED = """
    import ctypes, mmap, numpy as np, torch, sgnn
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE

    def guarded(rows, width, dtype):
        # rows x width values ending exactly at a PROT_NONE page: reading one element past them faults
        nbytes = rows * width * np.dtype(dtype).itemsize
        pages = -(-nbytes // page)
        buf = mmap.mmap(-1, (pages + 1) * page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        assert libc.mprotect(base + pages * page, page, 0) == 0
        arr = np.frombuffer(buf, dtype=dtype, count=rows * width, offset=pages * page - nbytes)
        arr[:] = np.arange(rows * width) % 7 - 3
        return torch.from_numpy(arr).view(rows, width)

    for dtype, widths in ((np.float32, (1, 5, 12, 17, 100, 130)), (np.float64, (3, 12, 70))):
        for F in widths:
            n = 9
            x = guarded(n, F, dtype)
            A = sgnn.SparseTensor.from_coo(torch.tensor([0, 4, 8, 8]), torch.tensor([8, 8, 7, 8]),
                                           torch.tensor([1.0, 2.0, 3.0, 4.0]).to(x.dtype), (n, n))
            out = sgnn.einsum("ik,kj->ij", A, x)
            assert torch.equal(out, (A.to_dense().double() @ x.double()).to(x.dtype)), (dtype, F)
    print("ok")
"""


def test_partial_register_tile_never_reads_past_the_operand():
    """The generic kernel of a bucketed width loads whole vectors from gathered rows; for the last
    row of X they would cross X's end. Here X ends at a PROT_NONE page: any such read faults."""
    r = child(GUARDED)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
