"""``python run.py bench=accuracy``: does training through sgnn reach PyG's accuracy?

For each dataset, model and seed, one PyG model is initialised (``torch.manual_seed(seed)``); sgnn trains
``from_pyg`` of it (the same initial weights) and PyG trains the model itself, each with the harness's
recipe (``train.train``: configs/model, Adam, the best validation epoch's weights) and the same dropout
stream. Reports test accuracy per framework (mean ± std over the seeds), the difference in points and
whether it is within ``bench.max_diff_points``; writes results.json / results.csv.
"""
from __future__ import annotations

import statistics
import time

import torch
from omegaconf import OmegaConf

from . import cases
from .machine import header_lines, machine_info
from .models import build_pyg
from .report import print_grid, print_targets, versions, write_results
from .train import accuracy, train

FRAMEWORKS = ("pyg", "sgnn")


def trained_accuracy(c, graph, seed: int) -> dict[str, tuple[float, float]]:
    """(test accuracy, training seconds) of PyG and of sgnn from the same initial weights."""
    from sgnn.layers import from_pyg
    d = graph.data
    torch.manual_seed(seed)
    net = build_pyg(c.model, d.num_features, cases.num_classes(graph))
    out = {}
    for fw, m in (("pyg", net), ("sgnn", from_pyg(net))):
        torch.manual_seed(1000 + seed)                    # the same dropout stream for both
        t0 = time.perf_counter()
        train(m, d, c.model, show=False)
        seconds = time.perf_counter() - t0
        m.eval()
        with torch.no_grad():
            out[fw] = (accuracy(m(d.x, d.edge_index), d.y, d.test_mask), seconds)
    return out


def bench_case(c, graph, seeds: int, max_diff: float) -> dict:
    """One dataset and model over ``seeds`` seeds: mean, std and seconds per framework, the difference."""
    runs = [trained_accuracy(c, graph, s) for s in range(seeds)]
    row = {"dataset": graph.label, "dataset_name": graph.name, "model": str(c.model.name), "seeds": seeds,
           "accuracy_comparable": graph.accuracy_comparable}
    for fw in FRAMEWORKS:
        acc = [r[fw][0] for r in runs]
        row[f"{fw}_mean"] = statistics.fmean(acc)
        row[f"{fw}_std"] = statistics.stdev(acc) if seeds > 1 else 0.0
        row[f"{fw}_seconds"] = round(sum(r[fw][1] for r in runs), 3)
    row["diff_points"] = 100 * (row["sgnn_mean"] - row["pyg_mean"])
    row["within_target"] = abs(row["diff_points"]) <= max_diff
    return row


def report(res: dict) -> None:
    def pct(r, fw):
        return f"{100 * r[f'{fw}_mean']:.1f} ± {100 * r[f'{fw}_std']:.1f}"
    cells = [[r["dataset"], r["model"], pct(r, "pyg"), pct(r, "sgnn"), f"{r['diff_points']:+.2f}",
              f"{r['pyg_seconds']} / {r['sgnn_seconds']}"] for r in res["rows"]]
    print_grid(f"test accuracy after training, {res['config']['seeds']} seed(s)",
               ["dataset", "model", "PyG %", "sgnn %", "diff pt", "train s (PyG / sgnn)"], cells,
               right=("PyG %", "sgnn %", "diff pt"), caption=header_lines(res["machine"]))
    print_targets(res["targets"])


def run(cfg, out_dir) -> dict:
    """The accuracy comparison; writes results.json / results.csv to ``out_dir`` and returns the results."""
    b, limit = cfg.bench, float(cfg.bench.max_diff_points)
    rows = []
    for c, g in cases.graphs(cfg, b.datasets):
        for model in b.models:
            rows.append(bench_case(cases.case(c, g.name, str(model)), g, int(b.seeds), limit))
    targets = [{"pass": r["within_target"], "what": f"{r['dataset']} {r['model']}: |sgnn - PyG| = "
                f"{abs(r['diff_points']):.2f} pt (target <= {limit:g})"} for r in rows]
    res = {"bench": "accuracy", "machine": machine_info(), "versions": versions(),
           "config": OmegaConf.to_container(b), "rows": rows, "targets": targets}
    report(res)
    write_results(out_dir, res)
    return res
