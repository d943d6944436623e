"""Accuracy of training through sgnn vs PyG: the standard 200-epoch recipe, dropout on, 5 seeds.

    python experiments/train_accuracy.py [dataset ...] [--models gcn,sage,gat] [--seeds 5]

For each dataset, model and seed, one PyG model is initialised; sgnn trains ``from_pyg`` of it (the
same initial weights) and PyG trains the model itself, each with the harness's recipe (configs/model,
Adam, the best validation epoch's weights). Prints test accuracy per framework (mean ± std over the
seeds) and the difference; the target is |sgnn - PyG| ≤ 1 point. Writes ``train_accuracy.json``.
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import torch


def run(dataset: str, model: str, seeds: int) -> dict:
    from sgnn.harness import data as datasets
    from sgnn.harness.models import build_pyg
    from sgnn.harness.pipeline import compose
    from sgnn.harness.train import accuracy, train
    from sgnn.layers import from_pyg
    cfg = compose([f"dataset={dataset}", f"model={model}", "progress=false"])
    d = datasets.load(cfg).data
    classes = int(d.y.max()) + 1
    acc = {"pyg": [], "sgnn": []}
    secs = {"pyg": 0.0, "sgnn": 0.0}
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = build_pyg(cfg.model, d.num_features, classes)
        twin = from_pyg(net)
        for fw, m in (("pyg", net), ("sgnn", twin)):
            torch.manual_seed(1000 + seed)  # the same dropout stream for both
            t0 = time.perf_counter()
            train(m, d, cfg.model, show=False)
            secs[fw] += time.perf_counter() - t0
            m.eval()
            with torch.no_grad():
                acc[fw].append(accuracy(m(d.x, d.edge_index), d.y, d.test_mask))
    row = {"dataset": dataset, "model": model, "seeds": seeds}
    for fw in acc:
        row[f"{fw}_mean"] = statistics.fmean(acc[fw])
        row[f"{fw}_std"] = statistics.stdev(acc[fw]) if seeds > 1 else 0.0
        row[f"{fw}_seconds"] = round(secs[fw], 1)
    row["diff_points"] = 100 * (row["sgnn_mean"] - row["pyg_mean"])
    row["within_1_point"] = abs(row["diff_points"]) <= 1.0
    return row


def main(argv: list[str]) -> int:
    models, seeds, names = ["gcn", "sage", "gat"], 5, []
    it = iter(argv)
    for a in it:
        if a == "--models":
            models = next(it).split(",")
        elif a == "--seeds":
            seeds = int(next(it))
        else:
            names.append(a)
    torch.set_num_threads(2)
    rows = []
    for ds in names or ["cora", "citeseer", "pubmed"]:
        for m in models:
            r = run(ds, m, seeds)
            rows.append(r)
            print(f"{ds:9s} {m:5s}  pyg {100 * r['pyg_mean']:.1f} ± {100 * r['pyg_std']:.1f}  "
                  f"sgnn {100 * r['sgnn_mean']:.1f} ± {100 * r['sgnn_std']:.1f}  "
                  f"diff {r['diff_points']:+.2f} pt  {'PASS' if r['within_1_point'] else 'MISS'}  "
                  f"(train s: pyg {r['pyg_seconds']}, sgnn {r['sgnn_seconds']})", flush=True)
    with open("train_accuracy.json", "w") as f:
        json.dump(rows, f, indent=2)
    return 0 if all(r["within_1_point"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
