"""``python run.py bench=spmm``: Y = A X in sgnn vs torch.sparse.mm (CSR), DGL's u_mul_e_sum and scipy.

A is the GCN-normalised adjacency D^-1/2 (A + I) D^-1/2 of each ``bench.datasets`` graph (loaded by the
harness: the same graph for the same seed in every entry), shared where a framework can share sgnn's
int32 CSR; X is n x F float32 for each ``bench.features``. Every output is checked against sgnn's before
it is timed; timed sgnn calls run under ``sgnn.config(assert_cached=True)``. scipy runs on one thread.
Reduced precision (``bench.narrow``): on its graphs and F, sgnn alone also runs A and X in bfloat16 /
float16 (no peer has a narrow CSR SpMM on CPU), checked against sgnn float32 on the same rounded inputs
(max |y - ref| / max |ref| <= ``bench.narrow.tolerance``), with its speed ratio to sgnn float32.

Per (graph, F, dtype, framework): median and p10-p90 ms, GFLOP/s (2 nnz F / t), bytes (gathered rows +
streamed CSR + Y), achieved GB/s, its fraction of the gather roofline (the best run of the best read-only
gather-and-sum probe on the graph's own CSR pattern at that F and dtype, measured per (graph, F, dtype);
for the median and, like for like, for the best run) and of the
copy (stream) bandwidth, the memory floor over the copy bandwidth; byte formulas and probes in
roofline.py; sgnn's speedup, other processes' load. An SpMM whose best run is above 100% of the roofline
is flagged (``PROBE UNDERSTATES``, and a failed target): the probe, not the kernel, is then wrong. Then the latencies (spmm_latency.py) on the first graph, and PASS/FAIL against ``bench.targets``.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from . import cases
from .machine import Quiet, copy_bandwidth, header_lines, log, machine_info
from .models import gcn_edge_weights
from .report import load_note, print_grid, print_targets, stdout, versions, write_results
from .roofline import SHORT, dtype_of, fractions, gather_bandwidth
from .spmm_latency import SPEC, first_compile, new_process, warm_call
from .spmm_latency import lines as latency_lines
from .timing import adaptive_repetitions, time_calls

FRAMEWORKS = ("sgnn", "torch.sparse.mm", "dgl", "scipy")


@dataclass
class Operator:
    """The GCN-normalised adjacency of a graph: edges with self loops (row 0 source, row 1 target)."""

    name: str
    label: str
    n: int
    edge_index: torch.Tensor
    weight: torch.Tensor

    @property
    def nnz(self) -> int:
        return int(self.edge_index.size(1))

    def pattern(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A's int32 CSR pattern (pos, crd): rows are targets, crd the sources gathered."""
        import sgnn
        A = sgnn.SparseTensor.from_edge_index(self.edge_index, num_nodes=self.n, values=self.weight)
        return A.pos[1], A.crd[1]


def operator(graph) -> Operator:
    d = graph.data
    src, dst, w = gcn_edge_weights(d.edge_index, d.num_nodes)
    return Operator(graph.name, graph.label, int(d.num_nodes), torch.stack([src, dst]), w.contiguous())


def prepare(op: Operator, frameworks) -> dict:
    """Per framework, X -> A X on the same matrix A[target, source]."""
    import sgnn
    A = sgnn.SparseTensor.from_edge_index(op.edge_index, num_nodes=op.n, values=op.weight)
    fns = {"sgnn": lambda X: sgnn.einsum(SPEC, A, X)}
    if "torch.sparse.mm" in frameworks:
        T = A.to_torch()                            # shares sgnn's int32 pos/crd and values
        fns["torch.sparse.mm"] = lambda X: torch.sparse.mm(T, X)
    if "dgl" in frameworks:
        import dgl
        g = dgl.graph((op.edge_index[0], op.edge_index[1]), num_nodes=op.n)
        g.create_formats_()
        w = op.weight.view(-1, 1)                   # messages flow src -> dst: out[dst] = sum w * X[src]
        fns["dgl"] = lambda X: dgl.ops.u_mul_e_sum(g, X, w)
    if "scipy" in frameworks:
        S = A.to_scipy()                            # csr_matrix over the same arrays
        fns["scipy"] = lambda X: S @ X.numpy()
    return fns


def _tensor(y) -> torch.Tensor:
    return y if isinstance(y, torch.Tensor) else torch.from_numpy(y)


