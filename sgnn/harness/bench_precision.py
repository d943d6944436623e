"""``python run.py bench=precision``: accuracy and speed of sgnn inference in bfloat16 / float16 next to
float32, per (dataset, model, training seed).

Per case: the float32 PyG model is trained by the harness (``train.load_or_train``, weight cache; the
training seed is ``cfg.seed`` = each of ``bench.seeds``), and its sgnn twin (``models.sgnn_forward``)
runs full-graph inference per precision: float32; ``mixed``, the float32 model and features under
``sgnn.config(precision="bf16")`` (bfloat16 aggregation, float32 outputs); the model cast by
``.bfloat16()`` with bfloat16 features; ``.half()`` with float16 features. sgnn float32 is first checked against PyG float32
(``cfg.check``); it is then the reference of the narrow runs. Per row:

- test accuracy and its difference to float32 in points;
- argmax agreement with sgnn float32 over all nodes;
- relative error, per node ``r_i = max_j |y_ij - y32_ij| / (max_j |y32_ij| + eps)`` (the row's largest
  deviation over its largest float32 logit, eps = 1e-12), reported as max and mean over all nodes;
- median inference ms (under inference_mode), its ratio to float32, and the load while timing (other
  processes' cores, the 1-minute load average).

A summary per (dataset, model, precision) aggregates the seeds; targets (``bench.targets``) on graphs
whose accuracy is comparable (Planetoid, not a stand-in): min argmax agreement over seeds >=
``agreement`` and |mean accuracy - float32 mean accuracy| <= ``accuracy_points`` points; on any graph,
the speed ratio to float32 of ``speedup_vs_fp32`` (per dataset and precision).
"""
from __future__ import annotations

import copy
import os
import statistics
import traceback
import types
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict

from . import cases
from .machine import Quiet, header_lines, log, machine_info
from .memory import release_memory
from .models import sgnn_forward
from .pipeline import check
from .report import (load_note, ms, print_grid, print_targets, stdout, versions, write_json,
                     write_results)
from .timing import adaptive_repetitions, time_calls
from .train import accuracy, load_or_train

PRECISIONS = {"fp32": (torch.float32, "float"), "mixed": (torch.float32, "float"),
              "bf16": (torch.bfloat16, "bfloat16"), "fp16": (torch.float16, "half")}
MIXED = {"mixed": "bf16"}  # precisions run as a float32 model under sgnn.config(precision=...)
EPS = 1e-12


def rel_errors(y: torch.Tensor, ref: torch.Tensor, eps: float = EPS) -> tuple[float, float]:
    """(max, mean) over rows of ``max_j |y_ij - ref_ij| / (max_j |ref_ij| + eps)``."""
    if y.shape != ref.shape:
        raise ValueError(f"rel_errors: expected equal shapes (got {tuple(y.shape)} and {tuple(ref.shape)})")
    if y.numel() == 0:
        return 0.0, 0.0
    y, ref = y.float(), ref.float()
    r = (y - ref).abs().amax(dim=1) / (ref.abs().amax(dim=1) + eps)
    return float(r.max()), float(r.mean())


def compare(y: torch.Tensor, ref: torch.Tensor, data) -> dict:
    """Test accuracy of ``y``, its argmax agreement with ``ref`` (all nodes) and relative errors."""
    worst, mean = rel_errors(y, ref)
    agree = float((y.float().argmax(-1) == ref.float().argmax(-1)).float().mean()) if y.numel() else 1.0
    return {"test_accuracy": accuracy(y.float(), data.y, data.test_mask), "argmax_agreement": agree,
            "max_rel_error": worst, "mean_rel_error": mean}


def forward(net, data, precision: str, build=sgnn_forward):
    """sgnn inference of ``net`` cast by ``.float()/.bfloat16()/.half()``, features in that dtype (a
    ``MIXED`` precision: float32, each call under ``sgnn.config(precision=...)``); ``build``: another
    framework's twin builder (models.FRAMEWORKS) instead of sgnn's."""
    dtype, cast = PRECISIONS[precision]
    twin = getattr(copy.deepcopy(net), cast)()
    fn = build(twin, types.SimpleNamespace(x=data.x.to(dtype), edge_index=data.edge_index,
                                           num_nodes=int(data.num_nodes)))
    if precision not in MIXED:
        return fn
    import sgnn

    def mixed():
        with sgnn.config(precision=MIXED[precision]):
            return fn()
    return mixed


