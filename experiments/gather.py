"""Gather a Hydra multirun of run.py into one table per entry.

    python experiments/gather.py multirun/2026-11-24/05-10-00 [--out DIR]

bench=e2e jobs (the default): every <job>/results.json (and <job>/error.json of jobs stopped by missing
data) becomes gathered.json, gathered.csv and speedups.png (one panel per model, datasets on x, one bar
per framework). Other entries (bench=spmm, layers, train, scale): their rows are concatenated into
gathered-<bench>.json / .csv (each row names its job), and every job's PASS/FAIL lines are printed.
Output goes to --out (default: the multirun dir).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without install

from sgnn.harness.report import (
    print_table,
    print_targets,
    speedup_figure,
    stdout,
    write_csv,
    write_json,
    write_rows_csv,
)

DATASETS = ("cora", "citeseer", "pubmed", "arxiv", "products", "synthetic")
MODELS = ("gcn", "sage", "gat")
FRAMEWORKS = ("pytorch", "pyg", "dgl", "sgnn")


def _rank(seq, v) -> int:
    return seq.index(v) if v in seq else len(seq)


def gather(root: Path) -> tuple[list[dict], list[dict], dict[str, list[dict]]]:
    """(e2e rows of every job, errors of jobs that stopped, {bench: results of its jobs})."""
    rows, benches = [], {}
    for p in sorted(root.rglob("results.json")):
        got = json.loads(p.read_text())
        if isinstance(got, dict) and "bench" in got:
            benches.setdefault(got["bench"], []).append({**got, "job": str(p.parent)})
        else:
            rows += got
    errors = [{**json.loads(p.read_text()), "job": str(p.parent)} for p in sorted(root.rglob("error.json"))]
    rows.sort(key=lambda r: (_rank(DATASETS, r["dataset_name"]), r["dataset"], _rank(MODELS, r["model"]),
                             _rank(FRAMEWORKS, r["framework"])))
    return rows, errors, benches


def write_e2e(rows: list[dict], root: Path, out: Path) -> None:
    runs = len({(r["dataset"], r["model"]) for r in rows})
    print_table(rows, f"{runs} runs from {root}", multi=True)
    write_json(rows, out / "gathered.json")
    write_csv(rows, out / "gathered.csv")
    speedup_figure(rows, out / "speedups.png")


def write_bench(name: str, jobs: list[dict], out: Path) -> None:
    rows = [{**r, "job": j["job"]} for j in jobs for r in j.get("rows", [])]
    for j in jobs:
        stdout.print(f"[bold]bench={name}[/] {j['job']}: {len(j.get('rows', []))} rows")
        print_targets(j.get("targets", []))
    write_json({"bench": name, "jobs": [j["job"] for j in jobs], "machine": jobs[0].get("machine"),
                "rows": rows, "targets": [t for j in jobs for t in j.get("targets", [])]},
               out / f"gathered-{name}.json")
    if rows:
        write_rows_csv(rows, out / f"gathered-{name}.csv")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("multirun", type=Path, help="a multirun directory of run.py (or any parent of jobs)")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: the multirun dir)")
    args = ap.parse_args(argv)
    rows, errors, benches = gather(args.multirun)
    if not rows and not errors and not benches:
        print(f"gather: expected results.json files under {args.multirun} (found none)", file=sys.stderr)
        return 1
    out = args.out or args.multirun
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        write_e2e(rows, args.multirun, out)
    for name, jobs in benches.items():
        write_bench(name, jobs, out)
    for e in errors:
        stdout.print(f"[red]not run[/] {e.get('bench', 'e2e')} {e['dataset']} × {e['model']}: {e['error']}")
    written = (["gathered.json, gathered.csv, speedups.png"] if rows else []) + \
        [f"gathered-{name}.json" for name in benches]
    stdout.print(f"wrote {', '.join(written)} to {out}" if written else "no results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
