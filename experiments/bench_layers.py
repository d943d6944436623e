"""GNN layers and 2-layer models: sgnn against PyG, DGL and plain PyTorch, on CPU, same weights.

    .venv/bin/python experiments/bench_layers.py                  # full run (several minutes)
    .venv/bin/python experiments/bench_layers.py --quick          # smoke test: Cora only, few reps
    .venv/bin/python experiments/bench_layers.py --graphs cora,arxiv --models gcn2,gat2 --json out.json

Cases: the single layers GCNConv, SAGEConv (mean) and GATConv (8 heads, concatenated) and the 2-layer
models GCN (conv-relu-conv), SAGE (conv-relu-conv) and GAT (GATConv(in, hidden/8, heads=8)-elu-
GATConv(hidden, classes, heads=1)); hidden 16 on the Planetoid graphs (GAT 8 heads x 8) and 256 on
the arXiv-sized one (GAT 8 heads x 32). The reference is the PyG model (seeded init, biases set to
small random values so that bias mapping is checked too); the other frameworks get its weights through
the harness's twins (sgnn.harness.models: TorchNet, DglNet, from_pyg):

  pyg         torch_geometric 2.8.1 layers, defaults (GCNConv cached=False: gcn_norm on every call)
  pyg-cached  GCN only: PyG GCNConv(cached=True), the normalised graph kept after the first call
  pytorch     plain torch, PyG's op order: GCN torch.sparse.mm(Â, X·W) on a precomputed normalised CSR;
              SAGE mean via a row-normalised CSR; GAT index_select over edges, leaky_relu, scatter
              softmax (scatter_reduce amax, exp, index_add), index_add aggregation (E x H x C tensor)
  dgl         dgl 1.1.3 GraphConv(norm="both") / SAGEConv("mean") / GATConv (graph built once)
  sgnn        sgnn.layers via from_pyg; graph structures cached per edge_index tensor

Every framework's output is checked against PyG's (allclose, max |error| reported) before it is
timed. All frameworks run in this one process with the same thread count, under
torch.inference_mode() (if sgnn raises there, it is retried under torch.no_grad() and the table says
so); timed sgnn calls run under sgnn.config(assert_cached=True). Before each timed block the script
waits (bounded) for other processes to go quiet and reports their load next to the row.

Peak memory: the growth of this process's resident set (RSS) during the timed calls, i.e. the
transient working memory of a forward pass (intermediates and output). Method: glibc malloc_trim(0)
so freed heap pages leave RSS, then the kernel's high-water mark VmHWM is reset through
/proc/self/clear_refs and read back after the calls (exact, no sampling, no overhead); where that
reset is not allowed, a background thread samples VmRSS every 2 ms. torch has no allocator statistics
on CPU and tracemalloc does not see its allocations. State built before timing (sgnn's graph cache,
DGL's graph formats, the PyTorch CSR, PyG's cached normalisation, weights) is not in the peak; the
RSS growth of building a framework and running its first call is reported as "setup".
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))          # run from a checkout without install

import torch  # noqa: E402

from common import (CpuMonitor, PeakRss, coalesce, data_root, machine_info, power_law_edges,  # noqa: E402
                    print_table, release_memory, rss_bytes, set_threads, symmetrise, time_calls,
                    wait_until_quiet, write_json)

GRAPH_NAMES = ("cora", "citeseer", "pubmed", "arxiv")
MODELS = ("gcn", "sage", "gat", "gcn2", "sage2", "gat2")
MODEL_LABEL = {"gcn": "GCNConv layer", "sage": "SAGEConv layer", "gat": "GATConv layer",
               "gcn2": "GCN 2-layer", "sage2": "SAGE 2-layer", "gat2": "GAT 2-layer"}
FRAMEWORKS = ("pyg", "pyg-cached", "pytorch", "dgl", "sgnn")
BASELINES = ("pyg", "pyg-cached", "pytorch", "dgl")
GAT_HEADS = 8
# Targets (2-layer models): sgnn speedup over the fastest baseline for GCN/SAGE, over PyG and DGL for GAT.
GCN_SAGE_TARGET = {"cora": 3.0, "citeseer": 3.0, "pubmed": 3.0, "arxiv": 2.0}
GAT_VS_PYG, GAT_VS_DGL = 3.0, 1.5
RETRY_LOAD = 0.3          # cores used by other processes above which a timed block is measured again


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: Cora only, 5 reps")
    ap.add_argument("--graphs", default=None, help=f"comma list of {', '.join(GRAPH_NAMES)} (default: all)")
    ap.add_argument("--models", default=None, help=f"comma list of {', '.join(MODELS)} (default: all; "
                                                   "gcn/sage/gat = one layer, gcn2/sage2/gat2 = 2-layer model)")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma list (default: all)")
    ap.add_argument("--reps", type=int, default=None, help="timed calls per measurement (default 50; "
                                                           "fewer when slow, but at least 30 unless --quick)")
    ap.add_argument("--budget", type=float, default=15.0,
                    help="seconds per measurement above which reps drop toward 30 (default 15)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every framework (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="weights and features seed (default 0)")
    ap.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    ap.add_argument("--wait-quiet", type=float, default=120.0,
                    help="before each timed block, wait up to this many seconds for other processes to go "
                         "below 0.2 cores (default 120; 0: only measure their load)")
    ap.add_argument("--wait-budget", type=float, default=1800.0,
                    help="total seconds of such waiting for the whole run; then only measure (default 1800)")
    ap.add_argument("--retries", type=int, default=2,
                    help=f"re-measure up to this many times when other processes used more than {RETRY_LOAD} "
                         "cores during a timed block, keeping the quietest (default 2)")
    a = ap.parse_args(argv)
    a.graphs = (a.graphs or ("cora" if a.quick else ",".join(GRAPH_NAMES))).split(",")
    a.models = (a.models or ",".join(MODELS)).split(",")
    a.frameworks = [f for f in a.frameworks.split(",") if f]
    for what, got, allowed in (("--graphs", a.graphs, GRAPH_NAMES), ("--models", a.models, MODELS),
                               ("--frameworks", a.frameworks, FRAMEWORKS)):
        bad = [x for x in got if x not in allowed]
        if bad:
            ap.error(f"{what}: expected some of {', '.join(allowed)} (got {', '.join(bad)})")
    if "pyg" not in a.frameworks:
        ap.error("--frameworks: pyg is the reference and must be included")
    a.reps = a.reps or (5 if a.quick else 50)
    a.min_reps = min(a.reps, 5 if a.quick else 30)
    a.waited = 0.0
    return a


def log(msg: str) -> None:
    print(f"[bench_layers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- graphs ---------------------------------------------------------------------------------------

@dataclass
class Dataset:
    name: str
    label: str
    x: torch.Tensor
    edge_index: torch.Tensor        # symmetric, no self loops, sorted by (target, source)
    classes: int
    hidden: int                     # GCN/SAGE hidden size
    gat_hidden: int                 # GAT hidden size: GAT_HEADS heads x gat_hidden / GAT_HEADS channels
    synthetic: bool
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.x.size(0))

    @property
    def data(self):
        from torch_geometric.data import Data
        return Data(x=self.x, edge_index=self.edge_index, num_nodes=self.n)


# name: (Planetoid name, nodes, directed edges, features, classes, feature density of the real data)
PLANETOID = {"cora": ("Cora", 2708, 10556, 1433, 7, 0.0127),
             "citeseer": ("CiteSeer", 3327, 9104, 3703, 6, 0.0085),
             "pubmed": ("PubMed", 19717, 88648, 500, 3, 0.100)}


def clean_edges(ei: torch.Tensor, n: int) -> torch.Tensor:
    """Symmetric, self-loop-free, distinct edges sorted by (target, source)."""
    return symmetrise(ei[:, ei[0] != ei[1]], n)


def load_planetoid(name: str, seed: int) -> Dataset:
    """The real Planetoid graph and features from ``<data root>/planetoid`` (PubMed: its ``allx`` is
    missing here, so the harness fills those rows with synthetic TF-IDF-like ones), else a labelled
    synthetic stand-in of the same size."""
    pname, n, m, f, classes, density = PLANETOID[name]
    raw = data_root() / "planetoid" / pname / "raw"
    try:
        from sgnn.harness.data import read_planetoid_raw
        d = read_planetoid_raw(raw, pname, synth_seed=seed)
        ei = clean_edges(d.edge_index, d.num_nodes)
        x = d.x.contiguous()
        synth = int(d.synthetic_rows)
        dens = float((x != 0).float().mean())
        if synth:
            label = (f"{name} (real {pname} graph; features: {n - synth:,} real rows + {synth:,} synthetic rows "
                     f"sampled from the real rows' per-column nonzero rate and values, density {dens:.1%})")
        else:
            label = f"{name} (real {pname}, features density {dens:.2%})"
        return Dataset(name, label, x, ei, int(d.y.max()) + 1, 16, 64, synth > 0,
                       {"source": str(raw), "synthetic_feature_rows": synth, "feature_density": dens})
    except Exception as e:                              # missing/broken files: same-sized stand-in
        log(f"{pname}: cannot read {raw} ({type(e).__name__}: {e}); using a synthetic stand-in")
    gen = torch.Generator().manual_seed(seed + 11)
    ei = coalesce(power_law_edges(n, m, undirected=True, seed=seed + 1), n)
    x = (torch.rand(n, f, generator=gen) < density).float() * torch.rand(n, f, generator=gen)
    return Dataset(name, f"{name} (SYNTHETIC stand-in: {pname} files unreadable; power law γ=2.5, "
                         f"{f} features at density {density:.1%})", x, ei, classes, 16, 64, True,
                   {"feature_density": density})


def load_arxiv(seed: int) -> Dataset:
    """arXiv-sized synthetic graph: as common.GRAPHS['arxiv'] (same seed), without self loops."""
    n, m, f, classes = 169343, 1166243, 128, 40
    ei = clean_edges(power_law_edges(n, m, seed=3), n)
    x = torch.randn(n, f, generator=torch.Generator().manual_seed(seed + 13))
    return Dataset("arxiv", f"arxiv (SYNTHETIC power law γ=2.5: {n:,} nodes, {m:,} directed edges drawn, "
                            f"symmetrised to {ei.size(1):,}; {f} dense randn features, {classes} classes)",
                   x, ei, classes, 256, 256, True, {"drawn_edges": m})


def load_graph(name: str, seed: int) -> Dataset:
    return load_arxiv(seed) if name == "arxiv" else load_planetoid(name, seed)


# --- models ---------------------------------------------------------------------------------------

def build_net(model: str, ds: Dataset, seed: int):
    """The PyG reference (a harness PygNet): one conv, or conv-act-conv."""
    from sgnn.harness.models import PygNet
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv
    torch.manual_seed(seed)
    kind, two = model.rstrip("2"), model.endswith("2")
    f, hid, out = ds.x.size(1), ds.hidden, ds.classes
    if kind == "gat":
        hid = ds.gat_hidden
        convs = [GATConv(f, hid // GAT_HEADS, heads=GAT_HEADS)]
        if two:
            convs.append(GATConv(hid, out, heads=1, concat=False))
    elif kind == "gcn":
        convs = [GCNConv(f, hid)] + ([GCNConv(hid, out)] if two else [])
    else:
        convs = [SAGEConv(f, hid, aggr="mean")] + ([SAGEConv(hid, out, aggr="mean")] if two else [])
    net = PygNet(kind, convs, "elu" if kind == "gat" else "relu", 0.0).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):                  # PyG initialises biases to 0: check they map
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return net


def make_forward(fw: str, net, ds: Dataset):
    from sgnn.harness import models as hm
    data = ds.data
    if fw == "pyg":
        return hm.pyg_forward(net, data, pyg_cached=False)
    if fw == "pyg-cached":
        return hm.pyg_forward(net, data, pyg_cached=True)
    if fw == "pytorch":
        return hm.pytorch_forward(net, data)
    if fw == "dgl":
        return hm.dgl_forward(net, data)
    return hm.sgnn_forward(net, data)


def gat_materialised_bytes(ds: Dataset) -> int:
    """Bytes of one E x H x C float32 tensor of the first GAT layer (edges with self loops)."""
    return 4 * (ds.edge_index.size(1) + ds.n) * ds.gat_hidden


def mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- measuring ------------------------------------------------------------------------------------

def quiet(args) -> float:
    """Wait (bounded per block and in total) for a quiet machine; the load measured at the end."""
    left = max(0.0, args.wait_budget - args.waited)
    t0 = time.perf_counter()
    load = wait_until_quiet(min(args.wait_quiet, left), threshold=0.2, window_s=2.0, log=log)
    args.waited += max(0.0, time.perf_counter() - t0 - 2.0)
    if load >= 0.2:
        log(f"other processes use {load:.2f} cores; measuring anyway "
            f"(waited {args.waited:.0f} of {args.wait_budget:.0f} s budget so far)")
    return load


def is_inference_tensor_error(e: Exception) -> bool:
    return isinstance(e, RuntimeError) and "Inference tensors" in str(e)


def measure(fw: str, net, ds: Dataset, model: str, ref, args, notes: dict):
    """Build ``fw``'s twin, check its output against ``ref``, time it; (row, output or None)."""
    import sgnn
    row = {"graph": ds.name, "model": model, "framework": fw, "n": ds.n, "edges": int(ds.edge_index.size(1)),
           "threads": torch.get_num_threads(), "grad_mode": "inference_mode"}
    mode = torch.inference_mode
    fn = y = None
    try:
        release_memory()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        fn = make_forward(fw, net, ds)
        try:
            with mode():
                y = fn()
        except Exception as e:
            if fw != "sgnn" or not is_inference_tensor_error(e):
                raise
            tb = traceback.format_exc()
            notes.setdefault("sgnn_inference_mode", {"error": f"{type(e).__name__}: {e}", "traceback": tb,
                                                     "cases": []})["cases"].append(f"{ds.name}/{model}")
            log(f"sgnn raised under torch.inference_mode() on {ds.name}/{model} ({e}); "
                f"retrying under torch.no_grad()")
            mode = torch.no_grad
            row["grad_mode"] = "no_grad"
            with mode():
                y = fn()
        row["first_call_s"] = time.perf_counter() - t0
        if ref is not None:
            scale = float(ref.abs().max())
            err = float((y - ref).abs().max()) if y.shape == ref.shape else float("inf")
            row["max_abs_err"], row["ref_max_abs"] = err, scale
            row["verified"] = bool(y.shape == ref.shape and
                                   torch.allclose(y, ref, rtol=1e-4, atol=1e-4 * max(1.0, scale)))
            if not row["verified"]:
                log(f"MISMATCH {fw} on {ds.name}/{model}: max |err| = {err:.3g} (max |ref| = {scale:.3g})")
        out = y
        y = None
        release_memory()
        row["setup_rss_mib"] = (rss_bytes() - rss0 - out.numel() * out.element_size()) / 2**20

        def call():
            with mode():
                fn()
        est = time_calls(call, 2, warmup=0).median
        reps = max(args.min_reps, min(args.reps, int(args.budget / max(est, 1e-9))))
        warmup = 3 if est < 0.2 else 1
        best = None
        for attempt in range(1 + args.retries):     # re-measure when other processes were busy
            wait_load = quiet(args)
            checked = sgnn.config(assert_cached=True) if fw == "sgnn" else contextlib.nullcontext()
            with checked, PeakRss() as mem:
                mon = CpuMonitor()
                t = time_calls(call, reps, warmup=warmup)
                load = mon.others()
            if best is None or load < best[0]:
                best = (load, wait_load, t, mem.increase, mem.method, attempt)
            if load < RETRY_LOAD or args.waited >= args.wait_budget or attempt == args.retries:
                break
            log(f"{fw} on {ds.name}/{model}: other processes used {load:.2f} cores while timing; "
                f"measuring again ({attempt + 1}/{args.retries})")
        load, wait_load, t, inc, method, attempt = best
        row.update(others_cores=load, others_wait_cores=wait_load, peak_rss_mib=inc / 2**20, mem_method=method,
                   attempts=attempt + 1)
        row.update(t.summary())
    except Exception as e:                              # report, keep measuring the others
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc()
        log(f"ERROR {fw} on {ds.name}/{model}:\n{row['traceback']}")
        out = None
    finally:
        fn = y = None
        release_memory()
    return row, out


