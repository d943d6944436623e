"""``python run.py bench=layers``: GNN layers and 2-layer models, sgnn vs PyG, DGL and plain PyTorch.

Cases (``bench.models``): the single layers GCNConv, SAGEConv (mean) and GATConv (``heads`` concatenated)
from the input width to the hidden size, and the 2-layer models of ``run.py`` (gcn2, sage2, gat2); sizes
come from configs/model and configs/dataset_model of each dataset. The reference is the PyG model
(seeded init, biases set to small random values so that bias mapping is checked too); the others get
its weights through the twins of ``models.py``: ``pyg`` (cached=False), ``pyg-cached`` (GCN only),
``pyg-csr`` (adj_t), ``pytorch``, ``dgl``, ``sgnn`` (from_pyg).

Every output is checked against PyG's before it is timed, under torch.inference_mode() (sgnn retries
under torch.no_grad() if it raises there, and the table says so); timed sgnn calls run under
sgnn.config(assert_cached=True). Peak memory: the growth of this process's RSS during the timed calls
(memory.PeakRss); the RSS growth of building a framework and its first call is "setup".
"""
from __future__ import annotations

import contextlib
import time
import traceback

import torch
from omegaconf import OmegaConf

from . import cases
from .layers_report import report, targets
from .machine import Quiet, log, machine_info
from .memory import PeakRss, fits, release_memory, rss_bytes
from .models import FRAMEWORKS, PygNet, build_pyg
from .report import versions, write_results
from .timing import adaptive_repetitions, time_calls

MODELS = ("gcn", "sage", "gat", "gcn2", "sage2", "gat2")


def build_net(model: str, m, in_dim: int, classes: int, seed: int, bias_std: float) -> PygNet:
    """The PyG reference: one conv (``gcn``/``sage``/``gat``) or the 2-layer model (``*2``)."""
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv
    torch.manual_seed(seed)
    kind = model.rstrip("2")
    if model.endswith("2"):
        net = build_pyg(OmegaConf.merge(m, {"layers": 2}), in_dim, classes)
    else:
        conv = {"gcn": lambda: GCNConv(in_dim, m.hidden),
                "sage": lambda: SAGEConv(in_dim, m.hidden, aggr="mean"),
                "gat": lambda: GATConv(in_dim, m.hidden, heads=m.heads)}[kind]()
        net = PygNet(kind, [conv], m.act, m.dropout)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):                   # PyG initialises biases to 0: check they map
                p.copy_(bias_std * torch.randn(p.shape, generator=gen))
    return net.eval()


def make_forward(fw: str, net: PygNet, data):
    if fw in ("pyg", "pyg-cached"):
        return FRAMEWORKS["pyg"](net, data, pyg_cached=fw == "pyg-cached")
    if fw not in FRAMEWORKS:
        raise ValueError(f"bench.frameworks: expected pyg-cached or one of {sorted(FRAMEWORKS)} (got {fw!r})")
    return FRAMEWORKS[fw](net, data)


def _first_call(fw: str, fn, row: dict, notes: dict, where: str):
    """The first call under inference_mode (sgnn: no_grad if it raises there); (output, grad mode)."""
    try:
        with torch.inference_mode():
            return fn(), torch.inference_mode
    except RuntimeError as e:
        if fw != "sgnn" or "Inference tensors" not in str(e):
            raise
        notes.setdefault("sgnn_inference_mode", {"error": f"{type(e).__name__}: {e}", "cases": [],
                                                 "traceback": traceback.format_exc()})["cases"].append(where)
        log(f"sgnn raised under torch.inference_mode() on {where} ({e}); retrying under torch.no_grad()")
        row["grad_mode"] = "no_grad"
        with torch.no_grad():
            return fn(), torch.no_grad


def _verify(y: torch.Tensor, ref: torch.Tensor) -> dict:
    scale = float(ref.abs().max())
    same = y.shape == ref.shape
    err = float((y - ref).abs().max()) if same else float("inf")
    ok = same and torch.allclose(y, ref, rtol=1e-4, atol=1e-4 * max(1.0, scale))
    return {"max_abs_err": err, "ref_max_abs": scale, "verified": bool(ok)}


