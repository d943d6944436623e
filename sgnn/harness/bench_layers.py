"""``python run.py bench=layers``: GNN layers and 2-layer models, sgnn vs PyG, DGL and plain PyTorch, in
float32 and bfloat16.

Cases (``bench.models``): the single layers GCNConv, SAGEConv (mean) and GATConv (``heads`` concatenated)
from the input width to the hidden size, and the 2-layer models of ``run.py`` (gcn2, sage2, gat2); sizes
come from configs/model and configs/dataset_model of each dataset. The reference is the PyG model
(seeded init, biases set to small random values so that bias mapping is checked too); the others get
its weights through the twins of ``models.py``: ``pyg`` (cached=False), ``pyg-cached`` (GCN only),
``pyg-csr`` (adj_t), ``pytorch``, ``dgl``, ``sgnn`` (from_pyg). A framework name ending in ``-bf16`` is
that twin built from the model cast by ``.bfloat16()`` with bfloat16 features, ``sgnn-mixed`` the float32
sgnn twin under ``sgnn.config(precision="bf16")`` (both built by ``bench_precision.forward``).

Every output is checked against PyG's float32 output before it is timed, under torch.inference_mode()
(sgnn retries under torch.no_grad() if it raises there, and the table says so): float32 rows within
rtol = 1e-4, bfloat16 / mixed rows by their argmax agreement (>= ``bench.low_precision_agreement``), so
a broken narrow path cannot look fast. A framework that cannot run (e.g. torch.sparse has no bfloat16
CSR matmul on CPU) keeps its row with the error and why. Timed sgnn calls run under
sgnn.config(assert_cached=True).

Timing is interleaved: every framework of a case is built (and its repetitions chosen from two calls)
first, then ``bench.rounds`` rounds each run every framework's share of its repetitions, in alternating
order (forward, then reversed), each round one block of ``Quiet.timed`` (waits for a quiet machine,
re-measures a busy round). A row's median and quantiles are over all its timed calls; its load is the
mean over the rounds of the other processes' cores. Peak memory: the growth of this process's RSS
during a framework's timed calls (memory.PeakRss, the largest over the rounds); the RSS growth of
building a framework and its first call is "setup".
"""
from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
import traceback

import torch
from omegaconf import OmegaConf

from . import cases
from .bench_precision import forward as precision_forward
from .bench_precision import rel_errors
from .layers_report import precision_of, precision_summary, report, targets
from .machine import Quiet, log, machine_info
from .memory import PeakRss, fits, release_memory, rss_bytes
from .models import FRAMEWORKS, PygNet, build_pyg
from .report import versions, write_results
from .timing import Timing, adaptive_repetitions, call_times

BASES = ("pyg", "pyg-cached", "pyg-csr", "pytorch", "dgl", "sgnn")
# why a peer cannot run bfloat16: a piece of its error message -> the reason the table prints
WHY = {"addmm_out_sparse_csr_impl_mkl": "torch.sparse has no bfloat16 CSR matmul (MKL addmm) on CPU",
       "sparse_mm_reduce": "torch.sparse's CSR matmul-reduce (PyG SAGE on adj_t) takes float32 only"}

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


def check_framework(fw: str) -> None:
    """ValueError unless ``fw`` is a base framework, ``<base>-bf16`` or ``sgnn-mixed``."""
    base, p = precision_of(fw)
    if base not in BASES or (p == "mixed" and base != "sgnn"):
        raise ValueError(f"bench.frameworks: expected one of {list(BASES)}, optionally with -bf16, or "
                         f"sgnn-mixed (got {fw!r})")


def make_forward(fw: str, net: PygNet, data):
    """``fw``'s zero-argument forward pass; a narrow precision through bench_precision's twins."""
    check_framework(fw)
    base, p = precision_of(fw)
    build = (functools.partial(FRAMEWORKS["pyg"], pyg_cached=True) if base == "pyg-cached"
             else FRAMEWORKS[base])
    return build(net, data) if p == "fp32" else precision_forward(net, data, p, build)


