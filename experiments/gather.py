"""Gather a Hydra multirun of run.py into one table and one figure of speedups vs PyTorch.

    python experiments/gather.py multirun/2026-11-24/05-10-00 [--out DIR]

Reads every <job>/results.json (and <job>/error.json of jobs stopped by missing data); writes
gathered.json, gathered.csv and speedups.png (one panel per model, datasets on x, one bar per
framework) to --out (default: the multirun dir) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without install

from sgnn.harness.report import print_table, speedup_figure, stdout, write_csv, write_json

DATASETS = ("cora", "citeseer", "pubmed", "arxiv", "synthetic")
MODELS = ("gcn", "sage", "gat")
FRAMEWORKS = ("pytorch", "pyg", "dgl", "sgnn")


def _rank(seq, v) -> int:
    return seq.index(v) if v in seq else len(seq)


def gather(root: Path) -> tuple[list[dict], list[dict]]:
    """(result rows of every job, errors of jobs that stopped), in dataset, model, framework order."""
    rows = [r for p in sorted(root.rglob("results.json")) for r in json.loads(p.read_text())]
    errors = [{**json.loads(p.read_text()), "job": str(p.parent)} for p in sorted(root.rglob("error.json"))]
    rows.sort(key=lambda r: (_rank(DATASETS, r["dataset_name"]), r["dataset"], _rank(MODELS, r["model"]),
                             _rank(FRAMEWORKS, r["framework"])))
    return rows, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("multirun", type=Path, help="a multirun directory of run.py (or any parent of jobs)")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: the multirun dir)")
    args = ap.parse_args(argv)
    rows, errors = gather(args.multirun)
    if not rows and not errors:
        print(f"gather: expected results.json files under {args.multirun} (found none)", file=sys.stderr)
        return 1
    out = args.out or args.multirun
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        runs = len({(r["dataset"], r["model"]) for r in rows})
        print_table(rows, f"{runs} runs from {args.multirun}", multi=True)
        write_json(rows, out / "gathered.json")
        write_csv(rows, out / "gathered.csv")
        speedup_figure(rows, out / "speedups.png")
    for e in errors:
        stdout.print(f"[red]not run[/] {e['dataset']} × {e['model']}: {e['error']}")
    stdout.print(f"wrote {out / 'gathered.json'}, gathered.csv, speedups.png" if rows else "no results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
