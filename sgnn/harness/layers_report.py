"""Tables and targets of ``bench=layers`` (bench_layers.py)."""
from __future__ import annotations

from .machine import header_lines
from .report import busy_note, load_note, ms, print_grid, print_targets, stdout

LABEL = {"gcn": "GCNConv layer", "sage": "SAGEConv layer", "gat": "GATConv layer",
         "gcn2": "GCN 2-layer", "sage2": "SAGE 2-layer", "gat2": "GAT 2-layer"}
MAIN = ["case", "framework", "median ms", "p10–p90 ms", "reps", "peak ΔRSS MiB", "setup MiB", "sgnn speedup",
        "max |err|", "agree", "check", "others"]
NARROW = ("bf16", "mixed")          # framework name suffixes: bfloat16 twins, sgnn's mixed precision


def precision_of(fw: str) -> tuple[str, str]:
    """(base framework, precision) of a name: ``pyg-bf16`` -> (pyg, bf16), ``dgl`` -> (dgl, fp32)."""
    base, _, suffix = fw.rpartition("-")
    return (base, suffix) if base and suffix in NARROW else (fw, "fp32")


def _ok(r: dict) -> bool:
    """Timed, and its output checked (the reference itself, or verified against it)."""
    return "median_ms" in r and (r.get("check") == "ref" or bool(r.get("verified")))


def _case(r) -> str:
    return f"{r['dataset']} · {LABEL[r['model']]}"


def _x(v) -> str:
    return "—" if v is None else f"{v:.2f}×"


def _main_cells(r: dict) -> list:
    fw = r["framework"] + (" (no_grad)" if r.get("grad_mode") == "no_grad" else "")
    if "median_ms" not in r:
        what = "SKIPPED" if r.get("error", "").startswith("skipped") else "ERROR"
        return [_case(r), fw, what, (r.get("why") or r.get("error", ""))[:70]] + [""] * 8
    check = r.get("check") or ("ok" if r.get("verified") else "MISMATCH")
    ref = r.get("check") == "ref"
    err = "—" if ref else f"{r['max_abs_err']:.1e}"
    agree = "—" if ref or "argmax_agreement" not in r else f"{r['argmax_agreement']:.2%}"
    return [_case(r), fw, ms(r["median_ms"]), f"{ms(r['p10_ms'])}–{ms(r['p90_ms'])}", r["repetitions"],
            f"{r['peak_rss_mib']:.1f}", f"{r['setup_rss_mib']:.1f}", _x(r.get("sgnn_speedup")), err, agree,
            check, f"{r['others_cores']:.2f}"]


def main_table(rows: list[dict], caption: list[str]) -> None:
    print_grid("Forward pass, CPU, float32 unless the framework ends in -bf16 (model and features bfloat16) "
               "or -mixed (sgnn.config(precision='bf16')); timing interleaved between frameworks; sgnn "
               "speedup = framework median / sgnn float32 median; peak ΔRSS = peak RSS growth during the "
               "timed calls; setup = RSS growth of building + first call; max |err| and agree (argmax "
               "agreement) vs PyG float32; others = cores used by other processes while timing", MAIN,
               [_main_cells(r) for r in rows], caption=caption, right=set(MAIN[2:10] + MAIN[11:]))


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
    print_grid("float32: sgnn speedup per case (framework median / sgnn median)", cols, cells,
               caption=caption, right=set(cols[1:]) - {"fastest baseline"})


def _case_rows(rows, g: str, model: str) -> dict:
    return {r["framework"]: r for r in rows if (r["dataset"], r["model"]) == (g, model)}


def fp32_peers(frameworks) -> list[str]:
    """The float32 frameworks other than sgnn, in order."""
    return [f for f in dict.fromkeys(frameworks) if precision_of(f) == (f, "fp32") and f != "sgnn"]


def targets(rows: list[dict], datasets, t, precision: list[dict] = ()) -> list[dict]:
    """GCN/SAGE 2-layer (sgnn float32) vs the fastest float32 baseline; GAT 2-layer vs PyG and DGL, and its
    peak memory; the bfloat16 targets of ``precision`` (``precision_summary``)."""
    res = []
    baselines = sorted(fp32_peers(r["framework"] for r in rows))
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
    for p in precision:
        res += _bf16_targets(p, t)
    return res