def bench_case(ds: Dataset, model: str, args, notes: dict) -> list[dict]:
    net = build_net(model, ds, args.seed)
    fws = [f for f in args.frameworks if f != "pyg-cached" or model.startswith("gcn")]
    fws = ["pyg"] + [f for f in fws if f != "pyg"]     # PyG first: its output is the reference
    rows, ref = [], None
    for fw in fws:
        if model.startswith("gat") and fw in ("pyg", "pytorch"):
            need, avail = 3 * gat_materialised_bytes(ds), mem_available()
            if avail is not None and need > 0.9 * avail:
                rows.append({"graph": ds.name, "model": model, "framework": fw, "n": ds.n,
                             "error": f"skipped: needs about {need / 2**30:.1f} GiB (3 E×H×C tensors), "
                                      f"{avail / 2**30:.1f} GiB available"})
                log(rows[-1]["error"])
                continue
        row, y = measure(fw, net, ds, model, ref, args, notes)
        if fw == "pyg":
            ref = y
            row["check"] = "ref"
        rows.append(row)
        y = None
        release_memory()
    sg = next((r for r in rows if r["framework"] == "sgnn" and "median_s" in r), None)
    for r in rows:
        if sg is not None and "median_s" in r and r is not sg:
            r["sgnn_speedup"] = r["median_s"] / sg["median_s"]
            if "peak_rss_mib" in r:
                r["sgnn_mem_ratio"] = sg["peak_rss_mib"] / max(r["peak_rss_mib"], 1e-9)
    done = [r for r in rows if "median_s" in r]
    log(f"{ds.name}/{model}: " + ", ".join(f"{r['framework']} {1e3 * r['median_s']:.2f} ms" for r in done))
    return rows


