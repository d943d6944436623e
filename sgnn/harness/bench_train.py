"""``python run.py bench=train``: ms per full-graph training epoch, sgnn vs PyG and DGL, in one process.

An epoch is zero_grad, forward (train mode: dropout on), cross entropy on the train mask, backward and
an Adam step (``timing.training_epoch``), for the 2-layer models of ``run.py`` (configs/model +
configs/dataset_model) from the same seeded PyG initialisation, through the training twins of
``models.TRAINERS``: ``sgnn`` (from_pyg), ``pyg`` (edge_index) and ``pyg-csr`` (CSR adj_t), both with
GCNConv's normalisation cached, and ``dgl``. PyG's number is its fastest path. Each framework runs
``bench.warmup`` untimed epochs, then the median of ``bench.epochs`` timed ones, with the peak RSS growth
during them (memory.PeakRss: activations kept for backward, gradients; not the Adam state built in
warm-up). Targets: sgnn >= ``vs_pyg`` x PyG and ``vs_dgl`` x DGL per case; GAT peak memory on
``gat_memory_dataset`` <= ``gat_memory_vs_pyg`` x PyG's (the smaller of its two paths).
"""
from __future__ import annotations

import traceback

import torch
from omegaconf import OmegaConf

from . import cases
from .bench_layers import gat_bytes
from .machine import Quiet, header_lines, log, machine_info
from .memory import PeakRss, fits, release_memory
from .models import TRAINERS, build_pyg
from .report import busy_note, load_note, ms, print_grid, print_targets, stdout, versions, write_results
from .timing import time_calls, training_epoch

PYG = ("pyg", "pyg-csr")


def measure(fw: str, net, data, m, b, quiet: Quiet) -> dict:
    """Warm-up epochs, then the timed ones with their peak ΔRSS; a row (with 'error' on failure)."""
    row = {"framework": fw, "threads": torch.get_num_threads()}
    try:
        release_memory()
        forward, params = TRAINERS[fw](net, data, pyg_cached=True)
        epoch = training_epoch(forward, params, data, m)
        for _ in range(max(int(b.warmup), 1)):
            epoch()

        def block():
            with PeakRss() as mem:
                t = time_calls(epoch, int(b.epochs))
            return t, mem
        (t, mem), load = quiet.timed(block)
        row.update(**t.asdict(), **load, peak_rss_mib=mem.increase_mib, mem_method=mem.method)
    except Exception as e:                          # one framework failing must not stop the others
        row.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        log(f"ERROR {fw} training:\n{row['traceback']}")
    finally:
        release_memory()
    return row


def bench_case(c, graph, b, quiet: Quiet) -> list[dict]:
    """Every framework's training epochs on one (dataset, model)."""
    d, m = graph.data, c.model
    torch.manual_seed(int(c.seed))
    net = build_pyg(m, d.num_features, cases.num_classes(graph))
    rows = []
    for fw in b.frameworks:
        base = {"dataset": graph.name, "model": str(m.name), "framework": str(fw), "n": int(d.num_nodes),
                "edges": graph.num_edges, "hidden": int(m.hidden), "heads": int(m.get("heads", 1))}
        need = int(b.gat_memory_factor) * gat_bytes(d, m) if m.name == "gat" else 0
        ok, avail = fits(need)
        if fw in (*PYG, "pytorch") and not ok:
            rows.append({**base, "error": f"skipped: needs about {need / 2**30:.1f} GiB "
                                          f"({b.gat_memory_factor} E×H×C tensors), "
                                          f"{avail / 2**30:.1f} GiB available"})
            log(rows[-1]["error"])
            continue
        rows.append({**base, **measure(str(fw), net, d, m, b, quiet)})
    log(f"{graph.name}/{m.name}: " + ", ".join(f"{r['framework']} {r['median_ms']:.2f} ms/epoch"
                                                for r in rows if "median_ms" in r))
    return rows


def summarise(rows: list[dict], order) -> list[dict]:
    """Per (dataset, model): sgnn, PyG's fastest path and DGL, with the ratios."""
    out = []
    for g, model in order:
        by = {r["framework"]: r for r in rows
              if (r["dataset"], r["model"]) == (g, model) and "median_ms" in r}
        pyg = min((by[p] for p in PYG if p in by), key=lambda r: r["median_ms"], default=None)
        pyg_mem = min((by[p]["peak_rss_mib"] for p in PYG if p in by), default=None)
        sg, dgl = by.get("sgnn"), by.get("dgl")
        s = {"dataset": g, "model": model, "sgnn_ms": sg and sg["median_ms"],
             "pyg_path": pyg and pyg["framework"],
             "pyg_ms": pyg and pyg["median_ms"], "dgl_ms": dgl and dgl["median_ms"],
             "sgnn_peak_mib": sg and sg["peak_rss_mib"], "pyg_peak_mib": pyg_mem,
             "busy": busy_note(*by.values())}
        s["vs_pyg"] = s["pyg_ms"] / s["sgnn_ms"] if sg and pyg else None
        s["vs_dgl"] = s["dgl_ms"] / s["sgnn_ms"] if sg and dgl else None
        s["mem_vs_pyg"] = s["sgnn_peak_mib"] / max(pyg_mem, 1e-9) if sg and pyg_mem is not None else None
        out.append(s)
    return out


