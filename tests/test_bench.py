"""The benchmark entries of the one harness (bench=spmm, layers, train, scale, accuracy): config groups,
case composition, and smoke runs on tiny synthetic graphs (1-2 repetitions, no waiting for a quiet machine)."""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sgnn.harness import compose, load, main
from sgnn.harness.cases import case
from sgnn.harness.machine import header_lines, machine_info
from sgnn.harness.pipeline import ENTRIES
from sgnn.harness.timing import Timing

REPO = Path(__file__).resolve().parents[1]
TINY = ["dataset=synthetic", "dataset.nodes=300", "dataset.edges=1500", "dataset.features=16",
        "dataset.classes=4", "threads=1", "progress=false", "quiet.wait_s=0", "quiet.retries=0",
        "quiet.sample_s=0"]


def entry(name: str, tmp_path: Path, *extra: str) -> list[str]:
    """Overrides of a tiny run of ``bench=name`` on the synthetic graph."""
    return [f"bench={name}", "bench.datasets=[synthetic]", *TINY, *cache(tmp_path), *extra]


def cache(tmp_path: Path) -> list[str]:
    return [f"data.cache={tmp_path / 'data'}"]


# --- configs -------------------------------------------------------------------------------------

def test_bench_group_defaults_to_e2e_and_each_entry_has_its_settings():
    e2e = compose(["dataset=cora", "model=gcn"])
    assert e2e.bench.name == "e2e" and e2e.bench.repetitions == 50 and not e2e.data.allow_stand_in
    spmm = compose(["bench=spmm"]).bench
    assert list(spmm.datasets) == ["cora", "pubmed", "arxiv"] and list(spmm.features) == [16, 64, 128, 256]
    assert list(compose(["bench=layers"]).bench.models) == ["gcn", "sage", "gat", "gcn2", "sage2", "gat2"]
    train = compose(["bench=train"])
    assert list(train.bench.datasets) == ["cora", "citeseer", "pubmed", "arxiv"] and train.bench.epochs >= 20
    assert train.data.allow_stand_in and train.threads == 2
    scale = compose(["bench=scale", "bench.limits.dgl.timeout_min=3"]).bench
    assert scale.memory_limit_gib == 20 and scale.limits.dgl.timeout_min == 3
    assert (scale.model_overrides.gat.heads, scale.model_overrides.gat.hidden) == (4, 64)


def test_case_swaps_dataset_and_model_groups_and_keeps_the_selected_overrides():
    cfg = compose(TINY)
    assert case(cfg, "synthetic").dataset.nodes == 300                 # the command line's graph
    gat = case(cfg, "arxiv", "gat")
    assert (gat.dataset.name, gat.model.hidden, gat.model.heads) == ("arxiv", 32, 8)   # dataset_model sizes
    assert case(cfg, "synthetic", "sage", {"layers": 3}).model.layers == 3
    assert cfg.model.name == "gcn" and cfg.dataset.nodes == 300         # cfg itself unchanged


def test_same_seed_same_graph_in_every_entry(tmp_path):
    a = load(case(compose(["bench=spmm", *cache(tmp_path)]), "synthetic")).data
    b = load(compose(["dataset=synthetic", *cache(tmp_path)])).data
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.x, b.x)


def test_machine_header():
    info = machine_info()
    lines = header_lines(info)
    assert info["cpu"] in lines[0] and lines[1].startswith("flags: ") and info["flags"] in lines[1]


def test_timing_quantiles():
    t = Timing.of([float(v) for v in range(1, 12)], warmup=2)
    assert (t.median_ms, t.min_ms, t.p10_ms, t.p90_ms, t.repetitions) == (6.0, 1.0, 2.0, 10.0, 11)


def test_every_bench_config_is_an_entry_with_a_module():
    assert {"e2e", "spmm", "layers", "train", "scale", "accuracy"} <= set(ENTRIES)
    for name in ENTRIES:
        assert compose([f"bench={name}"]).bench.name == name
        if name != "e2e":
            assert callable(importlib.import_module(f"sgnn.harness.bench_{name}").run)
    assert not (REPO / "experiments" / "common.py").exists()     # no second copy of the harness helpers


# --- smoke runs ----------------------------------------------------------------------------------

def test_spmm_entry(tmp_path):
    res = main(entry("spmm", tmp_path,
        "bench.features=[16]", "bench.repetitions=2", "bench.min_repetitions=1", "bench.warmup=1",
        "bench.bandwidth_mib=8", "bench.bandwidth_reps=2", "bench.gather_reps=2", "bench.new_process_runs=1",
        "bench.warm_calls=20"), tmp_path / "out")
    rows = res["rows"]
    assert [r["framework"] for r in rows] == ["sgnn", "torch.sparse.mm", "dgl", "scipy"]
    for r in rows:
        assert "error" not in r, r.get("traceback")
        assert r["median_ms"] > 0 and r["floor_fraction"] > 0 and r["roofline_fraction"] > 0
        assert r["stream_fraction"] > 0 and r["achieved_gb_per_s"] > 0
        assert r["probe_understates"] == (r["roofline_fraction_best"] > 1)
        assert r["roofline_fraction_best"] >= r["roofline_fraction"]
        assert r["framework"] == "sgnn" or (r["verified"] and r["sgnn_speedup"] > 0)
    (roof,) = res["gather_roofline"]
    assert roof["nnz"] == rows[0]["nnz"] and roof["n"] == rows[0]["n"] and roof["best_gb_per_s"] > 0
    assert set(roof["candidates"]) == {"probe ahead=0", "probe ahead=8", "probe ahead=16", "probe ahead=32",
                                       "probe ahead=64", "probe ahead=128", "embedding_bag"}
    understated = [r for r in rows if r["probe_understates"]]
    assert any("PROBE UNDERSTATES" in t["what"] for t in res["targets"]) == bool(understated)
    assert {"first_compile", "warm_call", "new_process"} <= set(res["latency"]) and not res["errors"]
    what = " ".join(t["what"] for t in res["targets"])
    assert "first compile" in what and "new process" in what and "warm in-process call" in what
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["machine"]["flags"] == machine_info()["flags"]
    assert (tmp_path / "out" / "results.csv").exists()


