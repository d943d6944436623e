"""``python run.py bench=scale``: full-graph inference of 3-layer models on a large graph, one subprocess per
framework (scale_worker.py) under a memory limit and a timeout, so a peer's OOM or hang is a row, not the
end of the run.

Cases: ``bench.datasets`` x ``bench.models`` (configs/model merged with ``bench.model_overrides``:
SAGE (mean) and GCN with hidden 256, GAT 4 heads x 64), for ``bench.frameworks``: sgnn (from_pyg),
pyg (edge_index), pyg-csr (CSR adj_t), dgl; GCN's normalisation cached in PyG. Each subprocess gets
RLIMIT_AS = ``memory_limit_gib`` after its imports and ``timeout_min`` of wall time (both overridable
per framework in ``bench.limits``); its output goes to ``<out>/scale/<case>-<fw>.log``.

Columns: warm wall time (median of ``repetitions`` calls after ``warmup``), the first call (building the
framework's graph structures included), peak RSS (VmHWM), base (RSS after imports and input
construction) and peak - base; for sgnn the budget (peak - base) <= ``budget_factor`` x (CSR bytes +
2 activations of N x hidden float32). Ratios against the fastest peer that completes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from . import cases
from .data import DataMissing
from .machine import header_lines, log, machine_info
from .memory import GIB, MIB
from .report import load_note, ms, print_grid, print_targets, stdout, versions, write_results
from .scale_worker import is_oom

REPO = cases.CONFIG_DIR.parent
FRAMEWORKS = ("sgnn", "pyg", "pyg-csr", "dgl")


def limits(b, fw: str) -> tuple[float, float]:
    """(memory limit GiB, timeout minutes) of framework ``fw``."""
    own = b.limits.get(fw) or {}
    gib, minutes = own.get("memory_limit_gib"), own.get("timeout_min")
    gib, minutes = b.memory_limit_gib if gib is None else gib, b.timeout_min if minutes is None else minutes
    return float(gib), float(minutes)


def launch(c, fw: str, b, work: Path) -> dict:
    """Run one framework's subprocess; its result dict, or what is known of how it ended."""
    gib, minutes = limits(b, fw)
    stem = f"{c.dataset.name}-{c.model.name}-{fw}"
    spec, result, logf = work / f"{stem}.yaml", work / f"{stem}.json", work / f"{stem}.log"
    result.unlink(missing_ok=True)
    OmegaConf.save({"cfg": OmegaConf.to_container(c, resolve=True), "framework": fw, "warmup": int(b.warmup),
                    "repetitions": int(b.repetitions), "memory_limit_bytes": int(gib * GIB)}, spec)
    env = {**os.environ, "OMP_NUM_THREADS": str(c.threads),
           "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    base = {"framework": fw, "limit_gib": gib, "timeout_min": minutes, "log": str(logf)}
    t0 = time.perf_counter()
    with open(logf, "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "sgnn.harness.scale_worker", str(spec), str(result)],
                             cwd=str(REPO), env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=60 * minutes)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)         # the worker's own process group (started above)
            p.wait()
            return {**base, "status": "timeout", "elapsed_s": time.perf_counter() - t0,
                    "error": f"did not finish in {minutes:g} min"}
    base["elapsed_s"] = time.perf_counter() - t0
    if result.exists():
        return {**base, **json.loads(result.read_text()), "returncode": rc}
    tail = logf.read_text(errors="replace")[-3000:]
    killed = rc == -signal.SIGKILL
    return {**base, "status": "oom" if killed or is_oom(tail) else "error", "returncode": rc,
            "error": f"exited {rc} without a result" + (" (killed: out of memory?)" if killed else "")
                     + f"; log tail: {tail[-500:]}"}


def finish_row(r: dict, c, b) -> dict:
    """Derived columns: MiB figures, wall time, and sgnn's memory budget."""
    m = c.model
    r.update(dataset=str(c.dataset.name), model=str(m.name), hidden=int(m.hidden),
             heads=int(m.get("heads", 1)))
    if r.get("data_missing"):
        raise DataMissing(r["error"].split(": ", 1)[-1])
    if "base_rss" in r:
        run_peak, load_peak = r.get("run_peak_rss") or 0, r.get("load_peak_rss") or 0
        r.update(peak_rss_mib=max(run_peak, load_peak) / MIB, base_rss_mib=r["base_rss"] / MIB,
                 delta_mib=max(0, run_peak - r["base_rss"]) / MIB, load_peak_rss_mib=load_peak / MIB)
    if r["status"] == "ok":
        r["wall_ms"] = r["median_ms"]
        if r["framework"] == "sgnn":
            width = int(m.hidden) * (int(m.heads) if m.name == "gat" else 1)
            n, nnz = r["nodes"], r["edges"]
            csr = (4 if nnz < 2**31 else 8) * (n + 1) + 4 * nnz
            r["budget_mib"] = float(b.budget_factor) * (csr + 2 * n * width * 4) / MIB
            r["within_budget"] = r["delta_mib"] <= r["budget_mib"]
    return r


def compare(rows: list[dict]) -> None:
    """sgnn's speedup and memory ratio against the fastest peer that completed, per case."""
    for key in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        case = [r for r in rows if (r["dataset"], r["model"]) == key]
        sg = next((r for r in case if r["framework"] == "sgnn" and r["status"] == "ok"), None)
        peers = [r for r in case if r["framework"] != "sgnn" and r["status"] == "ok"]
        if sg is None or not peers:
            continue
        peer = min(peers, key=lambda r: r["wall_ms"])
        sg.update(fastest_peer=peer["framework"], speedup_vs_peer=peer["wall_ms"] / sg["wall_ms"],
                  memory_vs_peer=sg["delta_mib"] / max(peer["delta_mib"], 1e-9))


