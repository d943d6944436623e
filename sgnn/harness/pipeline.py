"""One harness run: ``run(cfg)`` dispatches on ``cfg.bench.name``; ``e2e`` (the default) is the framework
comparison: load -> train (or cached weights) -> per framework: convert, check, time -> report."""
from __future__ import annotations

import contextlib
import gc
import importlib
import traceback
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import data as datasets
from .cases import CONFIG_DIR, compose
from .models import FRAMEWORKS, TRAINERS
from .report import bar_chart, console, print_table, progress, stdout, versions, write_csv, write_json
from .timing import bench, bench_training, threads
from .train import accuracy, load_or_train

VERSION_KEY = {"pytorch": "torch", "pyg": "torch_geometric", "pyg-csr": "torch_geometric", "dgl": "dgl",
               "sgnn": "sgnn"}
ENTRIES = ("e2e", "spmm", "layers", "train", "scale", "precision")  # bench=<name>: sgnn/harness/bench_<name>.py


def main(overrides: list[str] = (), out_dir: str | Path = ".") -> list[dict] | dict:
    """``run.py`` without Hydra's app wrapper: compose ``overrides`` and write results to ``out_dir``."""
    return run(compose(overrides), Path(out_dir))


def check(ref: torch.Tensor, out: torch.Tensor, c) -> dict:
    """Agreement of a framework's logits with PyG's: argmax agreement and allclose(rtol, atol)."""
    if out.shape != ref.shape:
        return {"agrees": False, "argmax_agreement": 0.0, "max_abs_diff": None,
                "warning": f"expected logits of shape {tuple(ref.shape)} (got {tuple(out.shape)})"}
    agree = float((out.argmax(-1) == ref.argmax(-1)).float().mean())
    diff = float((out - ref).abs().max()) if ref.numel() else 0.0
    ok = agree >= c.min_agreement and torch.allclose(out, ref, rtol=c.rtol, atol=c.atol)
    warn = "" if ok else f"argmax agreement {agree:.4%} (min {c.min_agreement:.1%}), max |diff| {diff:.3g}"
    return {"agrees": ok, "argmax_agreement": agree, "max_abs_diff": diff, "warning": warn}


def run(cfg: DictConfig, out_dir: Path) -> list[dict] | dict:
    """Run the entry ``cfg.bench.name`` with ``cfg.threads`` threads (restored afterwards), writing its
    results.json (and tables, plots) to ``out_dir``; e2e returns its rows, the others a results dict."""
    name = str(cfg.bench.get("name", "e2e"))
    if name not in ENTRIES:
        raise ValueError(f"bench: expected one of {', '.join(ENTRIES)} (got {name!r})")
    out_dir.mkdir(parents=True, exist_ok=True)
    entry = _run if name == "e2e" else importlib.import_module(f"{__package__}.bench_{name}").run
    with threads(int(cfg.threads)), warnings.catch_warnings(), _frozen_heap():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*Sparse invariant checks are implicitly disabled.*")
        warnings.filterwarnings("ignore", message=".*An issue occurred while importing.*")
        return entry(cfg, out_dir)


