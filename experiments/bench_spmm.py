"""SpMM Y = A X: sgnn against torch.sparse.mm (CSR, MKL), DGL's gspmm and scipy, side by side.

    .venv/bin/python experiments/bench_spmm.py            # full run (several minutes)
    .venv/bin/python experiments/bench_spmm.py --quick    # smoke test: small graphs, few repetitions

A is the GCN-normalised adjacency D^-1/2 (A + I) D^-1/2 of each graph, the same matrix (same int32
CSR arrays where a framework can share them) for every framework; X is n x F float32. Every
framework's result is checked against sgnn's before it is timed. All frameworks run in this one
process with the same thread count (scipy has no threaded SpMM: it runs on one). Timed sgnn calls run
under ``sgnn.config(assert_cached=True)``, so a compile inside a timed section is an error.

Reports per (graph, F, framework): median ms, GFLOP/s (2 nnz F / t), the fraction of the memory
floor reached (bytes 4(n+1) + 8 nnz + 8 n F over the copy bandwidth measured at start), and sgnn's
speedup over the others. Also: the first compile of a new kernel (fresh cache directory), the first
SpMM of a new process with a warm disk cache, and a warm in-process call; then PASS/FAIL lines.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))          # run from a checkout without install

import torch  # noqa: E402

from common import (REPO, CpuMonitor, copy_bandwidth, machine_info, make_graph, print_table,  # noqa: E402
                    set_threads, spmm_floor_bytes, time_calls, wait_until_quiet, write_json)

SPEC = "ik,kj->ij"
FRAMEWORKS = ("sgnn", "torch.sparse.mm", "dgl", "scipy")
TARGETS = {"arxiv": 3.0, "cora": 1.5, "pubmed": 1.5}      # sgnn vs torch.sparse.mm, min speedup
ARXIV_MIN_F = 64
FIRST_COMPILE_S, NEW_PROCESS_MS, WARM_CALL_US = 1.0, 50.0, 30.0

# The child of the new-process test: everything after ``import sgnn`` up to the end of the first
# einsum is timed (loading the saved inputs with torch.load, building the SparseTensor, the call).
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


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: cora+pubmed, F=16,64, 10 reps")
    ap.add_argument("--graphs", default=None, help="comma list of cora, cora-syn, pubmed, arxiv "
                                                   "(default: cora,pubmed,arxiv)")
    ap.add_argument("--features", default=None, help="comma list of F (default: 16,64,128,256)")
    ap.add_argument("--reps", type=int, default=None, help="timed calls per measurement (default 50, "
                                                            "at least 30 unless --quick)")
    ap.add_argument("--budget", type=float, default=20.0,
                    help="seconds per measurement above which reps drop toward 30 (default 20)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every framework (default 2)")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma list (default: all)")
    ap.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    ap.add_argument("--wait-quiet", type=float, default=600.0,
                    help="before each (graph, F), wait up to this many seconds for other processes to "
                         "go below 0.2 cores (default 600; 0: do not wait). Their load is reported anyway")
    a = ap.parse_args(argv)
    a.graphs = (a.graphs or ("cora,pubmed" if a.quick else "cora,pubmed,arxiv")).split(",")
    a.features = [int(f) for f in (a.features or ("16,64" if a.quick else "16,64,128,256")).split(",")]
    a.reps = a.reps or (10 if a.quick else 50)
    a.min_reps = min(a.reps, 30) if not a.quick else min(a.reps, 5)
    a.frameworks = [f for f in a.frameworks.split(",") if f]
    unknown = set(a.frameworks) - set(FRAMEWORKS)
    if unknown or "sgnn" not in a.frameworks:
        ap.error(f"--frameworks: expected sgnn plus some of {FRAMEWORKS} (got {a.frameworks})")
    return a


def log(msg: str) -> None:
    print(f"[bench_spmm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- frameworks ---------------------------------------------------------------------------------

def prepare(g, frameworks):
    """Per framework, a function X -> Y computing A X, where A is ``g``'s weighted adjacency A[dst, src]."""
    import sgnn
    A = sgnn.SparseTensor.from_edge_index(g.edge_index, num_nodes=g.n, values=g.weight)
    fns = {"sgnn": lambda X: sgnn.einsum(SPEC, A, X)}
    if "torch.sparse.mm" in frameworks:
        T = A.to_torch()                           # shares sgnn's int32 pos/crd and values
        fns["torch.sparse.mm"] = lambda X: torch.sparse.mm(T, X)
    if "dgl" in frameworks:
        import dgl
        dg = dgl.graph((g.edge_index[0], g.edge_index[1]), num_nodes=g.n)
        dg.create_formats_()
        w = g.weight.view(-1, 1)                   # messages flow src -> dst: out[dst] = sum w * X[src]
        fns["dgl"] = lambda X: dgl.ops.u_mul_e_sum(dg, X, w)
    if "scipy" in frameworks:
        S = A.to_scipy()                           # csr_matrix over the same arrays
        fns["scipy"] = lambda X: S @ X.numpy()
    return A, fns