def _first_call(fw: str, fn, row: dict, notes: dict, where: str):
    """The first call under inference_mode (sgnn: no_grad if it raises there); (output, grad mode)."""
    try:
        with torch.inference_mode():
            return fn(), torch.inference_mode
    except RuntimeError as e:
        if precision_of(fw)[0] != "sgnn" or "Inference tensors" not in str(e):
            raise
        notes.setdefault("sgnn_inference_mode", {"error": f"{type(e).__name__}: {e}", "cases": [],
                                                 "traceback": traceback.format_exc()})["cases"].append(where)
        log(f"sgnn raised under torch.inference_mode() on {where} ({e}); retrying under torch.no_grad()")
        row["grad_mode"] = "no_grad"
        with torch.no_grad():
            return fn(), torch.no_grad


def _verify(y: torch.Tensor, ref: torch.Tensor, precision: str, agreement: float) -> dict:
    """Max |y - ref|, argmax agreement, max relative error per node; verified: float32 within 1e-4,
    a narrow precision with argmax agreement >= ``agreement``."""
    scale = float(ref.abs().max())
    same = y.shape == ref.shape
    y = y.float()
    err = float((y - ref).abs().max()) if same else float("inf")
    agree = float((y.argmax(-1) == ref.argmax(-1)).float().mean()) if same and y.numel() else float(same)
    if precision == "fp32":
        ok = same and torch.allclose(y, ref, rtol=1e-4, atol=1e-4 * max(1.0, scale))
    else:
        ok = same and agree >= agreement
    return {"max_abs_err": err, "ref_max_abs": scale, "argmax_agreement": agree,
            "max_rel_error": rel_errors(y, ref)[0] if same else float("inf"), "verified": bool(ok)}


def _failed(row: dict, e: Exception, fw: str, where: str) -> None:
    row.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    why = next((w for k, w in WHY.items() if k in str(e)), None)
    if why:
        row["why"] = why
    log(f"ERROR {fw} on {where}: {why or ''}\n{row['traceback']}")


def prepare(fw: str, net, data, ref, b, notes: dict,
            where: str) -> tuple[dict, dict | None, torch.Tensor | None]:
    """Build ``fw``'s twin, check it against ``ref``, choose its repetitions; (row, its timing entry or
    None after an error, output)."""
    row = {"framework": fw, "threads": torch.get_num_threads(), "grad_mode": "inference_mode",
           "precision": precision_of(fw)[1]}
    fn = out = None
    try:
        release_memory()
        rss0, t0 = rss_bytes(), time.perf_counter()
        fn = make_forward(fw, net, data)
        out, mode = _first_call(fw, fn, row, notes, where)
        row["first_call_s"] = time.perf_counter() - t0
        row["dtype"] = str(out.dtype).replace("torch.", "")
        if ref is not None:
            row.update(_verify(out, ref, row["precision"], float(b.low_precision_agreement)))
            if not row["verified"]:
                log(f"MISMATCH {fw} on {where}: max |err| = {row['max_abs_err']:.3g}, argmax agreement "
                    f"{row['argmax_agreement']:.4f}")
        release_memory()
        row["setup_rss_mib"] = (rss_bytes() - rss0 - out.numel() * out.element_size()) / 2**20

        def call(fn=fn, mode=mode):
            with mode():
                fn()
        reps, est = adaptive_repetitions(call, int(b.repetitions), int(b.min_repetitions), float(b.budget_s))
        return row, {"fw": fw, "row": row, "call": call, "reps": reps, "est": est}, out
    except Exception as e:                              # report, keep measuring the others
        _failed(row, e, fw, where)
        return row, None, None
    finally:
        fn = None
        release_memory()


