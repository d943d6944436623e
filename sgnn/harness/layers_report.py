"""Tables and targets of ``bench=layers`` (bench_layers.py)."""
from __future__ import annotations

from .machine import header_lines
from .report import busy_note, load_note, ms, print_grid, print_targets, stdout

LABEL = {"gcn": "GCNConv layer", "sage": "SAGEConv layer", "gat": "GATConv layer",
         "gcn2": "GCN 2-layer", "sage2": "SAGE 2-layer", "gat2": "GAT 2-layer"}
MAIN = ["case", "framework", "median ms", "p10–p90 ms", "reps", "peak ΔRSS MiB", "setup MiB", "sgnn speedup",
        "max |err|", "check", "others"]


def _case(r) -> str:
    return f"{r['dataset']} · {LABEL[r['model']]}"


def _x(v) -> str:
    return "—" if v is None else f"{v:.2f}×"


def _main_cells(r: dict) -> list:
    fw = r["framework"] + (" (no_grad)" if r.get("grad_mode") == "no_grad" else "")
    if "median_ms" not in r:
        what = "SKIPPED" if r.get("error", "").startswith("skipped") else "ERROR"
        return [_case(r), fw, what, r.get("error", "")[:70]] + [""] * 7
    check = r.get("check") or ("ok" if r.get("verified") else "MISMATCH")
    err = "—" if r.get("check") == "ref" else f"{r['max_abs_err']:.1e}"
    return [_case(r), fw, ms(r["median_ms"]), f"{ms(r['p10_ms'])}–{ms(r['p90_ms'])}", r["repetitions"],
            f"{r['peak_rss_mib']:.1f}", f"{r['setup_rss_mib']:.1f}", _x(r.get("sgnn_speedup")), err, check,
            f"{r['others_cores']:.2f}"]


def main_table(rows: list[dict], caption: list[str]) -> None:
    print_grid("Forward pass, float32, CPU; sgnn speedup = framework median / sgnn median; peak ΔRSS = peak "
               "RSS growth during the timed calls; setup = RSS growth of building + first call; max |err| vs "
               "PyG; others = cores used by other processes while timing", MAIN,
               [_main_cells(r) for r in rows], caption=caption, right=set(MAIN[2:9] + MAIN[10:]))


def _fastest(by: dict, baselines) -> dict | None:
    done = [by[b] for b in baselines if "median_ms" in by.get(b, {})]
    return min(done, key=lambda r: r["median_ms"]) if done else None


def _summary_cells(by: dict, case: str, baselines: list[str], width: int) -> list:
    sg = by.get("sgnn")
    if sg is None or "median_ms" not in sg:
        return [case, "ERROR"] + [""] * (width - 2)
    fastest, pyg = _fastest(by, baselines), by.get("pyg", {})
    mem = f"{sg['peak_rss_mib']:.1f} / {pyg['peak_rss_mib']:.1f} MiB" if "peak_rss_mib" in pyg else "—"
    return ([case, ms(sg["median_ms"])] + [_x(by.get(b, {}).get("sgnn_speedup")) for b in baselines] +
            [f"{fastest['framework']} {ms(fastest['median_ms'])} ms" if fastest else "—",
             _x(fastest and fastest["sgnn_speedup"]), mem])


def summary_table(rows: list[dict], order, baselines: list[str], caption: list[str]) -> None:
    cols = ["case", "sgnn ms"] + [f"vs {b}" for b in baselines] + ["fastest baseline", "vs fastest",
                                                                   "sgnn/pyg peak mem"]
    cells = [_summary_cells({r["framework"]: r for r in rows if (r["dataset"], r["model"]) == (g, m)},
                            f"{g} · {LABEL[m]}", baselines, len(cols)) for g, m in order]
    print_grid("sgnn speedup per case (framework median / sgnn median)", cols, cells, caption=caption,
               right=set(cols[1:]) - {"fastest baseline"})


def _case_rows(rows, g: str, model: str) -> dict:
    return {r["framework"]: r for r in rows if (r["dataset"], r["model"]) == (g, model)}