def _verify(fw: str, fn, X, y, ref, tol: float | None = None) -> dict:
    """float32: allclose(rtol=atol=1e-4); narrow (``tol``): max |y - ref| / max |ref| <= tol."""
    err = float((y.float() - ref).abs().max())
    if tol is None:
        out = {"max_abs_diff": err, "verified": bool(torch.allclose(y, ref, rtol=1e-4, atol=1e-4))}
    else:
        rel = err / max(float(ref.abs().max()), 1e-30)
        out = {"max_abs_diff": err, "rel_error": rel, "tolerance": tol, "verified": rel <= tol}
    if not out["verified"]:                         # flaky or wrong? call it again a few times
        out["mismatch_again"] = [float((_tensor(fn(X)).float() - ref).abs().max()) for _ in range(3)]
        log(f"MISMATCH {fw}: max |diff| = {err:.3g}; 3 more calls: {out['mismatch_again']}")
    return out


def measure(fw: str, fn, X, ref, b, quiet: Quiet,
            tol: float | None = None) -> tuple[dict, torch.Tensor | None]:
    """Check ``fn(X)`` against ``ref``, then time it; (row, output), the row says 'error' on failure."""
    import sgnn
    row = {"framework": fw, "threads": 1 if fw == "scipy" else torch.get_num_threads()}
    try:
        t0 = time.perf_counter()
        y = _tensor(fn(X))
        row["first_call_s"] = time.perf_counter() - t0
        if ref is not None:
            row.update(_verify(fw, fn, X, y, ref, tol))
        reps, _ = adaptive_repetitions(lambda: fn(X), int(b.repetitions), int(b.min_repetitions),
                                       float(b.budget_s))

        def block():
            with sgnn.config(assert_cached=True):
                return time_calls(lambda: fn(X), reps, int(b.warmup))
        t, load = quiet.timed(block)
    except Exception as e:                          # report, keep measuring the others
        row.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        log(f"ERROR {fw}:\n{row['traceback']}")
        return row, None
    return {**row, **t.asdict(), **load}, y


def bench_graph(op: Operator, b, quiet: Quiet, copy_bw: float) -> tuple[list[dict], list[dict]]:
    """Rows of every (F, dtype, framework) on one graph, and the gather roofline per (F, dtype)."""
    fns, rows, roofs = prepare(op, list(b.frameworks)), [], []
    gen, pattern = torch.Generator().manual_seed(1234), op.pattern()
    for f in b.features:
        f = int(f)
        X = torch.randn(op.n, f, generator=gen)
        roof = roofline(op, pattern, f, torch.float32, b, quiet)
        sg, ref = measure("sgnn", fns["sgnn"], X, None, b, quiet)
        if ref is None and "torch.sparse.mm" in fns:    # sgnn failed: check the others against torch
            ref = _tensor(fns["torch.sparse.mm"](X))
        done = [sg] + [measure(fw, fns[fw], X, ref, b, quiet)[0] for fw in b.frameworks if fw != "sgnn"]
        for r in done:
            r.update(dataset=op.name, label=op.label, n=op.n, nnz=op.nnz, F=f, dtype="fp32")
            _derived(r, sg, copy_bw, roof)
        narrow, nroofs = bench_narrow(op, pattern, f, X, sg, b, quiet, copy_bw)
        rows, roofs = rows + done + narrow, roofs + [roof] + nroofs
        log(f"{op.name} F={f}: " + ", ".join(f"{r['framework']} {r['dtype']} {r['median_ms']:.3f} ms"
                                            for r in done + narrow if "median_ms" in r))
    return rows, roofs


def roofline(op: Operator, pattern, f: int, dtype: torch.dtype, b, quiet: Quiet) -> dict:
    """The gather roofline of (graph, F, dtype) on the graph's CSR ``pattern``, with the other
    processes' load while it ran."""
    pos, crd = pattern
    roof, load = quiet.timed(lambda: gather_bandwidth(pos, crd, f, dtype, int(b.gather_reps),
                                                      list(b.gather_probes), list(b.gather_ahead)))
    return {"dataset": op.name, **roof, **load}