def as_tensor(y) -> torch.Tensor:
    return y if isinstance(y, torch.Tensor) else torch.from_numpy(y)


def quiet(args) -> None:
    if args.wait_quiet > 0:
        load = wait_until_quiet(args.wait_quiet, threshold=0.2, window_s=1.0, log=log)
        if load >= 0.2:
            log(f"still {load:.2f} cores used by other processes after {args.wait_quiet:.0f} s; "
                "measuring anyway")


def measure(fw, fn, X, ref, args, g, f, bw):
    """Verify ``fn(X)`` against ``ref``, then time it; a row dict (with 'error' when it failed)."""
    import sgnn
    row = {"graph": g.name, "label": g.label, "n": g.n, "nnz": g.nnz, "F": f, "framework": fw,
           "threads": 1 if fw == "scipy" else torch.get_num_threads()}
    try:
        t0 = time.perf_counter()
        y = as_tensor(fn(X))
        row["first_call_s"] = time.perf_counter() - t0
        if ref is not None:
            err = float((y - ref).abs().max())
            row["max_abs_diff"] = err
            row["verified"] = bool(torch.allclose(y, ref, rtol=1e-4, atol=1e-4))
            if not row["verified"]:                 # flaky or wrong? call it again a few times
                again = [float((as_tensor(fn(X)) - ref).abs().max()) for _ in range(3)]
                row["mismatch_again"] = again
                log(f"MISMATCH {fw} on {g.name} F={f}: max |diff| = {err:.3g}; 3 more calls: "
                    + ", ".join(f"{e:.3g}" for e in again))
        est = time_calls(lambda: fn(X), 2, warmup=1).median
        reps = max(args.min_reps, min(args.reps, int(args.budget / max(est, 1e-9))))
        mon = CpuMonitor()
        with sgnn.config(assert_cached=True):
            t = time_calls(lambda: fn(X), reps, warmup=3)
        if time.perf_counter() - mon.t0 < 1.0:     # /proc/stat counts 10 ms ticks: sample 0.5 s after
            mon.start()
            time.sleep(0.5)
        row["others_cores"] = mon.others()
    except Exception as e:                          # report, keep measuring the others
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc()
        log(f"ERROR {fw} on {g.name} F={f}:\n{row['traceback']}")
        return row, None
    s = t.summary()
    row.update(s)
    row["gflops"] = 2 * g.nnz * f / s["median_s"] / 1e9
    row["floor_fraction"] = spmm_floor_bytes(g.n, g.nnz, f) / bw / s["median_s"]
    return row, y


def bench_graph(g, args, bw):
    rows = []
    A, fns = prepare(g, args.frameworks)
    gen = torch.Generator().manual_seed(1234)
    for f in args.features:
        X = torch.randn(g.n, f, generator=gen)
        quiet(args)
        sg, ref = measure("sgnn", fns["sgnn"], X, None, args, g, f, bw)
        if ref is None and "torch.sparse.mm" in fns:   # sgnn failed: check the others against torch
            ref = as_tensor(fns["torch.sparse.mm"](X))
        rows.append(sg)
        for fw in args.frameworks[1:] if args.frameworks[0] == "sgnn" else args.frameworks:
            if fw == "sgnn":
                continue
            r, _ = measure(fw, fns[fw], X, ref, args, g, f, bw)
            if "median_s" in sg and "median_s" in r:
                r["sgnn_speedup"] = r["median_s"] / sg["median_s"]
            rows.append(r)
        done = [r for r in rows if r["F"] == f and "median_s" in r]
        log(f"{g.name} F={f}: " + ", ".join(f"{r['framework']} {1e3 * r['median_s']:.3f} ms" for r in done))
        del X, ref
    return rows