def test_layers_entry(tmp_path):
    res = main(entry("layers", tmp_path, "bench.models=[gcn,gat2]", "bench.repetitions=2",
                     "bench.frameworks=[pyg,pyg-cached,pyg-csr,dgl,sgnn]", "bench.min_repetitions=1"),
               tmp_path / "out")
    rows = res["rows"]
    assert [(r["model"], r["framework"]) for r in rows] == [
        ("gcn", "pyg"), ("gcn", "pyg-cached"), ("gcn", "pyg-csr"), ("gcn", "dgl"), ("gcn", "sgnn"),
        ("gat2", "pyg"), ("gat2", "pyg-csr"), ("gat2", "dgl"), ("gat2", "sgnn")]
    for r in rows:
        assert "error" not in r, r.get("traceback")
        assert r["median_ms"] > 0 and r["peak_rss_mib"] >= 0 and r["mem_method"] in ("VmHWM", "sampler")
        assert r.get("check") == "ref" or r["verified"]
    assert any("peak ΔRSS" in t["what"] for t in res["targets"])


def test_train_entry(tmp_path):
    res = main(entry("train", tmp_path, "bench.models=[gcn,gat]", "bench.warmup=1", "bench.epochs=2",
                     "bench.targets.gat_memory_dataset=synthetic"), tmp_path / "out")
    assert all("error" not in r and r["median_ms"] > 0 and "peak_rss_mib" in r for r in res["rows"])
    assert {r["framework"] for r in res["rows"]} == {"sgnn", "pyg", "pyg-csr", "dgl"}
    gcn, gat = res["summary"]
    assert gcn["pyg_path"] in ("pyg", "pyg-csr") and gcn["vs_pyg"] > 0 and gcn["vs_dgl"] > 0
    assert gat["mem_vs_pyg"] is not None
    assert sum("peak ΔRSS" in t["what"] for t in res["targets"]) == 1 and len(res["targets"]) == 5


def test_accuracy_entry_trains_both_from_the_same_weights(tmp_path):
    res = main(entry("accuracy", tmp_path, "bench.models=[gcn,sage]", "bench.seeds=2", "model.epochs=20"),
               tmp_path / "out")
    assert [(r["model"], r["seeds"]) for r in res["rows"]] == [("gcn", 2), ("sage", 2)]
    for r in res["rows"]:
        assert 0 < r["pyg_mean"] <= 1 and 0 < r["sgnn_mean"] <= 1 and r["sgnn_seconds"] > 0
        assert r["diff_points"] == pytest.approx(100 * (r["sgnn_mean"] - r["pyg_mean"]))
        assert r["within_target"] == (abs(r["diff_points"]) <= 1.0)
    assert len(res["targets"]) == 2 and (tmp_path / "out" / "results.csv").exists()


def test_scale_entry_records_oom_and_timeout_per_subprocess(tmp_path):
    res = main(entry("scale", tmp_path, "bench.models=[sage]", "bench.frameworks=[sgnn,pyg,dgl]",
                     "bench.repetitions=1", "bench.limits.pyg.memory_limit_gib=0.001",
                     "bench.limits.dgl.timeout_min=0.005"), tmp_path / "out")
    by = {r["framework"]: r for r in res["rows"]}
    assert by["sgnn"]["status"] == "ok", by["sgnn"].get("traceback") or by["sgnn"].get("error")
    sg = by["sgnn"]
    assert sg["wall_ms"] > 0 and sg["peak_rss_mib"] >= sg["base_rss_mib"] > 0 and sg["delta_mib"] >= 0
    assert sg["budget_mib"] > 0 and isinstance(sg["within_budget"], bool) and sg["hidden"] == 256
    assert by["pyg"]["status"] == "oom", by["pyg"]
    assert by["dgl"]["status"] == "timeout" and "did not finish in 0.005 min" in by["dgl"]["error"]
    assert Path(by["pyg"]["log"]).exists() and "no peer completed" in res["targets"][-1]["what"]


def test_run_py_multirun_of_an_entry_then_gather(tmp_path):
    sweep = tmp_path / "multi"
    env = {**os.environ, "SGNN_DATA": str(tmp_path / "no-data")}
    args = [sys.executable, "run.py", "-m", *entry("train", tmp_path, "bench.models=[gcn],[sage]",
                                                  "bench.warmup=1", "bench.epochs=1",
                                                  "bench.frameworks=[sgnn,pyg]"),
            f"hydra.sweep.dir={sweep}"]
    p = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(list(sweep.rglob("results.json"))) == 2 and "sgnn/PyG speedup" in p.stdout
    g = subprocess.run([sys.executable, "experiments/gather.py", str(sweep)], cwd=REPO, capture_output=True,
                       text=True, timeout=120, check=False)
    assert g.returncode == 0, g.stderr[-2000:]
    gathered = json.loads((sweep / "gathered-train.json").read_text())
    assert {r["model"] for r in gathered["rows"]} == {"gcn", "sage"} and len(gathered["jobs"]) == 2