def bench_narrow(op: Operator, pattern, f: int, X, sg: dict, b, quiet: Quiet, copy_bw: float):
    """sgnn in each ``bench.narrow.dtypes`` on this (graph, F) when ``bench.narrow`` lists them."""
    import sgnn
    nb = b.get("narrow")
    if not nb or op.name not in list(nb.datasets) or f not in [int(v) for v in nb.features]:
        return [], []
    rows, roofs = [], []
    for name in nb.dtypes:
        dt = dtype_of(name)
        A = sgnn.SparseTensor.from_edge_index(op.edge_index, num_nodes=op.n, values=op.weight.to(dt))
        Xn = X.to(dt)
        ref = sgnn.einsum(SPEC, A.with_values(A.values.float()), Xn.float())   # float32, same inputs
        roof = roofline(op, pattern, f, dt, b, quiet)
        r, _ = measure("sgnn", lambda x, A=A: sgnn.einsum(SPEC, A, x), Xn, ref, b, quiet,
                       tol=float(nb.tolerance[SHORT[dt]]))
        r.update(dataset=op.name, label=op.label, n=op.n, nnz=op.nnz, F=f, dtype=SHORT[dt])
        _derived(r, sg, copy_bw, roof)
        if "median_ms" in r and "median_ms" in sg:
            r["vs_fp32"] = sg["median_ms"] / r["median_ms"]
        rows.append(r)
        roofs.append(roof)
    return rows, roofs


def _derived(r: dict, sg: dict, copy_bw: float, roof: dict) -> None:
    if "median_ms" not in r:
        return
    dt = dtype_of(r["dtype"])
    args = r["n"], r["nnz"], r["F"], dt, copy_bw, roof["bytes_per_s"]
    r.update(fractions(r["median_ms"] / 1e3, *args))
    best = fractions(r["min_ms"] / 1e3, *args)     # like for like: best run against the probe's best run
    r.update(roofline_fraction_best=best["roofline_fraction"], probe_understates=best["probe_understates"])
    if r is not sg and "median_ms" in sg and r["framework"] != "sgnn":
        r["sgnn_speedup"] = r["median_ms"] / sg["median_ms"]


def latencies(op: Operator, cfg, quiet: Quiet, errors: dict, stage: str) -> dict:
    """``stage`` 'compile' (before anything else compiled) or 'after' (warm call, new process)."""
    b, out = cfg.bench, {}
    steps = {"compile": {"first_compile": lambda: first_compile(op, [16, 64])},
             "after": {"warm_call": lambda: warm_call(op, int(b.warm_calls)),
                       "new_process": lambda: new_process(op, int(cfg.threads), int(b.new_process_runs))}}
    for key, fn in steps[stage].items():
        try:
            value, load = quiet.timed(fn, retries=0)
            out[key] = value
            out[f"{key}_load"] = load
        except Exception:
            errors[key] = traceback.format_exc()
            log(f"ERROR {key}:\n{errors[key]}")
    return out


def targets(rows: list[dict], lat: dict, t) -> list[dict]:
    """PASS/FAIL of every target of ``bench.targets`` that this run measured."""
    res = []
    for r in rows:
        need = t.speedup_vs_torch.get(r["dataset"])
        if r["framework"] != "torch.sparse.mm" or need is None or \
                (r["dataset"] == "arxiv" and r["F"] < int(t.arxiv_min_features)):
            continue
        s = r.get("sgnn_speedup")
        res.append({"pass": s is not None and s >= need,
                    "what": f"sgnn vs torch.sparse.mm on {r['dataset']}, F={r['F']}: "
                            f"{f'{s:.2f}×' if s is not None else 'n/a (error)'} (target ≥ {need}×)"})
    res += narrow_targets(rows, t)
    over = [r for r in rows if r.get("probe_understates")]
    if over:
        worst = max(over, key=lambda r: r["roofline_fraction_best"])
        res.append({"pass": False, "what": f"PROBE UNDERSTATES: {len(over)} SpMM(s) ran above their roofline, "
                    f"worst {worst['framework']} {worst['dtype']} on {worst['dataset']}, F={worst['F']}: best "
                    f"run at {100 * worst['roofline_fraction_best']:.0f}% (a roofline fraction must be <= 100%)"})
    if lat.get("first_compile"):
        ms = lat["first_compile"][0]["ms"]
        res.append({"pass": ms < float(t.first_compile_ms),
                    "what": f"first compile of a new kernel: {ms:.0f} ms (target < {t.first_compile_ms} ms)"})
    if lat.get("new_process"):
        p = lat["new_process"]
        res.append({"pass": p["warm_median_ms"] < float(t.new_process_ms),
                    "what": f"new process, warm disk cache, first SpMM after import: "
                            f"{p['warm_median_ms']:.1f} ms (median of {len(p['warm_first_spmm_ms'])}; "
                            f"target < {t.new_process_ms} ms)"})
    if lat.get("warm_call"):
        w = lat["warm_call"]
        res.append({"pass": w["sgnn_median_us"] < float(t.warm_call_us),
                    "what": f"warm in-process call, F=16: {w['sgnn_median_us']:.1f} µs (median of "
                            f"{w['calls']}; target < {t.warm_call_us} µs)"})
    return res