def targets(rows: list[dict], t, factor: float) -> list[dict]:
    res = []
    for sg in (r for r in rows if r["framework"] == "sgnn"):
        where = f"{sg['dataset']} · {sg['model'].upper()} 3-layer inference"
        if sg["status"] != "ok":
            res.append({"pass": False, "what": f"{where}: sgnn {status(sg)}"})
            continue
        res.append({"pass": sg["within_budget"],
                    "what": f"{where}: sgnn peak − base {sg['delta_mib']:.0f} MiB (budget "
                            f"{sg['budget_mib']:.0f} MiB = {factor:g} × (CSR + 2 N×hidden float32))"})
        if "fastest_peer" not in sg:
            res.append({"pass": True, "what": f"{where}: no peer completed (sgnn did)"})
            continue
        p = sg["fastest_peer"]
        res.append({"pass": sg["speedup_vs_peer"] >= float(t.speedup),
                    "what": f"{where}: sgnn vs fastest peer ({p}): {sg['speedup_vs_peer']:.2f}× "
                            f"(target ≥ {t.speedup}×)"})
        res.append({"pass": sg["memory_vs_peer"] <= float(t.memory_ratio),
                    "what": f"{where}: sgnn peak − base vs {p}'s: {sg['memory_vs_peer']:.2f}× "
                            f"(target ≤ {t.memory_ratio}×)"})
    return res


def status(r: dict) -> str:
    return {"ok": "ok", "oom": "OOM", "timeout": f"did not finish in {r.get('timeout_min', 0):g} min"}.get(
        r["status"], "error")


def _mib(v) -> str:
    return "—" if v is None else f"{v:,.0f}"


def report(res: dict) -> None:
    info = res["machine"]
    head = header_lines(info) + [f"{info['threads']} threads per subprocess; RLIMIT_AS and timeout per "
                                 f"framework: " + ", ".join(f"{fw} {g:g} GiB / {m:g} min"
                                                            for fw, (g, m) in res["limits"].items())]
    head += [f"graph {r['dataset']}: {r['label']}; n={r['nodes']:,}, edges={r['edges']:,}"
             for r in {r["dataset"]: r for r in res["rows"] if "label" in r}.values()]
    cells = [[f"{r['dataset']} · {r['model']}", r["framework"], status(r), ms(r.get("wall_ms")),
              f"{r['first_call_s']:.2f}" if "first_call_s" in r else "—", _mib(r.get("peak_rss_mib")),
              _mib(r.get("base_rss_mib")), _mib(r.get("delta_mib")),
              f"{_mib(r['budget_mib'])} {'✓' if r['within_budget'] else '✗'}" if "budget_mib" in r else "",
              f"{r['speedup_vs_peer']:.2f}× ({r['fastest_peer']})" if "speedup_vs_peer" in r else "",
              f"{r['memory_vs_peer']:.2f}×" if "memory_vs_peer" in r else "", f"{r['elapsed_s']:.0f}"]
             for r in res["rows"]]
    print_grid("Full-graph inference, 3 layers, one subprocess per framework; wall = median warm call; "
               "peak = VmHWM; base = RSS after imports and input construction; budget: sgnn's peak − base ≤ "
               f"{res['config']['budget_factor']:g} × (CSR + 2 N×hidden float32); ratios vs the fastest "
               "peer that completed",
               ["case", "framework", "status", "wall ms", "first call s", "peak MiB", "base MiB",
                "peak − base MiB", "budget MiB", "speedup", "peak−base ratio", "process s"], cells,
               caption=head,
               right={"wall ms", "first call s", "peak MiB", "base MiB", "peak − base MiB", "budget MiB",
                      "speedup", "peak−base ratio", "process s"})
    print_targets(res["targets"])
    for r in res["rows"]:
        if r["status"] != "ok":
            stdout.print(f"{status(r)}  {r['dataset']}/{r['model']}/{r['framework']}: "
                         f"{r.get('error', '')[:300]} (log: {r['log']})", highlight=False)
    note = load_note(res["rows"])
    if note:
        stdout.print(note, highlight=False)


def run(cfg, out_dir) -> dict:
    """The scale benchmark; writes results.json / results.csv (and the workers' logs) to ``out_dir``."""
    b = cfg.bench
    bad = [f for f in b.frameworks if f not in FRAMEWORKS]
    if bad:
        raise ValueError(f"bench.frameworks: expected some of {FRAMEWORKS} (got {bad})")
    work = Path(out_dir) / "scale"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in b.datasets:
        for model in b.models:
            c = cases.case(cfg, str(dataset), str(model), b.model_overrides.get(str(model)))
            for fw in b.frameworks:
                gib, minutes = limits(b, str(fw))
                log(f"{dataset}/{model}/{fw}: subprocess (limit {gib:g} GiB, {minutes:g} min)")
                rows.append(finish_row(launch(c, str(fw), b, work), c, b))
                wall = f", {rows[-1]['wall_ms']:.1f} ms" if "wall_ms" in rows[-1] else ""
                log(f"{dataset}/{model}/{fw}: {status(rows[-1])}{wall}")
    compare(rows)
    res = {"bench": "scale", "machine": machine_info(), "versions": versions(),
           "config": OmegaConf.to_container(b), "rows": rows,
           "limits": {str(fw): limits(b, str(fw)) for fw in b.frameworks},
           "targets": targets(rows, b.targets, float(b.budget_factor))}
    report(res)
    write_results(out_dir, res)
    return res