def measure(fw: str, net, data, ref, b, quiet: Quiet, notes: dict,
            where: str) -> tuple[dict, torch.Tensor | None]:
    """Build ``fw``'s twin, check it against ``ref``, time it with its peak ΔRSS; (row, output)."""
    import sgnn
    row = {"framework": fw, "threads": torch.get_num_threads(), "grad_mode": "inference_mode"}
    fn = out = None
    try:
        release_memory()
        rss0, t0 = rss_bytes(), time.perf_counter()
        fn = make_forward(fw, net, data)
        out, mode = _first_call(fw, fn, row, notes, where)
        row["first_call_s"] = time.perf_counter() - t0
        if ref is not None:
            row.update(_verify(out, ref))
            if not row["verified"]:
                log(f"MISMATCH {fw} on {where}: max |err| = {row['max_abs_err']:.3g}")
        release_memory()
        row["setup_rss_mib"] = (rss_bytes() - rss0 - out.numel() * out.element_size()) / 2**20

        def call():
            with mode():
                fn()
        reps, est = adaptive_repetitions(call, int(b.repetitions), int(b.min_repetitions), float(b.budget_s))

        def block():
            checked = sgnn.config(assert_cached=True) if fw == "sgnn" else contextlib.nullcontext()
            with checked, PeakRss() as mem:
                t = time_calls(call, reps, 3 if est < 0.2 else 1)
            return t, mem
        (t, mem), load = quiet.timed(block)
        row.update(**t.asdict(), **load, peak_rss_mib=mem.increase_mib, mem_method=mem.method)
    except Exception as e:                              # report, keep measuring the others
        row.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        log(f"ERROR {fw} on {where}:\n{row['traceback']}")
        out = None
    finally:
        fn = None
        release_memory()
    return row, out


def gat_bytes(data, m) -> int:
    """Bytes of one E x H x C float32 tensor of the first GAT layer (edges with self loops)."""
    return 4 * (int(data.edge_index.size(1)) + int(data.num_nodes)) * int(m.hidden) * int(m.heads)


def bench_case(c, graph, model: str, b, quiet: Quiet, notes: dict) -> list[dict]:
    """All frameworks on one (dataset, model); PyG first (its output is the reference)."""
    d, m = graph.data, c.model
    net = build_net(model, m, d.num_features, cases.num_classes(graph), int(c.seed), float(b.bias_std))
    fws = ["pyg"] + [f for f in b.frameworks if f != "pyg" and (f != "pyg-cached" or model.startswith("gcn"))]
    rows, ref, where = [], None, f"{graph.name}/{model}"
    for fw in fws:
        base = {"dataset": graph.name, "model": model, "framework": fw, "n": int(d.num_nodes),
                "edges": graph.num_edges, "hidden": int(m.hidden), "heads": int(m.get("heads", 1))}
        need = int(b.gat_memory_factor) * gat_bytes(d, m) if model.startswith("gat") else 0
        ok, avail = fits(need)
        if fw in ("pyg", "pytorch") and not ok:
            rows.append({**base, "error": f"skipped: needs about {b.gat_memory_factor} x "
                                          f"{gat_bytes(d, m) / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB "
                                          f"available"})
            log(rows[-1]["error"])
            continue
        row, y = measure(fw, net, d, ref, b, quiet, notes, where)
        if fw == "pyg":
            ref, row["check"] = y, "ref"
        rows.append({**base, **row})
    _ratios(rows)
    log(f"{where}: " + ", ".join(f"{r['framework']} {r['median_ms']:.2f} ms"
                                 for r in rows if "median_ms" in r))
    return rows


def _ratios(rows: list[dict]) -> None:
    sg = next((r for r in rows if r["framework"] == "sgnn" and "median_ms" in r), None)
    for r in rows:
        if sg is not None and "median_ms" in r and r is not sg:
            r["sgnn_speedup"] = r["median_ms"] / sg["median_ms"]
            r["sgnn_mem_ratio"] = sg["peak_rss_mib"] / max(r["peak_rss_mib"], 1e-9)


def run(cfg, out_dir) -> dict:
    """The layer benchmark; writes results.json / results.csv to ``out_dir`` and returns the results."""
    import sgnn
    b, quiet = cfg.bench, Quiet(cfg.quiet)
    bad = [m for m in b.models if m not in MODELS]
    if bad or "pyg" not in b.frameworks:
        raise ValueError(f"bench: expected models among {MODELS} and pyg in frameworks "
                         f"(got {list(b.models)}, {list(b.frameworks)})")
    rows, notes, graphs, order = [], {}, {}, []
    for c, g in cases.graphs(cfg, b.datasets):
        graphs[g.name] = cases.graph_info(g)
        log(f"graph {g.label}: n={g.data.num_nodes:,} edges={g.num_edges:,}")
        for model in b.models:
            mc = cases.case(c, g.name, str(model).rstrip("2"))
            graphs[g.name][f"{model}_sizes"] = {"hidden": int(mc.model.hidden),
                                                "heads": int(mc.model.get("heads", 1))}
            rows += bench_case(mc, g, str(model), b, quiet, notes)
            order.append((g.name, str(model)))
        del g
        release_memory()
    res = {"bench": "layers", "machine": {**machine_info(), "sgnn": sgnn.__version__}, "versions": versions(),
           "config": OmegaConf.to_container(b), "graphs": graphs, "rows": rows, "cases": order,
           "notes": notes,
           "memory_method": sorted({r["mem_method"] for r in rows if "mem_method" in r}),
           "waited_s": quiet.waited}
    res["targets"] = targets(rows, [d for d in b.datasets], b.targets)
    report(res)
    write_results(out_dir, res)
    return res