def narrow_targets(rows: list[dict], t) -> list[dict]:
    """Reduced precision: sgnn narrow vs sgnn float32 (``t.narrow_vs_fp32`` per dtype) and every sgnn
    SpMM of the narrow cases (all dtypes) at >= ``t.roofline_fraction`` of its gather roofline."""
    res, need_roof = [], t.get("roofline_fraction")
    cases = {(r["dataset"], r["F"]) for r in rows if r["dtype"] != "fp32"}
    for r in rows:
        if r["framework"] != "sgnn" or (r["dataset"], r["F"]) not in cases:
            continue
        what = f"sgnn {r['dtype']} SpMM on {r['dataset']}, F={r['F']}"
        need = (t.get("narrow_vs_fp32") or {}).get(r["dtype"])
        if need is not None:
            v = r.get("vs_fp32")
            res.append({"pass": v is not None and v >= need,
                        "what": f"{what} vs sgnn fp32: {f'{v:.2f}×' if v is not None else 'n/a (error)'} "
                                f"(target ≥ {need}×)"})
        if need_roof is not None:
            v = r.get("roofline_fraction")
            res.append({"pass": v is not None and v >= need_roof,
                        "what": f"{what}: {f'{100 * v:.0f}%' if v is not None else 'n/a (error)'} of the "
                                f"gather roofline (target ≥ {100 * need_roof:.0f}%)"})
    return res


def run(cfg, out_dir) -> dict:
    """The SpMM benchmark; writes results.json / results.csv to ``out_dir`` and returns the results."""
    import sgnn
    b, quiet = cfg.bench, Quiet(cfg.quiet)
    bad = [f for f in b.frameworks if f not in FRAMEWORKS]
    if bad or "sgnn" not in b.frameworks:
        raise ValueError(f"bench.frameworks: expected sgnn plus some of {FRAMEWORKS} "
                         f"(got {list(b.frameworks)})")
    info = {**machine_info(), "sgnn": sgnn.__version__}
    bw, load = quiet.timed(lambda: copy_bandwidth(int(b.bandwidth_mib), int(b.bandwidth_reps)))
    bw.update(load)
    log(f"copy bandwidth (read+write, {cfg.threads} threads): {bw['gb_per_s']:.2f} GB/s")
    rows, roofs, graphs, lat, errors, first = [], [], {}, {}, {}, None
    for _, g in cases.graphs(cfg, b.datasets):
        op = operator(g)
        graphs[g.name] = {**cases.graph_info(g), "nnz_with_self_loops": op.nnz}
        if first is None and b.latency:
            first, lat = op, latencies(op, cfg, quiet, errors, "compile")
        r, roof = bench_graph(op, b, quiet, bw["bytes_per_s"])
        rows, roofs = rows + r, roofs + roof
    if first is not None:
        lat.update(latencies(first, cfg, quiet, errors, "after"))
    res = targets(rows, lat, b.targets)
    results = {"bench": "spmm", "machine": info, "versions": versions(), "config": OmegaConf.to_container(b),
               "bandwidth": bw, "graphs": graphs, "gather_roofline": roofs, "rows": rows, "latency": lat,
               "latency_graph": first.label if first else None, "targets": res, "errors": errors}
    report(results)
    write_results(out_dir, results)
    return results


