"""Partitioned full-graph inference with sgnn.distributed, checked against one process.

    torchrun --nproc-per-node=P experiments/dist_inference.py dataset=products model=sage parts=P \\
        data.allow_stand_in=true [hidden=128 layers=3 heads=4 method=metis seed=0 threads=1 out=FILE]

Settings: configs/dist_inference.yaml (Hydra overrides; ``dataset=``, ``model=``, ``data.*``,
``dataset.stand_in.*`` are the harness's config groups). Steps: under a file lock, the first rank runs
``mode=partition`` (load the dataset, partition, save one file per part with its features) and
``mode=reference`` (one-process inference, saved) as subprocesses, so their memory never counts in a
rank's peak. Then every rank loads its part, runs the model once to warm up (kernel compiles) on a tiny
graph and ``warm_passes`` times untimed on its own, then ``repeats`` timed passes per ``overlap`` setting
(``both``: on and off interleaved, the first of each pair alternating), layer by layer. Per exchange
(``DistGraph.log``): ``transfer`` = start to completion of the halo transfer, ``exposed`` = the time the
rank spent on it instead of computing (checks, packing, starting it, blocked in its wait), ``wait`` = a
barrier before it (load imbalance); compute = layer time - exposed - wait. Medians over the repeats.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from filelock import FileLock
from omegaconf import OmegaConf

from .. import SparseTensor
from ..distributed import DistGraph, as_csr, partition, save_partition
from ..distributed.common import as_tensor
from ..distributed.storage import VERSION
from ..layers import GATConv, GCNConv, SAGEConv
from . import data
from .machine import header_lines, machine_info
from .memory import GIB, MIB, vm_hwm_bytes
from .report import print_grid, write_json
from .timing import set_threads


def gib(b) -> float:
    return round(b / GIB, 3)


# --- data, model --------------------------------------------------------------------------------------

def dataset_key(cfg) -> str:
    text = OmegaConf.to_yaml(cfg.dataset) + str(cfg.data.allow_stand_in) + str(cfg.data.root)
    return f"{cfg.dataset.name}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def graph_arrays(cfg) -> dict:
    """CSR (rows = targets), features, label of the dataset: the products stand-in straight from its
    cached CSR, anything else through the harness loader."""
    ds, d = cfg.dataset, cfg.data
    root, cache = data.resolve_root(d.root), Path(str(d.cache)).expanduser()
    if ds.kind == "ogb_products" and data.products_missing(root) and d.allow_stand_in:
        cg = data.products_stand_in(ds, root, cache)
        return {"rowptr": cg.rowptr, "col": cg.col, "x": cg.x, "classes": int(ds.stand_in.classes),
                "label": data.community_graphs.stand_in_label(ds.name), "stand_in": True, "symmetric": True}
    g = data.load(cfg)
    rowptr, col = as_csr(g.data.edge_index, g.data.num_nodes)
    return {"rowptr": rowptr, "col": col, "x": g.data.x, "classes": int(g.data.y.max()) + 1,
            "label": g.label, "stand_in": g.stand_in, "symmetric": True}


def build_model(cfg, in_dim: int, classes: int) -> list:
    """``cfg.layers`` sgnn convolutions with weights from ``cfg.seed`` (the same in every process)."""
    torch.manual_seed(int(cfg.seed))
    name, h, n, heads = cfg.model.name, int(cfg.hidden), int(cfg.layers), int(cfg.heads)
    dims = [in_dim] + [h] * (n - 1) + [classes]
    if name == "gat":
        return [GATConv(a, b // heads if i < n - 1 else b, heads=heads if i < n - 1 else 1)
                for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))]
    conv = {"gcn": GCNConv, "sage": SAGEConv}[name]
    return [conv(a, b) for a, b in zip(dims[:-1], dims[1:])]


def run_layers(layers, x, graph, act: str, on_layer=None) -> torch.Tensor:
    with torch.inference_mode():
        for i, conv in enumerate(layers):
            t0, c0 = time.perf_counter(), time.thread_time()
            x = conv(x, graph)
            if i < len(layers) - 1:
                x = torch.nn.functional.elu(x) if act == "elu" else x.relu_()
            if on_layer:
                on_layer(i, time.perf_counter() - t0, time.thread_time() - c0)
    return x


def warmup_graph(n: int = 64, seed: int = 0) -> torch.Tensor:
    """A small symmetric power-law edge_index for warm-up passes (compiles the kernels, not timed)."""
    ei = data.power_law_edges(n, 4 * n, torch.Generator().manual_seed(seed))
    return data.symmetric_edges(ei, n)


def _adjacency(ei: torch.Tensor, n: int, dtype: torch.dtype) -> SparseTensor:
    rowptr, col = as_csr(ei, n)
    return SparseTensor.from_csr(rowptr.to(dtype), col.to(dtype), None, (n, n), sort=True)


# --- the two subprocess steps ---------------------------------------------------------------------------

def do_partition(cfg, part_dir: Path) -> None:
    t0 = time.perf_counter()
    a = graph_arrays(cfg)
    n = (a["rowptr"].size if isinstance(a["rowptr"], np.ndarray) else a["rowptr"].numel()) - 1
    t1 = time.perf_counter()
    parts = partition((a["rowptr"], a["col"]), n, int(cfg.parts), str(cfg.method), symmetric=a["symmetric"],
                      seed=int(cfg.seed))
    t2 = time.perf_counter()
    info = {"dataset": a["label"], "stand_in": a["stand_in"], "method": str(cfg.method),
            "seed": int(cfg.seed), "classes": a["classes"],
            "edge_cut": edge_cut(a["rowptr"], a["col"], parts), "load_s": round(t1 - t0, 2),
            "partition_s": round(t2 - t1, 2)}
    info["peak_rss_gib"] = gib(vm_hwm_bytes())
    save_partition(part_dir, (a["rowptr"], a["col"]), n, parts, node_data={"x": a["x"]},
                   info={**info, "save_s": round(time.perf_counter() - t2, 2)})


def edge_cut(rowptr, col, parts: torch.Tensor) -> float:
    """Fraction of stored edges between two parts (chunked)."""
    rowptr, col = as_tensor(rowptr).long(), as_tensor(col)
    rows = torch.repeat_interleave(parts, rowptr[1:] - rowptr[:-1])
    cut, step = 0, 1 << 24
    for lo in range(0, col.numel(), step):
        cut += int((rows[lo:lo + step] != parts[col[lo:lo + step].long()]).sum())
    return cut / max(col.numel(), 1)


def do_reference(cfg, ref_file: Path) -> None:
    a = graph_arrays(cfg)
    rowptr, col = as_tensor(a["rowptr"]), as_tensor(a["col"])
    n = rowptr.numel() - 1
    adj = SparseTensor.from_csr(rowptr.to(col.dtype), col, None, (n, n))
    x = as_tensor(a["x"]).float()
    layers, act = build_model(cfg, x.shape[1], a["classes"]), cfg.model.get("act", "relu")
    times = []
    run_layers(layers, torch.randn(64, x.shape[1]), _adjacency(warmup_graph(), 64, col.dtype), act)
    out = run_layers(layers, x, adj, act, lambda i, s, c: times.append((round(s, 3), round(c, 3))))
    np.save(ref_file.with_suffix(".tmp.npy"), out.numpy())
    os.replace(ref_file.with_suffix(".tmp.npy"), ref_file)
    stats = {"layer_s": [t for t, _ in times], "layer_cpu_s": [c for _, c in times],
             "total_s": round(sum(t for t, _ in times), 3), "peak_rss_gib": gib(vm_hwm_bytes()),
             "nodes": n, "nonzeros": int(col.numel()), "dataset": a["label"]}
    write_json(stats, ref_file.with_suffix(".json"))


def prepare(cfg, step) -> tuple[Path, Path]:
    """Partition and reference files (made once, by whichever rank gets the lock first); ``step(mode,
    target)`` runs one of the two steps as a subprocess."""
    base = Path(str(cfg.data.cache)).expanduser() / "dist" / dataset_key(cfg)
    part_dir = Path(str(cfg.part_dir)) if cfg.part_dir else base / f"{cfg.method}-p{cfg.parts}-s{cfg.seed}-v{VERSION}"
    ref = base / f"ref-{cfg.model.name}-h{cfg.hidden}-l{cfg.layers}-k{cfg.heads}-s{cfg.seed}.npy"
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base) + ".lock"):
        if not (part_dir / "manifest.json").exists():
            step("partition", part_dir)
        if cfg.check and not ref.exists():
            step("reference", ref)
    return part_dir, ref


def subprocess_step(script: Path, overrides: list[str], out_dir: Path):
    """``step(mode, target)``: ``script`` with the run's overrides and ``mode=``, ``target=``, outside
    torchrun's rank environment, its Hydra output under ``out_dir/<mode>``."""
    def step(mode: str, target: Path) -> None:
        print(f"[dist_inference] {mode}: -> {target}", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        own = [o for o in overrides if not o.startswith(("mode=", "target="))]
        subprocess.run([sys.executable, str(script), *own, f"mode={mode}", f"target={target}",
                        f"hydra.run.dir={out_dir / mode}"], check=True, env=env)
    return step


# --- the distributed run ----------------------------------------------------------------------------------

def timed_forward(dg, layers, act: str, x: torch.Tensor) -> tuple[list[dict], torch.Tensor]:
    """One forward pass, layer by layer: seconds, communication split out of ``dg.log``."""
    rows = []

    def record(i, seconds, cpu):
        spent = sum(e["seconds"] for e in dg.log)
        wait = sum(e["wait_s"] for e in dg.log)
        rows.append({"layer": i, "total_s": seconds, "compute_s": seconds - spent, "exposed_s": spent - wait,
                     "transfer_s": sum(e["transfer_s"] for e in dg.log),
                     "blocked_s": sum(e["blocked_s"] for e in dg.log), "cpu_s": cpu, "wait_s": wait,
                     "exchanges": len(dg.log), "bytes_sent": sum(e["bytes_sent"] for e in dg.log),
                     "bytes_recv": sum(e["bytes_recv"] for e in dg.log)})
        dg.log.clear()
        dist.barrier()

    dg.log.clear()
    dist.barrier()
    out = run_layers(layers, x, dg, act, record)
    return rows, out


MODES = {"on": (True,), "off": (False,), "both": (True, False)}


def timed_passes(cfg, dg, layers, act: str) -> tuple[dict, dict]:
    """``repeats`` passes per overlap setting, interleaved: ({"on"/"off": [layer rows per pass]}, {setting:
    the output of its last pass})."""
    if str(cfg.overlap) not in MODES:
        raise SystemExit(f"dist_inference: overlap must be one of {sorted(MODES)} (got {cfg.overlap!r})")
    x = dg.node_data.pop("x").float()
    x = dg.source_buffer(x.shape, x.dtype).copy_(x)     # with room for its halo: exchanged without a copy
    for _ in range(int(cfg.warm_passes)):               # untimed: this graph's degrees, buffers, page faults
        timed_forward(dg, layers, act, x)
    passes, outs = {}, {}
    for rep in range(int(cfg.repeats)):
        order = MODES[str(cfg.overlap)]
        for on in order if rep % 2 == 0 else order[::-1]:
            dg.overlap = on
            rows, outs["on" if on else "off"] = timed_forward(dg, layers, act, x)
            passes.setdefault("on" if on else "off", []).append(rows)
    return passes, outs


def medians(passes: list[list[dict]]) -> list[dict]:
    """Per layer, the median of each timed field over the passes (counts from the first pass)."""
    out = []
    for i, first in enumerate(passes[0]):
        row = dict(first)
        for k in ("total_s", "compute_s", "exposed_s", "transfer_s", "blocked_s", "cpu_s", "wait_s"):
            row[k] = float(np.median([p[i][k] for p in passes]))
        out.append(row)
    return out


def distributed(cfg, part_dir: Path, ref: Path) -> dict | None:
    """Every rank: load its part, warm up, the timed passes, gather; rank 0 returns the results."""
    if "RANK" not in os.environ:                            # parts=1 without torchrun
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=int(cfg.timeout)))
    rank, world = dist.get_rank(), dist.get_world_size()
    t0 = time.perf_counter()
    dg = DistGraph.load(part_dir)
    load_s = time.perf_counter() - t0
    manifest = json.loads((part_dir / "manifest.json").read_text())
    layers = build_model(cfg, dg.node_data["x"].shape[1], _classes(ref, manifest))
    act = cfg.model.get("act", "relu")
    tiny = DistGraph.from_global(warmup_graph(), 64, torch.arange(64) % world)
    run_layers(layers, torch.randn(tiny.num_local, dg.node_data["x"].shape[1]), tiny, act)   # warm-up
    dg.separate_wait = True
    dg.log.clear()
    passes, outs = timed_passes(cfg, dg, layers, act)
    modes = {m: medians(p) for m, p in passes.items()}
    interior = int(dg.part.rowptr[dg.num_interior]) if dg.num_local else 0
    mine = {"rank": rank, "local": dg.num_local, "interior": dg.num_interior, "halo": dg.num_halo,
            "halo_fraction": dg.halo_fraction, "nonzeros": int(dg.part.col.numel()), "interior_nonzeros": interior,
            "load_s": round(load_s, 2), "layers": modes.get("on", modes.get("off")), "modes": modes,
            "passes": passes, "peak_rss_gib": gib(vm_hwm_bytes())}
    full = {m: dg.gather(o) for m, o in outs.items()}
    mine["peak_rss_after_gather_gib"] = gib(vm_hwm_bytes())
    ranks = [None] * world
    dist.all_gather_object(ranks, mine)
    result = None
    if rank == 0:
        checks = {m: _check(f, ref, cfg.check) for m, f in full.items()}
        worst = max(checks.values(), key=lambda c: c.get("relative_error", 0.0))
        result = {"ranks": ranks, "manifest_info": manifest["info"], "check": {**worst, "modes": checks},
                  "ab": ab_ratios(ranks)}
    dist.destroy_process_group()
    return result


