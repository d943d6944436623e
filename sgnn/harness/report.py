"""Output: progress bars, the rich table, results.json / results.csv, and the bar charts."""
from __future__ import annotations

import contextlib
import csv
import importlib.metadata
import json
import math
import platform
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

COLUMNS = ("framework", "version", "dataset", "dataset_name", "model", "stand_in", "accuracy_comparable",
           "status", "error", "test_accuracy", "median_ms", "mean_ms", "std_ms", "min_ms", "repetitions",
           "warmup", "threads", "speedup_vs_pytorch", "argmax_agreement", "max_abs_diff", "agrees", "warning",
           "train_median_ms", "train_std_ms", "train_framework",
           "nodes", "edges", "features", "classes", "hidden", "layers", "epochs", "weights", "weights_key",
           "note", "versions")
COLORS = {"pytorch": "#7f7f7f", "pyg": "#ff7f0e", "dgl": "#1f77b4", "sgnn": "#2ca02c"}
console = Console(stderr=True)                                 # progress, status, warnings
stdout = Console(width=None if sys.stdout.isatty() else 180)     # the table and result paths
wide = Console(width=None if sys.stdout.isatty() else 250)       # benchmark tables (many columns)


@contextlib.contextmanager
def progress(desc: str, total: int | None, enabled: bool = True):
    """A rich progress bar; yields ``advance(**fields)`` (fields update the description suffix)."""
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}")]
    with Progress(*cols, console=console, disable=not enabled, transient=False) as bar:
        task = bar.add_task(desc, total=total, info="")
        yield lambda n=1, info="": bar.update(task, advance=n, info=info)