# --- report ---------------------------------------------------------------------------------------

def fmt_ms(s: float) -> str:
    ms = 1e3 * s
    return f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 1000 else f"{ms:.0f}"


def main_table(rows):
    cols = ["case", "framework", "median ms", "p10–p90 ms", "reps", "peak ΔRSS MiB", "setup MiB",
            "sgnn speedup", "max |err|", "check", "others"]
    out = []
    for r in rows:
        case = f"{r['graph']} · {MODEL_LABEL[r['model']]}"
        fw = r["framework"] + (" (no_grad)" if r.get("grad_mode") == "no_grad" else "")
        if "median_s" not in r:
            out.append([case, fw, "ERROR" if not r.get("error", "").startswith("skipped") else "SKIPPED",
                        r.get("error", "")[:70], "", "", "", "", "", "", ""])
            continue
        check = r.get("check") or ("ok" if r.get("verified") else "MISMATCH")
        err = "—" if r.get("check") == "ref" else f"{r['max_abs_err']:.1e}"
        out.append([case, fw, fmt_ms(r["median_s"]), f"{fmt_ms(r['p10_s'])}–{fmt_ms(r['p90_s'])}", r["reps"],
                    f"{r['peak_rss_mib']:.1f}", f"{r['setup_rss_mib']:.1f}",
                    f"{r['sgnn_speedup']:.2f}×" if "sgnn_speedup" in r else "—", err, check,
                    f"{r['others_cores']:.2f}"])
    print_table("Forward pass, float32, CPU; sgnn speedup = framework median / sgnn median; peak ΔRSS = "
                "peak RSS growth during the timed calls; setup = RSS growth of building + first call; "
                "max |err| vs PyG; others = cores used by other processes while timing",
                cols, out, right={"median ms", "p10–p90 ms", "reps", "peak ΔRSS MiB", "setup MiB",
                                  "sgnn speedup", "max |err|", "others"})