# --- latency ------------------------------------------------------------------------------------

def first_compile(g, f_list):
    """Wall time of the first einsum calls in a fresh cache directory (each one compiles a kernel)."""
    import sgnn
    out = []
    with tempfile.TemporaryDirectory(prefix="sgnn-bench-cache-") as d, sgnn.config(cache_dir=d):
        A = sgnn.SparseTensor.from_edge_index(g.edge_index, num_nodes=g.n, values=g.weight)
        for f in f_list:
            X = torch.randn(g.n, f)
            t0 = time.perf_counter()
            sgnn.einsum(SPEC, A, X)
            ms = 1e3 * (time.perf_counter() - t0)
            e = sgnn.explain(SPEC, A, X)
            out.append({"F": f, "ms": ms, "cache_key": e.cache_key, "cpp_lines": e.cpp_lines,
                        "tile": str(e.tile)})
    keys = set()
    for r in out:                                    # a kernel shared by two F compiles only once
        r["new_kernel"] = r["cache_key"] not in keys
        keys.add(r["cache_key"])
    return out


def new_process(g, threads, runs):
    """First SpMM of a fresh Python process after ``import sgnn``: once with an empty cache (compiles),
    then ``runs`` times with that now-warm disk cache and SGNN_ASSERT_CACHED=1."""
    import sgnn
    A = sgnn.SparseTensor.from_edge_index(g.edge_index, num_nodes=g.n, values=g.weight)
    x = torch.randn(g.n, 16, generator=torch.Generator().manual_seed(7))
    y = sgnn.einsum(SPEC, A, x)
    with tempfile.TemporaryDirectory(prefix="sgnn-bench-proc-") as d:
        data = Path(d) / "inputs.pt"
        torch.save({"edge_index": g.edge_index, "weight": g.weight, "n": g.n, "x": x, "y": y}, data)
        env = {**os.environ, "SGNN_CACHE_DIR": str(Path(d) / "cache"), "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        env.pop("SGNN_ASSERT_CACHED", None)

        def child(assert_cached):
            e = {**env, **({"SGNN_ASSERT_CACHED": "1"} if assert_cached else {})}
            p = subprocess.run([sys.executable, "-c", CHILD, str(data), str(threads)], env=e, cwd=str(REPO),
                               capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                raise RuntimeError(f"child exited {p.returncode}:\n{p.stderr[-4000:]}")
            return json.loads(p.stdout.strip().splitlines()[-1])

        cold = child(False)
        warm = [child(True) for _ in range(runs)]
    ms = sorted(w["first_spmm_ms"] for w in warm)
    return {"cold_first_spmm_ms": cold["first_spmm_ms"], "warm_first_spmm_ms": ms,
            "warm_median_ms": ms[len(ms) // 2], "import_ms": sorted(w["import_ms"] for w in warm),
            "max_abs_diff": max(w["max_abs_diff"] for w in warm + [cold])}


def warm_call(g, calls):
    """Median µs of in-process einsum calls at F=16 (plan memoised, kernel loaded), torch for scale."""
    import sgnn
    A = sgnn.SparseTensor.from_edge_index(g.edge_index, num_nodes=g.n, values=g.weight)
    X = torch.randn(g.n, 16)
    sgnn.einsum(SPEC, A, X)
    with sgnn.config(assert_cached=True):
        t = time_calls(lambda: sgnn.einsum(SPEC, A, X), calls, warmup=50)
    T = A.to_torch()
    tt = time_calls(lambda: torch.sparse.mm(T, X), calls, warmup=50)
    return {"calls": calls, "sgnn_median_us": 1e6 * t.median, "sgnn_p10_us": 1e6 * t.quantile(0.1),
            "sgnn_p90_us": 1e6 * t.quantile(0.9), "torch_median_us": 1e6 * tt.median}


# --- report -------------------------------------------------------------------------------------

def table(rows, bw):
    cols = ["graph", "n", "nnz", "F", "framework", "thr", "median ms", "p10–p90 ms", "GFLOP/s",
            "% floor", "sgnn speedup", "check", "others"]
    out = []
    for r in rows:
        if "median_s" not in r:
            out.append([r["graph"], r["n"], r["nnz"], r["F"], r["framework"], r["threads"],
                        "ERROR", r.get("error", "")[:60], "", "", "", "", ""])
            continue
        check = "ref" if r["framework"] == "sgnn" else ("ok" if r.get("verified") else "MISMATCH")
        out.append([r["graph"], f"{r['n']:,}", f"{r['nnz']:,}", r["F"], r["framework"], r["threads"],
                    f"{1e3 * r['median_s']:.3f}", f"{1e3 * r['p10_s']:.3f}–{1e3 * r['p90_s']:.3f}",
                    f"{r['gflops']:.2f}", f"{100 * r['floor_fraction']:.1f}%",
                    f"{r['sgnn_speedup']:.2f}×" if "sgnn_speedup" in r else "—", check,
                    f"{r['others_cores']:.2f}"])
    print_table(f"SpMM Y = A·X, float32, GCN-normalised A; memory floor over copy bandwidth "
                f"{bw / 1e9:.1f} GB/s; sgnn speedup = framework time / sgnn time; others = cores used "
                f"by other processes while timing (timings under 1 s: in the 0.5 s after)",
                cols, out, right={"n", "nnz", "F", "thr", "median ms", "p10–p90 ms", "GFLOP/s", "% floor",
                                  "sgnn speedup", "others"})


def targets(rows, compile_ms, proc, warm):
    """(ok, line) per target, ratios from this run."""
    res = []
    by = {(r["graph"], r["F"]): r for r in rows if r["framework"] == "torch.sparse.mm"}
    for (gname, f), r in sorted(by.items(), key=lambda kv: (list(TARGETS).index(kv[0][0])
                                                              if kv[0][0] in TARGETS else 9, kv[0][1])):
        need = TARGETS.get(gname.replace("-syn", ""))
        if need is None or (gname == "arxiv" and f < ARXIV_MIN_F):
            continue
        s = r.get("sgnn_speedup")
        ok = s is not None and s >= need
        shown = f"{s:.2f}×" if s is not None else "n/a (error)"
        res.append((ok, f"sgnn vs torch.sparse.mm on {gname}-sized graph, F={f}: {shown} "
                        f"(target ≥ {need}×)"))
    if compile_ms is not None:
        res.append((compile_ms < 1e3 * FIRST_COMPILE_S,
                    f"first compile of a new kernel: {compile_ms:.0f} ms "
                    f"(target < {1e3 * FIRST_COMPILE_S:.0f} ms)"))
    if proc is not None:
        res.append((proc["warm_median_ms"] < NEW_PROCESS_MS,
                    f"new process, warm disk cache, first SpMM after import: {proc['warm_median_ms']:.1f} ms "
                    f"(median of {len(proc['warm_first_spmm_ms'])}; target < {NEW_PROCESS_MS:.0f} ms)"))
    if warm is not None:
        res.append((warm["sgnn_median_us"] < WARM_CALL_US,
                    f"warm in-process call, Cora size F=16: {warm['sgnn_median_us']:.1f} µs "
                    f"(median of {warm['calls']}; target < {WARM_CALL_US:.0f} µs)"))
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)                        # before dgl and sgnn start their OpenMP runtimes
    import sgnn
    if "dgl" in args.frameworks:
        import dgl  # noqa: F401
    set_threads(args.threads)
    info = machine_info()
    log(f"threads={torch.get_num_threads()} graphs={args.graphs} F={args.features} reps={args.reps}")

    quiet(args)
    mon = CpuMonitor()
    bwinfo = copy_bandwidth(256, reps=5 if args.quick else 15)
    bwinfo["others_cores"] = mon.others()
    bw = bwinfo["bytes_per_s"]
    log(f"copy bandwidth (read+write, {args.threads} threads): {bwinfo['gb_per_s']:.2f} GB/s")

    graphs = {}
    for name in dict.fromkeys(["cora"] + args.graphs):  # Cora size is needed for the latency numbers
        t0 = time.perf_counter()
        graphs[name] = make_graph(name)
        log(f"graph {graphs[name].label}: n={graphs[name].n:,} nnz={graphs[name].nnz:,} "
            f"({time.perf_counter() - t0:.1f} s)")
    cora = graphs["cora"]

    errors = {}
    compiles = None
    try:                                              # first: nothing compiled in this process yet
        quiet(args)
        mon = CpuMonitor()
        compiles = first_compile(cora, [16, 64])
        compiles[0]["others_cores"] = mon.others()
    except Exception:
        errors["first_compile"] = traceback.format_exc()
        log(f"ERROR first compile:\n{errors['first_compile']}")

    rows = []
    for name in args.graphs:
        rows += bench_graph(graphs[name], args, bw)

    warm = proc = None
    try:
        quiet(args)
        mon = CpuMonitor()
        warm = warm_call(cora, 200 if args.quick else 1000)
        warm["others_cores"] = mon.others()
    except Exception:
        errors["warm_call"] = traceback.format_exc()
        log(f"ERROR warm call:\n{errors['warm_call']}")
    try:
        quiet(args)
        mon = CpuMonitor()
        proc = new_process(cora, args.threads, 2 if args.quick else 5)
        proc["others_cores"] = mon.others()
    except Exception:
        errors["new_process"] = traceback.format_exc()
        log(f"ERROR new process:\n{errors['new_process']}")

    print(f"machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']}; sgnn {sgnn.__version__}; "
          f"{args.threads} threads for torch/DGL/sgnn, scipy single-threaded")
    print(f"copy bandwidth: {bwinfo['gb_per_s']:.2f} GB/s (median of {bwinfo['reps']} dst.copy_(src), "
          f"256 MiB float32, read+write bytes; best {bwinfo['best_gb_per_s']:.2f})")
    for g in graphs.values():
        extra = ", ".join(f"{k}={v}" for k, v in g.info.items() if k in ("edges_no_loops", "max_degree"))
        print(f"graph {g.name}: {g.label}; n={g.n:,}, nnz={g.nnz:,} (with self loops; {extra})")
    print()
    table(rows, bw)
    print()
    if compiles:
        for c in compiles:
            print(f"first compile, fresh cache dir, Cora size F={c['F']}: {c['ms']:.0f} ms "
                  f"({'new kernel' if c['new_kernel'] else 'same kernel as before'}, "
                  f"{c['cpp_lines']} C++ lines, "
                  f"tile {c['tile']})")
    if proc:
        print(f"new process, empty cache (compiles), first SpMM after import: "
              f"{proc['cold_first_spmm_ms']:.0f} ms")
        print(f"new process, warm disk cache, first SpMM after import: "
              f"{', '.join(f'{m:.1f}' for m in proc['warm_first_spmm_ms'])} ms "
              f"(import torch + sgnn: median {proc['import_ms'][len(proc['import_ms']) // 2]:.0f} ms, "
              f"not counted)")
    if warm:
        print(f"warm in-process call, Cora size F=16: sgnn median {warm['sgnn_median_us']:.1f} µs "
              f"(p10 {warm['sgnn_p10_us']:.1f}, p90 {warm['sgnn_p90_us']:.1f}); torch.sparse.mm "
              f"{warm['torch_median_us']:.1f} µs")
    print()
    first_ms = compiles[0]["ms"] if compiles else None
    res = targets(rows, first_ms, proc, warm)
    for ok, line in res:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    for k in errors:
        print(f"FAIL  {k}: error (traceback above)")
    loads = [r["others_cores"] for r in rows if "others_cores" in r] + \
        [x["others_cores"] for x in (bwinfo, warm, proc, (compiles or [{}])[0]) if x and "others_cores" in x]
    if loads:
        busy = max(loads)
        print(f"{'WARNING' if busy >= 0.2 else 'note'}: other processes used up to {busy:.2f} cores during "
              f"timed sections (mean {sum(loads) / len(loads):.2f})" +
              ("; timings with a high 'others' value are unreliable" if busy >= 0.2 else ""))
    mism = [r for r in rows if r.get("verified") is False or "error" in r]
    if mism:
        print(f"note: {len(mism)} measurement(s) failed verification or raised; see 'check' column")

    if args.json:
        write_json({"argv": sys.argv, "machine": info, "bandwidth": bwinfo,
                    "graphs": {k: {"label": g.label, "n": g.n, "nnz": g.nnz, **g.info}
                               for k, g in graphs.items()},
                    "rows": rows, "first_compile": compiles, "new_process": proc, "warm_call": warm,
                    "targets": [{"pass": ok, "what": line} for ok, line in res], "errors": errors}, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