@contextlib.contextmanager
def _frozen_heap():
    """gc.freeze() the objects that exist now (modules, configs): the collections before every timed
    block then scan only what the run created (a full collection with torch, PyG and DGL loaded
    takes ~0.3 s)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run(cfg: DictConfig, out_dir: Path) -> list[dict]:
    show = bool(cfg.progress)
    with console.status(f"loading {cfg.dataset.name}", spinner="dots") if show else contextlib.nullcontext():
        graph = datasets.load(cfg)
    d = graph.data
    console.print(f"[bold]{graph.label}[/]: {d.num_nodes} nodes, {graph.num_edges} edges (symmetric), "
                  f"{d.num_features} features, {int(d.y.max()) + 1} classes. {graph.note}")
    if graph.stand_in and "epochs" in cfg.dataset.get("stand_in", {}):
        cfg.model.epochs = int(cfg.dataset.stand_in.epochs)
        console.print(f"stand-in: training {cfg.model.epochs} epochs (dataset.stand_in.epochs)")
    net, tinfo = load_or_train(cfg, d, int(d.y.max()) + 1, show)
    console.print(f"weights: {tinfo['weights']} ({tinfo['weights_path']}), "
                  f"val acc {tinfo['val_accuracy']:.1%}")
    with torch.inference_mode():
        ref = net(d.x, d.edge_index)
    vs = versions()
    base = _base_row(cfg, graph, tinfo, vs)
    rows = [_run_one(fw, net, graph, ref, cfg, base, show) for fw in cfg.frameworks]
    _add_speedups(rows)
    title = (f"{graph.label} · {cfg.model.name.upper()} · {cfg.threads} thread(s) · "
             f"median of {cfg.bench.repetitions} warm runs")
    print_table(rows, title)
    write_json(rows, out_dir / "results.json")
    write_csv(rows, out_dir / "results.csv")
    if cfg.plot:
        bar_chart(rows, out_dir / "times.png", title)
    stdout.print(f"results: {out_dir / 'results.json'}, results.csv" + (", times.png" if cfg.plot else ""))
    return rows


def _run_one(fw: str, net, graph, ref, cfg, base: dict, show: bool) -> dict:
    """One framework's row: convert, time, check; any failure becomes status=error for this row only."""
    row = {"framework": fw, "version": base["versions"].get(VERSION_KEY.get(fw, fw), "?"), **base}
    try:
        if fw not in FRAMEWORKS:
            raise ValueError(f"expected a framework in {sorted(FRAMEWORKS)} (got {fw!r})")
        fn = FRAMEWORKS[fw](net, graph.data, pyg_cached=bool(cfg.bench.pyg_cached))
        with progress(f"timing {fw:8s}", int(cfg.bench.repetitions), show) as advance:
            timing, out = bench(fn, int(cfg.bench.warmup), int(cfg.bench.repetitions), advance)
    except Exception as e:                # one framework failing must not stop the others
        msg = f"{type(e).__name__}: {e} (at {_where(e)})"
        console.print(f"[red]{fw}: {msg}[/]")
        return {**row, "status": "error", "error": msg}
    training = _train_timing(fw, net, graph.data, cfg, show)
    agreement = check(ref, out, cfg.check)
    warns = [f"disagrees with pyg: {agreement.pop('warning')}"] if not agreement["agrees"] else []
    if timing.std_ms > 0.5 * timing.median_ms:
        warns.append(f"noisy timings (std {timing.std_ms:.2f} ms, median {timing.median_ms:.2f} ms): "
                     f"other processes running?")
    for w in warns:
        console.print(f"[yellow]warning: {fw} {w}[/]")
    d = graph.data
    return {**row, **timing.asdict(), **agreement, **training, "status": "ok", "warning": "; ".join(warns),
            "test_accuracy": accuracy(out, d.y, d.test_mask)}


def _train_timing(fw: str, net, data, cfg, show: bool) -> dict:
    """Median ms per training epoch (forward, loss, backward, Adam step) when ``bench.train``."""
    if not cfg.bench.get("train", False):
        return {}
    try:
        forward, params = TRAINERS[fw](net, data, pyg_cached=bool(cfg.bench.pyg_cached))
        with progress(f"training {fw:6s}", int(cfg.bench.train_epochs), show) as advance:
            t = bench_training(forward, params, data, cfg.model, int(cfg.bench.train_warmup),
                               int(cfg.bench.train_epochs), advance)
    except Exception as e:  # training a twin failing must not hide its inference numbers
        msg = f"{type(e).__name__}: {e} (at {_where(e)})"
        console.print(f"[red]{fw} training: {msg}[/]")
        return {"train_error": msg}
    return {"train_median_ms": t.median_ms, "train_std_ms": t.std_ms, "train_epochs_timed": t.repetitions}


def _where(e: BaseException) -> str:
    """file:line where ``e`` was raised, relative to the repo when inside it."""
    frame = traceback.extract_tb(e.__traceback__)[-1]
    path = Path(frame.filename)
    root = CONFIG_DIR.parent
    return f"{path.relative_to(root) if path.is_relative_to(root) else path}:{frame.lineno}"


def _base_row(cfg, graph, tinfo: dict, vs: dict) -> dict:
    d, m = graph.data, cfg.model
    return {"dataset": graph.label, "dataset_name": graph.name, "model": m.name, "stand_in": graph.stand_in,
            "accuracy_comparable": graph.accuracy_comparable, "status": None, "error": None,
            "test_accuracy": None, "median_ms": None, "mean_ms": None, "std_ms": None, "min_ms": None,
            "repetitions": int(cfg.bench.repetitions), "warmup": int(cfg.bench.warmup),
            "threads": int(cfg.threads), "speedup_vs_pytorch": None, "argmax_agreement": None,
            "max_abs_diff": None, "agrees": None, "warning": "", "train_median_ms": None, "train_std_ms": None,
            "train_framework": str(cfg.train.get("framework", "pyg")), "nodes": d.num_nodes,
            "edges": graph.num_edges, "features": d.num_features, "classes": int(d.y.max()) + 1,
            "hidden": m.hidden, "layers": m.layers, "epochs": m.epochs, "weights": tinfo["weights"],
            "weights_key": tinfo["weights_key"], "val_accuracy": tinfo["val_accuracy"],
            "note": graph.note, "data_info": graph.info, "model_config": OmegaConf.to_container(m),
            "versions": vs}


def _add_speedups(rows: list[dict]) -> None:
    base = next((r["median_ms"] for r in rows if r["framework"] == "pytorch" and r["status"] == "ok"), None)
    for r in rows:
        if base and r["status"] == "ok":
            r["speedup_vs_pytorch"] = base / r["median_ms"]