def summary_table(rows, cases):
    cols = ["case", "sgnn ms"] + [f"vs {b}" for b in BASELINES] + ["fastest baseline", "vs fastest",
                                                                   "sgnn/pyg peak mem"]
    out = []
    for g, m in cases:
        by = {r["framework"]: r for r in rows if r["graph"] == g and r["model"] == m}
        sg = by.get("sgnn")
        if sg is None or "median_s" not in sg:
            out.append([f"{g} · {MODEL_LABEL[m]}", "ERROR"] + [""] * (len(cols) - 2))
            continue
        speed = [f"{by[b]['sgnn_speedup']:.2f}×" if b in by and "sgnn_speedup" in by[b] else "—"
                 for b in BASELINES]
        base = [by[b] for b in BASELINES if b in by and "median_s" in by[b]]
        fastest = min(base, key=lambda r: r["median_s"]) if base else None
        pyg = by.get("pyg", {})
        memr = f"{sg['peak_rss_mib']:.1f} / {pyg['peak_rss_mib']:.1f} MiB" if "peak_rss_mib" in pyg else "—"
        out.append([f"{g} · {MODEL_LABEL[m]}", fmt_ms(sg["median_s"])] + speed +
                   [f"{fastest['framework']} {fmt_ms(fastest['median_s'])} ms" if fastest else "—",
                    f"{fastest['sgnn_speedup']:.2f}×" if fastest else "—", memr])
    print_table("sgnn speedup per case (framework median / sgnn median)", cols, out,
                right={"sgnn ms", *[f"vs {b}" for b in BASELINES], "vs fastest", "sgnn/pyg peak mem"})