def _round(entries: list[dict], first: bool, where: str) -> dict:
    """One round: each live entry's share of calls, with its peak ΔRSS; {fw: (times, warmup, mem)}."""
    import sgnn
    got = {}
    for e in entries:
        if "error" in e["row"]:
            continue
        warm = (3 if first else 1) if e["est"] < 0.2 else (1 if first else 0)
        checked = sgnn.config(assert_cached=True) if e["fw"].startswith("sgnn") else contextlib.nullcontext()
        try:
            with checked, PeakRss() as mem:
                times = call_times(e["call"], e["per_round"], warm)
            got[e["fw"]] = (times, warm, mem)
        except Exception as ex:                         # this framework stops; the others go on
            _failed(e["row"], ex, e["fw"], where)
    return got


def interleaved(entries: list[dict], b, quiet: Quiet, where: str) -> None:
    """Time ``entries`` in ``bench.rounds`` interleaved rounds (order alternating); fills their rows."""
    rounds = max(1, int(b.rounds))
    for e in entries:
        e.update(per_round=math.ceil(e["reps"] / rounds), times=[], warm=0, peak=None, loads=[])
    for k in range(rounds):
        order = entries if k % 2 == 0 else entries[::-1]
        got, load = quiet.timed(lambda order=order, k=k: _round(order, k == 0, where))
        for e in entries:
            if e["fw"] in got:
                times, warm, mem = got[e["fw"]]
                e["times"] += times
                e["warm"] += warm
                e["loads"].append(load)
                if e["peak"] is None or mem.increase_mib > e["peak"].increase_mib:
                    e["peak"] = mem
    for e in entries:
        if "error" in e["row"] or not e["times"]:
            continue
        ls = e["loads"]
        e["row"].update(**Timing.of(e["times"], e["warm"]).asdict(), rounds=len(ls),
                        others_cores=statistics.fmean(x["others_cores"] for x in ls),
                        others_wait_cores=statistics.fmean(x["others_wait_cores"] for x in ls),
                        attempts=sum(x["attempts"] for x in ls),
                        peak_rss_mib=e["peak"].increase_mib, mem_method=e["peak"].method)


def gat_bytes(data, m) -> int:
    """Bytes of one E x H x C float32 tensor of the first GAT layer (edges with self loops)."""
    return 4 * (int(data.edge_index.size(1)) + int(data.num_nodes)) * int(m.hidden) * int(m.heads)


def bench_case(c, graph, model: str, b, quiet: Quiet, notes: dict) -> list[dict]:
    """All frameworks on one (dataset, model), PyG first (its output is the reference), then their
    timing interleaved."""
    d, m = graph.data, c.model
    net = build_net(model, m, d.num_features, cases.num_classes(graph), int(c.seed), float(b.bias_std))
    fws = ["pyg"] + [f for f in b.frameworks if f != "pyg" and
                     (precision_of(f)[0] != "pyg-cached" or model.startswith("gcn"))]
    rows, entries, ref, where = [], [], None, f"{graph.name}/{model}"
    for fw in fws:
        base = {"dataset": graph.name, "model": model, "framework": fw, "n": int(d.num_nodes),
                "edges": graph.num_edges, "hidden": int(m.hidden), "heads": int(m.get("heads", 1))}
        need = int(b.gat_memory_factor) * gat_bytes(d, m) if model.startswith("gat") else 0
        ok, avail = fits(need)
        if precision_of(fw)[0] in ("pyg", "pytorch") and not ok:
            rows.append({**base, "precision": precision_of(fw)[1],
                         "error": f"skipped: needs about {b.gat_memory_factor} x "
                                  f"{gat_bytes(d, m) / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"})
            log(rows[-1]["error"])
            continue
        row, entry, y = prepare(fw, net, d, ref, b, notes, where)
        if fw == "pyg":
            ref, row["check"] = y, "ref"
        row = {**base, **row}
        if entry is not None:
            entry["row"] = row
            entries.append(entry)
        rows.append(row)
        y = None
    interleaved(entries, b, quiet, where)
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
    for fw in b.frameworks:
        check_framework(str(fw))
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
    res["precision"] = precision_summary(rows, order)
    res["targets"] = targets(rows, [d for d in b.datasets], b.targets, res["precision"])
    report(res)
    write_results(out_dir, res)
    return res
