"""SpMM latencies for ``bench=spmm``: the first compile of a new kernel (fresh cache directory), the first
SpMM of a new process (empty, then warm disk cache), and a warm in-process call."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .cases import CONFIG_DIR
from .timing import time_calls

SPEC = "ik,kj->ij"
REPO = CONFIG_DIR.parent

# The new process: everything after ``import sgnn`` up to the end of the first einsum is timed (loading
# the saved inputs with torch.load, building the SparseTensor, the call); the imports are reported apart.
CHILD = r"""
import json, sys, time
t_start = time.perf_counter()
import torch
import sgnn
t0 = time.perf_counter()
d = torch.load(sys.argv[1])
torch.set_num_threads(int(sys.argv[2]))
A = sgnn.SparseTensor.from_edge_index(d["edge_index"], num_nodes=d["n"], values=d["weight"])
Y = sgnn.einsum("ik,kj->ij", A, d["x"])
t1 = time.perf_counter()
print(json.dumps({"first_spmm_ms": 1e3 * (t1 - t0), "import_ms": 1e3 * (t0 - t_start),
                  "max_abs_diff": float((Y - d["y"]).abs().max())}))
"""


def first_compile(op, features) -> list[dict]:
    """Wall time of the first einsum per F in a fresh cache directory (each new kernel compiles)."""
    import sgnn
    out, keys = [], set()
    with tempfile.TemporaryDirectory(prefix="sgnn-bench-cache-") as d, sgnn.config(cache_dir=d):
        A = sgnn.SparseTensor.from_edge_index(op.edge_index, num_nodes=op.n, values=op.weight)
        for f in features:
            X = torch.randn(op.n, f)
            t0 = time.perf_counter()
            sgnn.einsum(SPEC, A, X)
            ms = 1e3 * (time.perf_counter() - t0)
            e = sgnn.explain(SPEC, A, X)
            out.append({"F": f, "ms": ms, "cache_key": e.cache_key, "cpp_lines": e.cpp_lines,
                        "tile": str(e.tile), "new_kernel": e.cache_key not in keys})
            keys.add(e.cache_key)
    return out


def new_process(op, threads: int, runs: int) -> dict:
    """First SpMM (F=16) of a fresh Python process after ``import sgnn``: once with an empty cache
    (compiles), then ``runs`` times with that warm disk cache under SGNN_ASSERT_CACHED=1."""
    import sgnn
    A = sgnn.SparseTensor.from_edge_index(op.edge_index, num_nodes=op.n, values=op.weight)
    x = torch.randn(op.n, 16, generator=torch.Generator().manual_seed(7))
    y = sgnn.einsum(SPEC, A, x)
    with tempfile.TemporaryDirectory(prefix="sgnn-bench-proc-") as d:
        data = Path(d) / "inputs.pt"
        torch.save({"edge_index": op.edge_index, "weight": op.weight, "n": op.n, "x": x, "y": y}, data)
        env = {**os.environ, "SGNN_CACHE_DIR": str(Path(d) / "cache"), "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        env.pop("SGNN_ASSERT_CACHED", None)
        cold = _child(data, threads, env)
        warm = [_child(data, threads, {**env, "SGNN_ASSERT_CACHED": "1"}) for _ in range(runs)]
    ms = sorted(w["first_spmm_ms"] for w in warm)
    imports = sorted(w["import_ms"] for w in warm)
    return {"cold_first_spmm_ms": cold["first_spmm_ms"], "warm_first_spmm_ms": ms,
            "warm_median_ms": ms[len(ms) // 2] if ms else None, "import_ms": imports,
            "import_median_ms": imports[len(imports) // 2] if imports else None,
            "max_abs_diff": max(w["max_abs_diff"] for w in warm + [cold])}


def _child(data: Path, threads: int, env: dict) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, str(data), str(threads)], env=env, cwd=str(REPO),
                       capture_output=True, text=True, timeout=300, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"child exited {p.returncode}:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def warm_call(op, calls: int) -> dict:
    """Median µs of in-process einsum calls at F=16 (plan memoised, kernel loaded); torch for scale."""
    import sgnn
    A = sgnn.SparseTensor.from_edge_index(op.edge_index, num_nodes=op.n, values=op.weight)
    X = torch.randn(op.n, 16)
    sgnn.einsum(SPEC, A, X)
    with sgnn.config(assert_cached=True):
        t = time_calls(lambda: sgnn.einsum(SPEC, A, X), calls, warmup=50)
    T = A.to_torch()
    tt = time_calls(lambda: torch.sparse.mm(T, X), calls, warmup=50)
    return {"calls": calls, "sgnn_median_us": 1e3 * t.median_ms, "sgnn_p10_us": 1e3 * t.p10_ms,
            "sgnn_p90_us": 1e3 * t.p90_ms, "torch_median_us": 1e3 * tt.median_ms}


def lines(compiles, proc, warm, label: str) -> list[str]:
    """The latency report lines."""
    out = [f"first compile, fresh cache dir, {label}, F={c['F']}: {c['ms']:.0f} ms "
           f"({'new kernel' if c['new_kernel'] else 'same kernel as before'}, {c['cpp_lines']} C++ lines, "
           f"tile {c['tile']})" for c in compiles or []]
    if proc:
        out.append(f"new process, empty cache (compiles), first SpMM after import: "
                   f"{proc['cold_first_spmm_ms']:.0f} ms")
        out.append(f"new process, warm disk cache, first SpMM after import: "
                   f"{', '.join(f'{m:.1f}' for m in proc['warm_first_spmm_ms'])} ms (import torch + sgnn: "
                   f"median {proc['import_median_ms']:.0f} ms, not counted)")
    if warm:
        out.append(f"warm in-process call, {label}, F=16: sgnn median {warm['sgnn_median_us']:.1f} µs "
                   f"(p10 {warm['sgnn_p10_us']:.1f}, p90 {warm['sgnn_p90_us']:.1f}); torch.sparse.mm "
                   f"{warm['torch_median_us']:.1f} µs")
    return out