def timed(fn, b, quiet: Quiet) -> tuple[dict, torch.Tensor]:
    """The first output of ``fn`` and its median time (adaptive repetitions) with the load meanwhile."""
    with torch.inference_mode():
        out = fn()
        reps, _ = adaptive_repetitions(fn, int(b.repetitions), int(b.min_repetitions), float(b.budget_s))
        t, load = quiet.timed(lambda: time_calls(fn, reps, int(b.warmup)))
    return {**t.asdict(), **load, "loadavg_1m": os.getloadavg()[0]}, out


def run_precision(net, data, p: str, ref, b, quiet: Quiet) -> tuple[dict, torch.Tensor | None]:
    """One precision's row (compared with ``ref``, sgnn float32; None: this is float32) and output."""
    row = {"precision": p}
    try:
        t, y = timed(forward(net, data, p), b, quiet)
        row.update(t, dtype=str(y.dtype).replace("torch.", ""))
        row.update(compare(y, y if ref is None else ref, data))
    except Exception as e:                          # one precision failing must not stop the others
        row.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        log(f"ERROR {p}:\n{row['traceback']}")
        return row, None
    return row, y


def bench_seed(c, graph, b, quiet: Quiet, show: bool) -> list[dict]:
    """Train (or load) the float32 weights of one seed, then every precision's row."""
    d = graph.data
    net, tinfo = load_or_train(c, d, cases.num_classes(graph), show)
    with torch.inference_mode():
        pyg = net(d.x, d.edge_index)
    base = {"dataset": graph.name, "label": graph.label, "stand_in": graph.stand_in,
            "accuracy_comparable": graph.accuracy_comparable, "model": c.model.name, "seed": int(c.seed),
            "weights": tinfo["weights"], "val_accuracy": tinfo["val_accuracy"], "epochs": int(c.model.epochs)}
    rows, ref = [], None
    for p in b.precisions:
        row, y = run_precision(net, d, str(p), ref, b, quiet)
        if p == "fp32":
            if y is None:                           # no reference: the narrow rows cannot be compared
                return [{**base, **row}]
            ref = y
            row["vs_pyg"] = {k: v for k, v in check(pyg, y, c.check).items() if k != "warning"}
        rows.append({**base, **row})
    _ratios(rows)
    return rows


def _ratios(rows: list[dict]) -> None:
    """Accuracy difference (points) and speed ratio of every row to the float32 row of its seed."""
    ref = next(r for r in rows if r["precision"] == "fp32")
    for r in rows:
        if "test_accuracy" in r:
            r["accuracy_delta_points"] = 100 * (r["test_accuracy"] - ref["test_accuracy"])
        if "median_ms" in r:
            r["speedup_vs_fp32"] = ref["median_ms"] / r["median_ms"]


def seeds_for(b, dataset: str) -> list[int]:
    """``bench.seeds``, the first ``bench.max_seeds[dataset]`` of them when given."""
    seeds = [int(s) for s in b.seeds]
    cap = (b.get("max_seeds") or {}).get(dataset)
    return seeds[:int(cap)] if cap is not None else seeds