def versions() -> dict:
    """Versions of python, torch, torch_geometric, dgl, sgnn and the repo's git commit."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "torch_geometric", "dgl", "sgnn"):
        try:
            out[dist] = importlib.metadata.version(dist.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed" if dist != "sgnn" else "source tree"
    try:
        git = ["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty"]
        done = subprocess.run(git, check=False, capture_output=True, text=True, timeout=10)
        out["git"] = done.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        out["git"] = "?"
    return out


def _fmt(v, spec: str, suffix: str = "") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:{spec}}{suffix}"


def _ms(v: float) -> str:
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def print_table(rows: list[dict], title: str, multi: bool | None = None) -> None:
    """framework, test accuracy, median/mean/std ms, speedup vs PyTorch, agreement, status (plus dataset
    and model columns when ``multi``, by default when the rows hold several)."""
    multi = len({(r["dataset"], r["model"]) for r in rows}) > 1 if multi is None else multi
    t = Table(title=title, title_justify="left")
    train = any(r.get("train_median_ms") is not None for r in rows)
    for c in (["dataset", "model"] if multi else []) + ["framework", "version", "test acc", "median ms",
                                                        "mean ± std ms", "vs pytorch", "agrees"] \
            + (["train ms/epoch"] if train else []):
        t.add_column(c, justify="left" if c in ("dataset", "model", "framework", "version") else "right",
                     no_wrap=c != "dataset")
    for r in rows:
        acc = _fmt(r["test_accuracy"], ".1%") + ("" if r["accuracy_comparable"] else "*")
        spread = "-" if r["mean_ms"] is None else f"{r['mean_ms']:.2f} ± {r['std_ms']:.2f}"
        agrees = {True: "yes", False: f"[yellow]NO ({_fmt(r['argmax_agreement'], '.2%')})[/]", None: "-"}
        cells = [r["framework"], r["version"], acc, _fmt(r["median_ms"], ".2f"), spread,
                 _fmt(r["speedup_vs_pytorch"], ".2f", "x"), agrees[r["agrees"]]]
        if train:
            cells.append("[red]error[/]" if r.get("train_error") else _fmt(r.get("train_median_ms"), ".2f"))
        if r["status"] != "ok":
            cells[2:] = ["[red]error (below)[/]"] + [""] * (len(cells) - 3)
        t.add_row(*([r["dataset"], r["model"]] if multi else []), *cells)
    stdout.print(t)
    if any(not r["accuracy_comparable"] for r in rows):
        stdout.print("* accuracy not comparable to published numbers (stand-in or synthetic data)")
    for r in rows:
        if r["status"] != "ok":
            stdout.print(f"[red]{r['framework']}[/] ({r['dataset']}, {r['model']}): {r['error']}")


def write_json(obj, path: Path) -> None:
    """``obj`` (rows, or a benchmark's results dict) as indented JSON; the folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def write_rows_csv(rows: list[dict], path: Path) -> None:
    """A benchmark's rows as CSV: the union of their scalar fields, in first-seen order."""
    cols = list(dict.fromkeys(k for r in rows for k, v in r.items() if not isinstance(v, (dict, list))))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def print_grid(title: str, columns: list[str], rows: list[list], right=(), section_by: int | None = 0,
               caption: list[str] = ()) -> None:
    """A benchmark table: ``caption`` lines first (e.g. the machine header), cells printed with str(),
    a rule where column ``section_by`` changes, columns named in ``right`` right-aligned."""
    for line in caption:
        wide.print(line, markup=False, highlight=False, soft_wrap=True)
    t = Table(title=title, title_justify="left")
    for h in columns:
        t.add_column(h, justify="right" if h in right else "left", no_wrap=True)
    prev = None
    for r in rows:
        cells = ["" if c is None else str(c) for c in r]
        if section_by is not None and prev is not None and cells[section_by] != prev:
            t.add_section()
        prev = cells[section_by] if section_by is not None else None
        t.add_row(*cells)
    wide.print(t)


def print_targets(targets: list[dict]) -> None:
    """PASS / FAIL / n/a lines of ``{"pass": bool | None, "what": str}``."""
    for t in targets:
        mark = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]n/a [/]"}[t["pass"]]
        wide.print(f"{mark}  {t['what']}", highlight=False, soft_wrap=True)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            vs = r.get("versions") or {}
            w.writerow({**r, "versions": "; ".join(f"{k} {v}" for k, v in vs.items())})


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def bar_chart(rows: list[dict], path: Path, title: str) -> None:
    """Median forward time per framework (error bar: std), labelled with ms and speedup vs PyTorch."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    names = [r["framework"] for r in rows]
    med = [r["median_ms"] or 0.0 for r in rows]
    bars = ax.bar(names, med, yerr=[r["std_ms"] or 0.0 for r in rows], capsize=4,
                  color=[COLORS.get(n, "#9467bd") for n in names])
    for b, r in zip(bars, rows):
        text = "error" if r["status"] != "ok" else f"{_ms(r['median_ms'])} ms\n" + _fmt(
            r["speedup_vs_pytorch"], ".2f", "x vs pytorch")
        top = b.get_height() + (r["std_ms"] or 0.0)
        ax.annotate(text, (b.get_x() + b.get_width() / 2, top), ha="center", va="bottom",
                    xytext=(0, 4), textcoords="offset points", fontsize=9)
    ax.set_ylabel("median forward time (ms, lower is better)")
    ax.set_ylim(0, max([m + (r["std_ms"] or 0.0) for m, r in zip(med, rows)] + [1e-3]) * 1.3)
    fig.suptitle(title, fontsize=10)
    vs = rows[0].get("versions", {}) if rows else {}
    ax.set_title(", ".join(f"{k} {v}" for k, v in vs.items()), fontsize=7, color="gray")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def speedup_figure(rows: list[dict], path: Path, baseline: str = "pytorch") -> None:
    """One panel per model, datasets on x, one bar per framework: speedup vs ``baseline`` (Scorch-style).
    Tick labels give the baseline's median ms; a log axis is used when speedups span more than 10x."""
    plt = _plt()
    ok = [r for r in rows if r["status"] == "ok" and r["framework"] != baseline and r["speedup_vs_pytorch"]]
    order = ("gcn", "sage", "gat")
    models = sorted({r["model"] for r in rows}, key=lambda m: (order.index(m) if m in order else 9, m))
    frameworks = [f for f in ("sgnn", "pyg", "dgl") if any(r["framework"] == f for r in ok)]
    frameworks += sorted({r["framework"] for r in ok} - set(frameworks))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    k = max(len(models), 1)
    fig, axes = plt.subplots(1, k, figsize=(1.2 + 1.6 * max(len(datasets), 2) * k, 5.2), squeeze=False,
                             sharey=True, layout="constrained")
    width, labelled = 0.8 / max(len(frameworks), 1), set()
    speedups = [r["speedup_vs_pytorch"] for r in ok] or [1.0]
    for ax, model in zip(axes[0], models):
        for j, fw in enumerate(frameworks):
            for i, ds in enumerate(datasets):
                hit = [r for r in ok if (r["model"], r["framework"], r["dataset"]) == (model, fw, ds)]
                if hit:
                    s = hit[0]["speedup_vs_pytorch"]
                    x = i + (j - (len(frameworks) - 1) / 2) * width
                    ax.bar(x, s, width, color=COLORS.get(fw, "#9467bd"), label=None if fw in labelled else fw)
                    labelled.add(fw)
                    ax.annotate(f"{s:.2f}", (x, s), ha="center", va="bottom", fontsize=7,
                                xytext=(0, 2), textcoords="offset points")
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_xticks(range(len(datasets)), [_tick(rows, model, ds, baseline) for ds in datasets], fontsize=7)
        ax.set_title(model.upper())
    if max(speedups) / min(speedups) > 10:
        lo, hi = min(speedups) / 1.5, max(speedups) * 1.5
        axes[0][0].set_yscale("log")
        axes[0][0].set_ylim(lo, hi)
        ticks = [t * 10.0 ** e for e in range(-3, 4) for t in (1, 2, 5) if lo <= t * 10.0 ** e <= hi]
        axes[0][0].set_yticks(ticks, [f"{t:g}" for t in ticks])
        axes[0][0].minorticks_off()
    axes[0][0].set_ylabel(f"speedup vs {baseline} (higher is better)")
    threads = sorted({r["threads"] for r in rows})
    fig.suptitle(f"Full-graph inference, median forward time vs {baseline} "
                 f"({'/'.join(map(str, threads))} threads)", fontsize=10)
    handles = [h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]]
    if handles:
        fig.legend(handles, [h.get_label() for h in handles], loc="outside lower center",
                   ncols=len(handles), fontsize=8)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _tick(rows: list[dict], model: str, dataset: str, baseline: str) -> str:
    base = [r for r in rows if (r["model"], r["dataset"], r["framework"]) == (model, dataset, baseline)]
    ms = f"\n{baseline} {_ms(base[0]['median_ms'])} ms" if base and base[0]["median_ms"] else ""
    return _wrap(dataset) + ms