def ab_ratios(ranks: list[dict]) -> dict:
    """Overlap on / off: per pass pair, the slowest rank's forward time; their ratios and medians."""
    if not all("on" in r["passes"] and "off" in r["passes"] for r in ranks):
        return {}
    def slowest(mode):
        return [max(sum(row["total_s"] for row in r["passes"][mode][i]) for r in ranks)
                for i in range(len(ranks[0]["passes"][mode]))]
    on, off = slowest("on"), slowest("off")
    ratios = [a / b for a, b in zip(on, off)]
    return {"on_s": on, "off_s": off, "ratios": ratios, "median_on_s": float(np.median(on)),
            "median_off_s": float(np.median(off)), "median_ratio": float(np.median(ratios))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _classes(ref: Path, manifest: dict) -> int:
    if ref.exists():
        return int(np.load(ref, mmap_mode="r").shape[1])
    return int(manifest["info"].get("classes", 0)) or 47


def _check(full: torch.Tensor, ref: Path, check: bool) -> dict:
    if not check:
        return {"checked": False}
    r = torch.from_numpy(np.load(ref))
    err = float((full - r).norm() / r.norm())
    return {"checked": True, "relative_error": err, "max_abs_diff": float((full - r).abs().max()),
            "ok": err <= 1e-5, "reference": json.loads(ref.with_suffix(".json").read_text())}


def report(cfg, res: dict) -> None:
    """The machine header, one table per rank and one per layer (maxima over the ranks), the check."""
    ranks, info, chk = res["ranks"], res["manifest_info"], res["check"]
    title = (f"{info['dataset']} · {cfg.model.name.upper()} · {cfg.layers} layers, hidden {cfg.hidden} · "
             f"P={cfg.parts} ({info['method']}, edge cut {info['edge_cut']:.1%}) · "
             f"{cfg.threads} thread(s)/rank")
    print_grid(title, ["rank", "local", "interior rows (nonzeros)", "halo", "halo/local", "nonzeros",
                       "peak RSS GiB (after gather)"],
               [[r["rank"], r["local"], f"{r['interior'] / max(r['local'], 1):.1%} "
                 f"({r['interior_nonzeros'] / max(r['nonzeros'], 1):.1%})", r["halo"], f"{r['halo_fraction']:.3f}",
                 r["nonzeros"], f"{r['peak_rss_gib']:.2f} ({r['peak_rss_after_gather_gib']:.2f})"] for r in ranks],
               right=("local", "halo", "halo/local", "nonzeros"), section_by=None,
               caption=header_lines(res["machine"]))
    cols = [("total_s", "total s"), ("compute_s", "compute s"), ("cpu_s", "cpu s"), ("transfer_s", "transfer s"),
            ("exposed_s", "exposed s"), ("wait_s", "wait s")]
    rows = []
    for mode in res["ranks"][0]["modes"]:
        for i in range(int(cfg.layers)):
            ls = [r["modes"][mode][i] for r in ranks]
            rows.append([mode, i, *(f"{max(x[k] for x in ls):.4g}" for k, _ in cols),
                         f"{max(x['bytes_sent'] for x in ls) / MIB:.4g}", ls[0]["exchanges"]])
    print_grid(f"per layer, overlap on/off, median of {cfg.repeats} pass(es), maximum over the ranks",
               ["overlap", "layer", *(h for _, h in cols), "MiB sent/rank", "exchanges"], rows,
               right=(*(h for _, h in cols), "MiB sent/rank"), section_by=0)
    if res.get("ab"):
        ab = res["ab"]
        print(f"forward pass (slowest rank), median: overlap on {ab['median_on_s']:.4g} s, off "
              f"{ab['median_off_s']:.4g} s; on/off per interleaved pair {[round(r, 3) for r in ab['ratios']]}, "
              f"median {ab['median_ratio']:.3f}")
    if chk["checked"]:
        ref = chk["reference"]
        verdict = "ok" if chk["ok"] else "FAIL"
        print(f"vs one process: relative error {chk['relative_error']:.2e} ({verdict}), "
              f"one-process time {ref['total_s']:.4g} s (cpu {sum(ref['layer_cpu_s']):.4g} s), "
              f"peak RSS {ref['peak_rss_gib']:.2f} GiB")


def main(cfg, script: Path, overrides: list[str], out_dir: Path) -> dict | None:
    """One rank's run (or, with ``mode=partition|reference``, one of the steps); rank 0 prints the
    report, writes the results JSON and returns the results (SystemExit(1) when the check fails)."""
    if OmegaConf.is_missing(cfg, "parts"):
        raise SystemExit("dist_inference: parts=P is required (one part per rank)")
    set_threads(int(cfg.threads))
    if cfg.mode == "partition":
        return do_partition(cfg, Path(str(cfg.target)))
    if cfg.mode == "reference":
        return do_reference(cfg, Path(str(cfg.target)))
    if int(os.environ.get("WORLD_SIZE", "1")) != int(cfg.parts):
        raise SystemExit(f"dist_inference: parts={cfg.parts} needs as many ranks (torchrun "
                         f"--nproc-per-node={cfg.parts}); this run has {os.environ.get('WORLD_SIZE', 1)}")
    part_dir, ref = prepare(cfg, subprocess_step(script, overrides, out_dir))
    res = distributed(cfg, part_dir, ref)
    if res is None:
        return None
    res.update({"overrides": overrides, "machine": machine_info(), "config": OmegaConf.to_container(cfg)})
    report(cfg, res)
    out = Path(str(cfg.out)) if cfg.out else out_dir / "results.json"
    write_json(res, out)
    print(f"results: {out}")
    if res["check"].get("ok") is False:
        raise SystemExit(1)
    return res