def bench_graph(c, graph, b, quiet: Quiet, show: bool) -> list[dict]:
    """Every (model, seed) of one loaded graph."""
    rows = []
    for model in b.models:
        for seed in seeds_for(b, graph.name):
            mc = cases.case(c, graph.name, str(model))
            with open_dict(mc):
                mc.seed = seed
                if graph.stand_in and "epochs" in mc.dataset.get("stand_in", {}):
                    mc.model.epochs = int(mc.dataset.stand_in.epochs)   # as the e2e entry: stand-in epochs
            got = bench_seed(mc, graph, b, quiet, show)
            log(f"{graph.name} {model} seed {seed}: " + ", ".join(
                f"{r['precision']} acc {r['test_accuracy']:.3f} agree {r['argmax_agreement']:.4f} "
                f"{r['median_ms']:.2f} ms" for r in got if "median_ms" in r))
            rows += got
            release_memory()
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (dataset, model, precision), over seeds: mean ± std accuracy, its difference to float32, min
    agreement, worst max and mean of mean relative error, median of the per-seed median times."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "median_ms" in r:
            groups.setdefault((r["dataset"], r["model"], r["precision"]), []).append(r)
    out = []
    for (ds, model, p), rs in groups.items():
        acc = [r["test_accuracy"] for r in rs]
        ref = groups.get((ds, model, "fp32"), rs)
        out.append({"dataset": ds, "label": rs[0]["label"], "model": model, "precision": p, "seeds": len(rs),
                    "accuracy_comparable": rs[0]["accuracy_comparable"],
                    "test_accuracy_mean": statistics.fmean(acc),
                    "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                    "accuracy_delta_points": 100 * (statistics.fmean(acc) -
                                                    statistics.fmean(r["test_accuracy"] for r in ref)),
                    "min_argmax_agreement": min(r["argmax_agreement"] for r in rs),
                    "max_rel_error": max(r["max_rel_error"] for r in rs),
                    "mean_rel_error": statistics.fmean(r["mean_rel_error"] for r in rs),
                    "median_ms": statistics.median(r["median_ms"] for r in rs),
                    "speedup_vs_fp32": statistics.median(r["speedup_vs_fp32"] for r in rs),
                    "fp32_agrees_with_pyg": all(r["vs_pyg"]["agrees"] for r in ref if "vs_pyg" in r)})
    return out


def targets(summary: list[dict], rows: list[dict], t) -> list[dict]:
    """PASS/FAIL: sgnn fp32 agrees with PyG fp32 (every case); on comparable graphs every narrow
    precision's min agreement >= ``t.agreement`` and |Δ mean accuracy| <= ``t.accuracy_points``."""
    res = [{"pass": False, "what": f"{r['dataset']} {r['model']} seed {r['seed']} {r['precision']}: error "
                                   f"({r['error']})"} for r in rows if "error" in r]
    for s in summary:
        case = f"{s['label']} · {s['model'].upper()}"
        res += _speed_target(s, case, t)
        if s["precision"] == "fp32":
            res.append({"pass": s["fp32_agrees_with_pyg"],
                        "what": f"{case}: sgnn fp32 agrees with PyG fp32 (the reference) in all {s['seeds']} "
                                f"seed(s)"})
            continue
        if not s["accuracy_comparable"]:
            continue
        a, d = s["min_argmax_agreement"], s["accuracy_delta_points"]
        res.append({"pass": a >= float(t.agreement),
                    "what": f"{case} {s['precision']}: argmax agreement with fp32 {a:.2%} (min of "
                            f"{s['seeds']} seeds; target ≥ {float(t.agreement):.0%})"})
        res.append({"pass": abs(d) <= float(t.accuracy_points),
                    "what": f"{case} {s['precision']}: test accuracy {s['test_accuracy_mean']:.2%} vs fp32 "
                            f"{d:+.2f} points (mean of {s['seeds']} seeds; target within "
                            f"±{float(t.accuracy_points)} points)"})
    return res


def _speed_target(s: dict, case: str, t) -> list[dict]:
    """The issue's speed ratio (e.g. bf16 >= 2x fp32 on arXiv): ``t.speedup_vs_fp32[dataset][precision]``."""
    need = ((t.get("speedup_vs_fp32") or {}).get(s["dataset"]) or {}).get(s["precision"])
    if need is None:
        return []
    v = s["speedup_vs_fp32"]
    what = (f"{case} {s['precision']}: inference {v:.2f}× fp32 (median of {s['seeds']} seed(s); "
            f"target ≥ {need}×; speed: indicative)")
    return [{"pass": v >= float(need), "what": what}]


ROW_COLUMNS = ["dataset", "model", "seed", "precision", "test acc", "Δ acc (pt)", "argmax agree",
               "max rel err", "mean rel err", "median ms", "vs fp32", "others", "load 1m"]