def targets(summary: list[dict], t) -> list[dict]:
    res = []
    for s in summary:
        where = f"{s['dataset']} · {s['model'].upper()} training epoch"
        for key, peer, need in (("vs_pyg", f"PyG ({s['pyg_path']})", float(t.vs_pyg)),
                                ("vs_dgl", "DGL", float(t.vs_dgl))):
            v = s[key]
            res.append({"pass": None if v is None else v >= need,
                        "what": f"{where}: sgnn vs {peer}: {'n/a' if v is None else f'{v:.2f}×'} "
                                f"(target ≥ {need}×){s['busy']}"})
        if s["model"] == "gat" and s["dataset"] == str(t.gat_memory_dataset):
            v, need = s["mem_vs_pyg"], float(t.gat_memory_vs_pyg)
            res.append({"pass": None if v is None else v <= need,
                        "what": f"{where}: sgnn peak ΔRSS {_mib(s['sgnn_peak_mib'])} vs PyG "
                                f"{_mib(s['pyg_peak_mib'])} = {'n/a' if v is None else f'{v:.2f}×'} "
                                f"(target ≤ {need}×)"})
    return res


def _mib(v) -> str:
    return "—" if v is None else f"{v:.1f} MiB"


def _x(v, need, higher=True) -> str:
    if v is None:
        return "—"
    ok = v >= need if higher else v <= need
    return f"{v:.2f}× {'✓' if ok else '✗'}"


def report(res: dict) -> None:
    """Header, the per-framework table, the per-case comparison with marked targets, PASS/FAIL lines."""
    info, c = res["machine"], res["config"]
    head = header_lines(info) + [(f"{info['threads']} threads, one process; median of {c['epochs']} epochs "
                                  f"after {c['warmup']} warm-up; full graph, Adam")]
    print_grid("Training epochs (ms per epoch: forward, loss, backward, Adam step); peak = peak RSS growth "
               "during the timed epochs",
               ["dataset", "model", "framework", "median ms", "p10–p90 ms", "peak MiB", "others"],
               [_row_cells(r) for r in res["rows"]], caption=head,
               right={"median ms", "p10–p90 ms", "peak MiB", "others"})
    t = c["targets"]
    cols = ["dataset", "model", "sgnn ms", "PyG ms (path)", "DGL ms", "sgnn/PyG speedup", "sgnn/DGL speedup",
            "sgnn / PyG peak"]
    print_grid(f"sgnn vs PyG (fastest path) and DGL per case; ✓/✗: targets ≥ {t['vs_pyg']}× PyG, "
               f"≥ {t['vs_dgl']}× DGL, GAT peak ≤ {t['gat_memory_vs_pyg']}× PyG's on "
               f"{t['gat_memory_dataset']}", cols, [_case_cells(s, t) for s in res["summary"]],
               caption=header_lines(info), right=set(cols[2:]))
    print_targets(res["targets"])
    note = load_note(res["rows"])
    if note:
        stdout.print(note, highlight=False)


def _row_cells(r: dict) -> list:
    spread = f"{ms(r['p10_ms'])}–{ms(r['p90_ms'])}" if "p10_ms" in r else r.get("error", "")[:60]
    others = f"{r['others_cores']:.2f}" if "others_cores" in r else ""
    return [r["dataset"], r["model"], r["framework"], ms(r.get("median_ms")), spread,
            _mib(r.get("peak_rss_mib")), others]


def _case_cells(s: dict, t: dict) -> list:
    mem = f"{_mib(s['sgnn_peak_mib'])} / {_mib(s['pyg_peak_mib'])}"
    if s["model"] == "gat" and s["dataset"] == t["gat_memory_dataset"]:
        mem += f" = {_x(s['mem_vs_pyg'], t['gat_memory_vs_pyg'], False)}"
    return [s["dataset"], s["model"], ms(s["sgnn_ms"]), f"{ms(s['pyg_ms'])} ({s['pyg_path'] or '—'})",
            ms(s["dgl_ms"]), _x(s["vs_pyg"], t["vs_pyg"]), _x(s["vs_dgl"], t["vs_dgl"]), mem]


def run(cfg, out_dir) -> dict:
    """The training benchmark; writes results.json / results.csv to ``out_dir`` and returns the results."""
    import sgnn
    b, quiet = cfg.bench, Quiet(cfg.quiet)
    bad = [f for f in b.frameworks if f not in TRAINERS]
    if bad:
        raise ValueError(f"bench.frameworks: expected some of {sorted(TRAINERS)} (got {bad})")
    rows, graphs, order = [], {}, []
    for c, g in cases.graphs(cfg, b.datasets):
        graphs[g.name] = cases.graph_info(g)
        for model in b.models:
            rows += bench_case(cases.case(c, g.name, str(model)), g, b, quiet)
            order.append((g.name, str(model)))
        del g
        release_memory()
    summary = summarise(rows, order)
    res = {"bench": "train", "machine": {**machine_info(), "sgnn": sgnn.__version__}, "versions": versions(),
           "config": OmegaConf.to_container(b), "graphs": graphs, "rows": rows, "summary": summary,
           "targets": targets(summary, b.targets)}
    report(res)
    write_results(out_dir, res)
    return res