def precision_summary(rows: list[dict], order) -> list[dict]:
    """Per (dataset, 2-layer model): sgnn-bf16 (and sgnn-mixed) vs sgnn float32, and sgnn-bf16 vs the
    fastest peer in its fastest precision (rows that are timed and checked; the others are listed)."""
    out = []
    for g, model in order:
        by = _case_rows(rows, g, model)
        if not model.endswith("2") or "sgnn-bf16" not in by:
            continue
        sg, bf, mx = by.get("sgnn", {}), by["sgnn-bf16"], by.get("sgnn-mixed", {})
        peers = [r for f, r in by.items() if precision_of(f)[0] != "sgnn"]
        ok = [r for r in peers if _ok(r)]
        fastest = min(ok, key=lambda r: r["median_ms"]) if ok else None
        timed = "median_ms" in bf

        def ratio(a: dict, b: dict | None) -> float | None:
            return a["median_ms"] / b["median_ms"] if b and "median_ms" in a and "median_ms" in b else None
        out.append({"dataset": g, "model": model, "sgnn_ms": sg.get("median_ms"),
                    "sgnn_bf16_ms": bf.get("median_ms"), "sgnn_mixed_ms": mx.get("median_ms"),
                    "bf16_vs_fp32": ratio(sg, bf), "mixed_vs_fp32": ratio(sg, mx),
                    "bf16_agreement": bf.get("argmax_agreement"), "bf16_verified": bool(bf.get("verified")),
                    "bf16_error": bf.get("error"),
                    "fastest_peer": fastest and fastest["framework"],
                    "fastest_peer_ms": fastest and fastest["median_ms"],
                    "bf16_vs_fastest_peer": ratio(fastest, bf) if fastest and timed else None,
                    "peers": [r["framework"] for r in ok],
                    "peers_unchecked": [r["framework"] for r in peers if "median_ms" in r and not _ok(r)],
                    "peers_failed": {r["framework"]: r.get("why") or r.get("error", "")[:80]
                                     for r in peers if "median_ms" not in r},
                    "busy": busy_note(*[r for r in (sg, bf, fastest) if r])})
    return out


def _bf16_targets(p: dict, t) -> list[dict]:
    """``t.bf16_vs_fp32`` / ``t.bf16_vs_fastest_peer`` (per dataset): PASS needs the speed ratio and a
    checked sgnn-bf16 output (argmax agreement with PyG float32)."""
    res, case = [], f"{LABEL[p['model']]} on {p['dataset']}"
    bad = ", ".join(p["peers_unchecked"])
    left = f"; not peers, output mismatched: {bad}" if bad else ""
    agree = "n/a" if p["bf16_agreement"] is None else f"{p['bf16_agreement']:.2%}"
    check = "" if p["bf16_verified"] else f" [sgnn-bf16 output NOT verified: argmax agreement {agree}]"
    pairs = (("bf16_vs_fp32", "sgnn-bf16 vs sgnn fp32", p["sgnn_ms"]),
             ("bf16_vs_fastest_peer", f"sgnn-bf16 vs fastest peer in its fastest precision "
                                      f"({p['fastest_peer'] or 'none'} of {{{', '.join(p['peers'])}}}{left})",
              p["fastest_peer_ms"]))
    for key, what, other in pairs:
        need = ((t.get(key) or {}).get(p["dataset"]))
        if need is None:
            continue
        v = p[key]
        if v is None:
            why = p["bf16_error"] or "no timed reference"
            res.append({"pass": False, "what": f"{case}: {what}: n/a ({why[:80]}) (target ≥ {need}×)"})
            continue
        res.append({"pass": v >= float(need) and p["bf16_verified"],
                    "what": f"{case}: {what}: {v:.2f}× ({ms(p['sgnn_bf16_ms'])} vs {ms(other)} ms; "
                            f"argmax agreement {agree}; target ≥ {need}×){check}{p['busy']}"})
    return res


def precision_table(summary: list[dict], caption: list[str]) -> None:
    cols = ["case", "sgnn fp32 ms", "sgnn-mixed ms", "mixed/fp32", "sgnn-bf16 ms", "bf16/fp32",
            "bf16 agree", "fastest peer (checked)", "bf16 vs peer", "peers that could not run"]
    cells = [[f"{p['dataset']} · {LABEL[p['model']]}", ms(p["sgnn_ms"]), ms(p["sgnn_mixed_ms"]),
              _x(p["mixed_vs_fp32"]), ms(p["sgnn_bf16_ms"]), _x(p["bf16_vs_fp32"]),
              "—" if p["bf16_agreement"] is None else f"{p['bf16_agreement']:.2%}",
              f"{p['fastest_peer']} {ms(p['fastest_peer_ms'])} ms" if p["fastest_peer"] else "—",
              _x(p["bf16_vs_fastest_peer"]),
              ", ".join(p["peers_failed"]) or "—"] for p in summary]
    print_grid("bfloat16: speedup = other median / sgnn-bf16 median (mixed/fp32: sgnn fp32 / sgnn-mixed); "
               "fastest peer over every timed non-sgnn framework whose output was checked, any precision; "
               "agree: argmax agreement with PyG float32; why a peer could not run: the ERROR lines", cols,
               cells, caption=caption,
               right=set(cols[1:7] + cols[8:9]))


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
            why = f" ({r['why']})" if r.get("why") else ""
            out.append(f"{kind}  {where}{why}: {r['error'][:200]}")
        elif r.get("verified") is False:
            out.append(f"MISMATCH  {where}: max |err| {r['max_abs_err']:.3g} (max |ref| "
                       f"{r['ref_max_abs']:.3g}), argmax agreement {r.get('argmax_agreement', 0):.4f}")
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
    baselines = fp32_peers(r["framework"] for r in rows)
    summary_table(rows, res["cases"], baselines, header_lines(res["machine"]))
    if res.get("precision"):
        precision_table(res["precision"], header_lines(res["machine"]))
    print_targets(res["targets"])
    for line in _problems(res):
        stdout.print(line, highlight=False)