def report(res: dict) -> None:
    """Header, the SpMM table, the roofline table, latencies, targets."""
    info, bw = res["machine"], res["bandwidth"]
    head = header_lines(info) + [
        f"torch {info['torch']}, sgnn {info['sgnn']}; {info['threads']} threads for torch/DGL/sgnn, scipy 1",
        (f"copy bandwidth: {bw['gb_per_s']:.2f} GB/s (median of {bw['reps']} dst.copy_(src), {bw['mib']} MiB "
         f"float32, read+write bytes; best {bw['best_gb_per_s']:.2f})")]
    head += [f"graph {k}: {g['label']}; n={g['nodes']:,}, nnz={g['nnz_with_self_loops']:,} (with self loops)"
             for k, g in res["graphs"].items()]
    print_grid("SpMM Y = A·X, GCN-normalised A (values and X in the row's dtype); MB: gathered rows + "
               "streamed CSR (pos, crd, values) + Y; GB/s: MB over the median time; % roof: of the gather "
               "roofline of that graph, F and dtype (table below: the probes' best run); % roof best: this "
               "SpMM's best run against it (above 100% is flagged '!': the probe understates); % stream: of the copy bandwidth; % floor: memory floor over copy bandwidth; "
               "sgnn speedup = framework time / sgnn fp32 time; vs fp32 = sgnn fp32 time / this time; "
               "others = cores used by other processes",
               COLUMNS, [_cells(r) for r in res["rows"]], caption=head, right=set(COLUMNS) - LEFT)
    cols = ["dataset", "n", "nnz", "F", "dtype", "GB/s (best)", "GB/s (median)", "best probe", "candidates "
            "(best GB/s)", "runs", "others"]
    print_grid("Gather roofline (the best run of the best candidate is the roofline): read-only gather of "
               "the rows the graph's CSR names, summed per output row, Y written once; bytes = nnz·F·e + "
               "4(n+1) + 4·nnz + n·F·e (e: element size); probe: C++ / OpenMP / AVX-512 (gather_probe.py) "
               "at several prefetch distances, embedding_bag: torch's mode='sum'", cols,
               [[g["dataset"], f"{g['n']:,}", f"{g['nnz']:,}", g["F"], g["dtype"], f"{g['best_gb_per_s']:.2f}",
                 f"{g['median_gb_per_s']:.2f}", g["best_probe"],
                 ", ".join(f"{k.replace('probe ahead=', 'a')} {v['best_gb_per_s']:.1f}"
                           for k, v in g["candidates"].items()), g["reps"], f"{g['others_cores']:.2f}"]
                for g in res["gather_roofline"]], caption=header_lines(info), right={"n", "nnz", "F",
                "GB/s (best)", "GB/s (median)", "runs", "others"})
    over = [r for r in res["rows"] if r.get("probe_understates")]
    if over:
        stdout.print(f"PROBE UNDERSTATES: {len(over)} SpMM(s) ran above their gather roofline (marked '!'): "
                     "the roofline is not the best this machine reaches; do not read those fractions as "
                     "efficiencies", highlight=False)
    lat = res["latency"]
    for line in latency_lines(lat.get("first_compile"), lat.get("new_process"), lat.get("warm_call"),
                              res["latency_graph"] or ""):
        stdout.print(line, highlight=False)
    errors = [{"pass": False, "what": f"{k}: error (traceback above)"} for k in res["errors"]]
    print_targets(res["targets"] + errors)
    note = load_note(res["rows"])
    if note:
        stdout.print(note, highlight=False)


COLUMNS = ["dataset", "n", "nnz", "F", "dtype", "framework", "thr", "median ms", "p10–p90 ms", "GFLOP/s",
           "MB", "GB/s", "% roof", "% roof best", "% stream", "% floor", "sgnn speedup", "vs fp32", "check", "others"]
LEFT = {"dataset", "dtype", "framework", "check"}


def _cells(r: dict) -> list:
    head = [r["dataset"], f"{r['n']:,}", f"{r['nnz']:,}", r["F"], r["dtype"], r["framework"], r["threads"]]
    if "median_ms" not in r:
        return head + ["ERROR", r.get("error", "")[:60]] + [""] * (len(COLUMNS) - len(head) - 2)
    check = "ref" if "verified" not in r else ("ok" if r["verified"] else "MISMATCH")
    speedup = f"{r['sgnn_speedup']:.2f}×" if "sgnn_speedup" in r else "—"
    vs32 = f"{r['vs_fp32']:.2f}×" if "vs_fp32" in r else "—"
    flag = " !" if r["probe_understates"] else ""
    roof, roof_best = (f"{100 * r[k]:.1f}%{flag}" for k in ("roofline_fraction", "roofline_fraction_best"))
    return head + [f"{r['median_ms']:.3f}", f"{r['p10_ms']:.3f}–{r['p90_ms']:.3f}", f"{r['gflops']:.2f}",
                   f"{r['roofline_bytes'] / 1e6:.1f}", f"{r['achieved_gb_per_s']:.2f}", roof, roof_best,
                   f"{100 * r['stream_fraction']:.1f}%", f"{100 * r['floor_fraction']:.1f}%", speedup,
                   vs32, check, f"{r['others_cores']:.2f}"]