def busy_note(*rs) -> str:
    """' [UNRELIABLE: ...]' when other processes were busy while any of these rows was timed."""
    busy = [f"{r['framework']} {r['others_cores']:.2f}" for r in rs
            if r is not None and r.get("others_cores", 0.0) >= RETRY_LOAD]
    return f" [UNRELIABLE: other processes used cores while timing: {', '.join(busy)}]" if busy else ""


def targets(rows, graphs) -> list[tuple[bool | None, str]]:
    res = []
    by = {(r["graph"], r["model"], r["framework"]): r for r in rows}
    for kind in ("gcn2", "sage2"):
        for g in graphs:
            need = GCN_SAGE_TARGET[g]
            sg = by.get((g, kind, "sgnn"))
            base = [by[(g, kind, b)] for b in BASELINES if (g, kind, b) in by and "median_s" in by[(g, kind, b)]]
            if sg is None:
                continue
            what = f"{MODEL_LABEL[kind]} on {g}: sgnn vs fastest of {{{', '.join(BASELINES)}}}"
            if "median_s" not in sg or not base:
                res.append((False, f"{what}: n/a (error) (target ≥ {need}×)"))
                continue
            fastest = min(base, key=lambda r: r["median_s"])
            s = fastest["median_s"] / sg["median_s"]
            extra = ""
            if fastest["framework"] == "pyg-cached" and (g, kind, "pyg") in by and "median_s" in by[(g, kind, "pyg")]:
                extra = f"; vs default pyg {by[(g, kind, 'pyg')]['median_s'] / sg['median_s']:.2f}×"
            res.append((s >= need, f"{what} ({fastest['framework']}): {s:.2f}× "
                                   f"({fmt_ms(sg['median_s'])} vs {fmt_ms(fastest['median_s'])} ms{extra}; "
                                   f"target ≥ {need}×){busy_note(sg, *base)}"))
    for g in graphs:
        sg = by.get((g, "gat2", "sgnn"))
        if sg is None:
            continue
        for b, need in (("pyg", GAT_VS_PYG), ("dgl", GAT_VS_DGL)):
            r = by.get((g, "gat2", b))
            what = f"{MODEL_LABEL['gat2']} on {g}: sgnn vs {b}"
            if r is None:
                continue
            if "median_s" not in sg or "median_s" not in r:
                res.append((False, f"{what}: n/a ({r.get('error', sg.get('error', 'error'))[:60]}) "
                                   f"(target ≥ {need}×)"))
                continue
            s = r["median_s"] / sg["median_s"]
            res.append((s >= need, f"{what}: {s:.2f}× ({fmt_ms(sg['median_s'])} vs {fmt_ms(r['median_s'])} ms; "
                                   f"target ≥ {need}×){busy_note(sg, r)}"))
        r = by.get((g, "gat2", "pyg"))
        if r is not None and "peak_rss_mib" in r and "peak_rss_mib" in sg:
            res.append((sg["peak_rss_mib"] < r["peak_rss_mib"],
                        f"{MODEL_LABEL['gat2']} on {g}: sgnn peak ΔRSS {sg['peak_rss_mib']:.1f} MiB vs PyG "
                        f"{r['peak_rss_mib']:.1f} MiB (target: below PyG's)"))
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)                         # before dgl and sgnn start their OpenMP runtimes
    import sgnn
    if "dgl" in args.frameworks:
        import dgl  # noqa: F401
    set_threads(args.threads)
    info = machine_info()
    log(f"threads={torch.get_num_threads()} graphs={args.graphs} models={args.models} reps={args.reps} "
        f"frameworks={args.frameworks}")

    rows, notes, graphs_info, cases = [], {}, {}, []
    for gname in args.graphs:
        t0 = time.perf_counter()
        ds = load_graph(gname, args.seed)
        graphs_info[gname] = {"label": ds.label, "n": ds.n, "edges": int(ds.edge_index.size(1)),
                              "features": int(ds.x.size(1)), "classes": ds.classes, "hidden": ds.hidden,
                              "gat_hidden": ds.gat_hidden,
                              "synthetic": ds.synthetic, **ds.info}
        log(f"graph {ds.label}: n={ds.n:,} edges={ds.edge_index.size(1):,} ({time.perf_counter() - t0:.1f} s)")
        for model in args.models:
            rows += bench_case(ds, model, args, notes)
            cases.append((gname, model))
        del ds
        release_memory()

    import dgl
    import torch_geometric
    print(f"machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']}, torch_geometric "
          f"{torch_geometric.__version__}, dgl {dgl.__version__}, sgnn {sgnn.__version__}; "
          f"{args.threads} threads for all frameworks; one process")
    for g in graphs_info.values():
        print(f"graph {g['label']}: n={g['n']:,}, edges={g['edges']:,} (no self loops), F={g['features']}, "
              f"classes={g['classes']}, hidden={g['hidden']} (GAT {GAT_HEADS} heads × {g['gat_hidden'] // GAT_HEADS})")
    methods = sorted({r["mem_method"] for r in rows if "mem_method" in r})
    print(f"memory: peak RSS growth of this process during the timed calls (after malloc_trim), method "
          f"{'/'.join(methods) or 'n/a'} ({'kernel high-water mark VmHWM reset via /proc/self/clear_refs' if methods == ['VmHWM'] else 'VmRSS sampled every 2 ms'}); "
          f"torch has no CPU allocator stats. State built before timing (graph caches, CSRs) is excluded.")
    print(f"timing: medians of ≥ {args.min_reps} warm calls (up to {args.reps}; fewer above {args.budget:.0f} s "
          f"per measurement), after a bounded wait for a quiet machine")
    print()
    main_table(rows)
    print()
    summary_table(rows, cases)
    print()
    res = targets(rows, [g for g in args.graphs])
    for ok, line in res:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    errs = [r for r in rows if "error" in r]
    for r in errs:
        print(f"{'SKIP' if r['error'].startswith('skipped') else 'ERROR'}  {r['graph']}/{r['model']}/"
              f"{r['framework']}: {r['error'][:200]}")
    mism = [r for r in rows if r.get("verified") is False]
    for r in mism:
        print(f"MISMATCH  {r['graph']}/{r['model']}/{r['framework']}: max |err| {r['max_abs_err']:.3g} "
              f"(max |ref| {r['ref_max_abs']:.3g})")
    if "sgnn_inference_mode" in notes:
        n = notes["sgnn_inference_mode"]
        print(f"NOTE  sgnn raised under torch.inference_mode() ({n['error']}) in {len(n['cases'])} case(s): "
              f"{', '.join(n['cases'])}; those sgnn rows ran under torch.no_grad() (marked '(no_grad)')")
        print("      " + n["traceback"].strip().splitlines()[-3].strip() + " | "
              + n["traceback"].strip().splitlines()[-2].strip())
    loads = [r["others_cores"] for r in rows if "others_cores" in r]
    if loads:
        busy = max(loads)
        print(f"{'WARNING' if busy >= 0.2 else 'note'}: other processes used up to {busy:.2f} cores during timed "
              f"sections (mean {sum(loads) / len(loads):.2f}; waited {args.waited:.0f} s in total for quiet)"
              + ("; rows with a high 'others' value are unreliable" if busy >= 0.2 else ""))
    if args.json:
        write_json({"argv": sys.argv, "machine": info, "graphs": graphs_info, "rows": rows,
                    "targets": [{"pass": ok, "what": line} for ok, line in res], "notes": notes,
                    "memory_method": methods, "waited_s": args.waited}, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