def targets(rows: list[dict], datasets, t) -> list[dict]:
    """GCN/SAGE 2-layer vs the fastest baseline; GAT 2-layer vs PyG and DGL, and its peak memory."""
    res = []
    baselines = sorted({r["framework"] for r in rows} - {"sgnn"})
    for kind in ("gcn2", "sage2"):
        for g in datasets:
            by = _case_rows(rows, g, kind)
            need, sg, fastest = t.vs_fastest.get(g), by.get("sgnn"), _fastest(by, baselines)
            if sg is None or need is None:
                continue
            what = f"{LABEL[kind]} on {g}: sgnn vs fastest of {{{', '.join(baselines)}}}"
            if "median_ms" not in sg or fastest is None:
                res.append({"pass": False, "what": f"{what}: n/a (error) (target ≥ {need}×)"})
                continue
            s = fastest["median_ms"] / sg["median_ms"]
            res.append({"pass": s >= need,
                        "what": f"{what} ({fastest['framework']}): {s:.2f}× ({ms(sg['median_ms'])} vs "
                                f"{ms(fastest['median_ms'])} ms; target ≥ {need}×){busy_note(*by.values())}"})
    for g in datasets:
        res += _gat_targets(_case_rows(rows, g, "gat2"), g, t)
    return res


def _gat_targets(by: dict, g: str, t) -> list[dict]:
    sg, res = by.get("sgnn"), []
    if sg is None:
        return res
    for b, need in (("pyg", float(t.gat_vs_pyg)), ("dgl", float(t.gat_vs_dgl))):
        r, what = by.get(b), f"{LABEL['gat2']} on {g}: sgnn vs {b}"
        if r is None:
            continue
        if "median_ms" not in sg or "median_ms" not in r:
            why = r.get("error", sg.get("error", "error"))[:60]
            res.append({"pass": False, "what": f"{what}: n/a ({why}) (target ≥ {need}×)"})
            continue
        s = r["median_ms"] / sg["median_ms"]
        res.append({"pass": s >= need,
                    "what": f"{what}: {s:.2f}× ({ms(sg['median_ms'])} vs {ms(r['median_ms'])} ms; "
                            f"target ≥ {need}×){busy_note(sg, r)}"})
    r = by.get("pyg", {})
    if "peak_rss_mib" in r and "peak_rss_mib" in sg:
        res.append({"pass": sg["peak_rss_mib"] < r["peak_rss_mib"],
                    "what": f"{LABEL['gat2']} on {g}: sgnn peak ΔRSS {sg['peak_rss_mib']:.1f} MiB vs PyG "
                            f"{r['peak_rss_mib']:.1f} MiB (target: below PyG's)"})
    return res


def _head(res: dict) -> list[str]:
    info, v, methods = res["machine"], res["versions"], res["memory_method"]
    how = "VmHWM reset via /proc/self/clear_refs" if methods == ["VmHWM"] else "VmRSS sampled every 2 ms"
    versions_line = (f"torch {v.get('torch')}, torch_geometric {v.get('torch_geometric')}, "
                     f"dgl {v.get('dgl')}, sgnn {info['sgnn']}; {info['threads']} threads for all "
                     f"frameworks; one process")
    graphs = [f"graph {k}: {g['label']}; n={g['nodes']:,}, edges={g['edges']:,} (no self loops), "
              f"F={g['features']}, classes={g['classes']}" for k, g in res["graphs"].items()]
    memory = (f"memory: peak RSS growth during the timed calls (after malloc_trim), method "
              f"{'/'.join(methods) or 'n/a'} ({how}); state built before timing (graph caches, CSRs) is "
              f"excluded")
    return header_lines(info) + [versions_line, *graphs, memory]


def _problems(res: dict) -> list[str]:
    out = []
    for r in res["rows"]:
        where = f"{r['dataset']}/{r['model']}/{r['framework']}"
        if "error" in r:
            kind = "SKIP" if r["error"].startswith("skipped") else "ERROR"
            out.append(f"{kind}  {where}: {r['error'][:200]}")
        elif r.get("verified") is False:
            out.append(f"MISMATCH  {where}: max |err| {r['max_abs_err']:.3g} "
                       f"(max |ref| {r['ref_max_abs']:.3g})")
    n = res["notes"].get("sgnn_inference_mode")
    if n:
        out.append(f"NOTE  sgnn raised under torch.inference_mode() ({n['error']}) in {len(n['cases'])} "
                   f"case(s): {', '.join(n['cases'])}; those sgnn rows ran under torch.no_grad()")
    note = load_note(res["rows"])
    if note:
        out.append(f"{note}; waited {res['waited_s']:.0f} s in total for quiet")
    return out


def report(res: dict) -> None:
    """Header (machine, graphs, method), the two tables, targets, errors, notes."""
    rows = res["rows"]
    main_table(rows, _head(res))
    baselines = [f for f in dict.fromkeys(r["framework"] for r in rows) if f != "sgnn"]
    summary_table(rows, res["cases"], baselines, header_lines(res["machine"]))
    print_targets(res["targets"])
    for line in _problems(res):
        stdout.print(line, highlight=False)