def _wrap(label: str) -> str:
    return label.replace(" (", "\n(").replace(": ", ":\n")


def write_results(out_dir: Path, results: dict) -> None:
    """A benchmark entry's results.json (machine header, config, rows, targets) and results.csv (rows)."""
    write_json(results, Path(out_dir) / "results.json")
    if results.get("rows"):
        write_rows_csv(results["rows"], Path(out_dir) / "results.csv")
    csv_note = ", results.csv" if results.get("rows") else ""
    stdout.print(f"results: {Path(out_dir) / 'results.json'}{csv_note}")


def load_note(rows: list[dict], threshold: float = 0.2) -> str | None:
    """How busy other processes were while the rows were timed (None when nothing was measured)."""
    loads = [r["others_cores"] for r in rows if isinstance(r.get("others_cores"), float)
             and not math.isnan(r["others_cores"])]
    if not loads:
        return None
    busy = max(loads)
    return (f"{'WARNING' if busy >= threshold else 'note'}: other processes used up to {busy:.2f} cores "
            f"during timed sections (mean {sum(loads) / len(loads):.2f})"
            + ("; rows with a high 'others' value are unreliable" if busy >= threshold else ""))


def busy_note(*rows, threshold: float = 0.3) -> str:
    """' [UNRELIABLE: ...]' when other processes were busy while any of these rows was timed."""
    busy = [f"{r['framework']} {r['others_cores']:.2f}" for r in rows
            if r is not None and (r.get("others_cores") or 0.0) >= threshold]
    return f" [UNRELIABLE: other processes used cores while timing: {', '.join(busy)}]" if busy else ""


def ms(v: float | None) -> str:
    """Milliseconds with 3 significant-ish digits (— for None)."""
    if v is None:
        return "—"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:.0f}"