SUMMARY_COLUMNS = ["dataset", "model", "precision", "seeds", "test acc (mean ± std)", "Δ acc (pt)",
                   "min agree", "max rel err", "mean rel err", "median ms", "vs fp32"]


def _row_cells(r: dict) -> list:
    head = [r["label"], r["model"], r["seed"], r["precision"]]
    if "median_ms" not in r:
        return head + ["ERROR", r.get("error", "")[:60]] + [""] * 7
    return head + [f"{r['test_accuracy']:.2%}", f"{r['accuracy_delta_points']:+.2f}",
                   f"{r['argmax_agreement']:.2%}", f"{r['max_rel_error']:.2e}", f"{r['mean_rel_error']:.2e}",
                   ms(r["median_ms"]), f"{r['speedup_vs_fp32']:.2f}×", f"{r['others_cores']:.2f}",
                   f"{r['loadavg_1m']:.2f}"]


def _summary_cells(s: dict) -> list:
    return [s["label"], s["model"], s["precision"], s["seeds"],
            f"{s['test_accuracy_mean']:.2%} ± {100 * s['test_accuracy_std']:.2f}",
            f"{s['accuracy_delta_points']:+.2f}", f"{s['min_argmax_agreement']:.2%}",
            f"{s['max_rel_error']:.2e}",
            f"{s['mean_rel_error']:.2e}", ms(s["median_ms"]), f"{s['speedup_vs_fp32']:.2f}×"]


def report(res: dict) -> None:
    """Header (lscpu model name and flags), the per-seed rows, the summary, targets, load note."""
    info = res["machine"]
    head = header_lines(info) + [
        f"torch {info['torch']}, sgnn {info['sgnn']}; {info['threads']} threads; load average at start "
        f"{res['loadavg_start']}",
        "relative error per node: max_j |y_ij - y32_ij| / (max_j |y32_ij| + 1e-12), y32 = sgnn float32; "
        "agreement: argmax vs sgnn float32 over all nodes"]
    head += [f"graph {k}: {g['label']}; {g['nodes']:,} nodes, {g['edges']:,} edges. {g['note']}".rstrip()
             for k, g in res["graphs"].items()]
    print_grid("sgnn inference in mixed (fp32 model, bf16 aggregation) / bf16 / fp16 vs fp32 per training seed (others: cores used by other "
               "processes while timing; load 1m: os.getloadavg)", ROW_COLUMNS,
               [_row_cells(r) for r in res["rows"]], caption=head, right=set(ROW_COLUMNS[2:]) - {"precision"})
    print_grid("Summary over seeds (Δ acc: mean accuracy minus fp32 mean accuracy; min agree: worst seed)",
               SUMMARY_COLUMNS, [_summary_cells(s) for s in res["summary"]],
               right=set(SUMMARY_COLUMNS[3:]))
    print_targets(res["targets"])
    note = load_note(res["rows"])
    if note:
        stdout.print(note, highlight=False)


def run(cfg, out_dir) -> dict:
    """The precision benchmark; writes results.json / results.csv to ``out_dir`` and returns the results."""
    import sgnn
    b, quiet = cfg.bench, Quiet(cfg.quiet)
    precisions = [str(p) for p in b.precisions]
    if not precisions or precisions[0] != "fp32" or any(p not in PRECISIONS for p in precisions):
        raise ValueError(f"bench.precisions: expected fp32 first, then some of mixed, bf16, fp16 (got {precisions})")
    res = {"bench": "precision", "machine": {**machine_info(), "sgnn": sgnn.__version__},
           "versions": versions(), "config": OmegaConf.to_container(b),
           "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()), "graphs": {}, "rows": []}
    for c, g in cases.graphs(cfg, b.datasets):
        res["graphs"][g.name] = cases.graph_info(g)
        res["rows"] += bench_graph(c, g, b, quiet, bool(cfg.progress))
        write_json(res, Path(out_dir) / "results.partial.json")    # what a stopped run has measured
        del g
        release_memory()
    res["summary"] = summarise(res["rows"])
    res["targets"] = targets(res["summary"], res["rows"], b.targets)
    report(res)
    write_results(out_dir, res)
    return res
