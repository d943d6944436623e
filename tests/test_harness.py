"""The Hydra harness: config groups, end-to-end runs (synthetic, Cora), weight cache, error paths."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sgnn.harness import compose, main
from sgnn.harness.data import resolve_root

REPO = Path(__file__).resolve().parents[1]
# One thread: tests check results, not speed, and 2 OpenMP threads on 2 shared cores can stall badly.
FAST = ["dataset=synthetic", "dataset.nodes=300", "dataset.edges=1500", "dataset.features=16",
        "dataset.classes=4", "model.epochs=5", "bench.warmup=1", "bench.repetitions=3", "progress=false",
        "threads=1"]
THREE = "frameworks=[pytorch,pyg,dgl]"
REQUIRED = {"framework", "dataset", "model", "test_accuracy", "median_ms", "mean_ms", "std_ms", "repetitions",
            "speedup_vs_pytorch", "stand_in", "versions"}


def caches(tmp_path: Path) -> list[str]:
    return [f"train.cache_dir={tmp_path / 'weights'}", f"data.cache={tmp_path / 'data'}"]


def cora_root() -> Path | None:
    root = resolve_root(os.environ.get("SGNN_DATA"))
    return root if (root / "planetoid" / "Cora" / "raw" / "ind.cora.allx").exists() else None


def fake_partial_cora(tmp_path: Path) -> Path:
    """A data root whose Cora lacks ind.cora.allx (the other files are empty placeholders)."""
    raw = tmp_path / "root" / "planetoid" / "Cora" / "raw"
    raw.mkdir(parents=True)
    for s in ("x", "tx", "y", "ty", "ally", "graph", "test.index"):
        (raw / f"ind.cora.{s}").write_bytes(b"")
    return tmp_path / "root"


# --- config groups ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", [("cora", "planetoid"), ("citeseer", "planetoid"),
                                       ("pubmed", "planetoid"), ("arxiv", "ogb"), ("synthetic", "synthetic")])
def test_compose_dataset(name, kind):
    cfg = compose([f"dataset={name}"])
    assert (cfg.dataset.name, cfg.dataset.kind) == (name, kind)
    assert cfg.threads == 2 and cfg.bench.repetitions >= 50 and not cfg.data.allow_stand_in
    assert list(cfg.frameworks) == ["pytorch", "pyg", "dgl", "sgnn"]


@pytest.mark.parametrize("name,hidden,lr,dropout", [("gcn", 16, 0.01, 0.5), ("sage", 16, 0.01, 0.5),
                                                    ("gat", 8, 0.005, 0.6)])
def test_compose_model(name, hidden, lr, dropout):
    m = compose([f"model={name}"]).model
    assert (m.name, m.hidden, m.lr, m.dropout) == (name, hidden, lr, dropout)
    assert (m.weight_decay, m.layers) == (5e-4, 2)
    if name == "gat":
        assert (m.heads, m.out_heads, m.act) == (8, 1, "elu")


def test_compose_arxiv_sizes_and_overrides():
    assert compose(["dataset=arxiv", "model=gcn"]).model.hidden == 256
    gat = compose(["dataset=arxiv", "model=gat"]).model
    assert (gat.hidden, gat.heads) == (32, 8)
    assert compose(["dataset=arxiv", "model=sage", "model.hidden=64"]).model.hidden == 64
    assert compose(["dataset=arxiv"]).dataset.stand_in.edges == 1166243


def test_compose_data_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SGNN_DATA", str(tmp_path))
    assert compose([]).data.root == str(tmp_path)


# --- end to end ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["gcn", "sage", "gat"])
def test_end_to_end_synthetic(tmp_path, model):
    rows = main(FAST + caches(tmp_path) + [f"model={model}", THREE], tmp_path / "out")
    assert [r["framework"] for r in rows] == ["pytorch", "pyg", "dgl"]
    for r in rows:
        assert r["status"] == "ok" and r["agrees"], r
        assert REQUIRED <= set(r) and r["repetitions"] == 3 and r["median_ms"] > 0
    assert rows[0]["speedup_vs_pytorch"] == 1.0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["framework"] for r in saved] == ["pytorch", "pyg", "dgl"] and saved[0]["versions"]["torch"]
    with open(tmp_path / "out" / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert REQUIRED <= set(table[0]) and float(table[1]["median_ms"]) > 0
    assert (tmp_path / "out" / "times.png").stat().st_size > 10_000


def test_weight_cache_hit_on_second_run(tmp_path):
    args = FAST + caches(tmp_path) + ["frameworks=[pytorch]", "plot=false"]
    first, second = main(args, tmp_path / "a"), main(args, tmp_path / "b")
    assert (first[0]["weights"], second[0]["weights"]) == ("trained", "hit")
    assert first[0]["weights_key"] == second[0]["weights_key"]
    assert first[0]["test_accuracy"] == second[0]["test_accuracy"]
    assert len(list((tmp_path / "weights").glob("synthetic-gcn-*.pt"))) == 1
    third = main(args + ["model.hidden=8"], tmp_path / "c")          # other hyper-parameters: new key
    assert third[0]["weights"] == "trained" and third[0]["weights_key"] != first[0]["weights_key"]


def test_failing_framework_reports_error_in_its_row_only(tmp_path, monkeypatch):
    from sgnn.harness import models

    def broken(net, data, **_):
        raise RuntimeError("no kernels today")
    monkeypatch.setitem(models.FRAMEWORKS, "broken", broken)
    rows = main(FAST + caches(tmp_path) + ["frameworks=[pytorch,broken,pyg]"], tmp_path / "out")
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert "no kernels today" in rows[1]["error"] and rows[1]["median_ms"] is None


def test_end_to_end_with_sgnn(tmp_path):
    for model in ("gcn", "sage", "gat"):
        rows = main(FAST + caches(tmp_path) + [f"model={model}", "plot=false"], tmp_path / model)
        sg = next(r for r in rows if r["framework"] == "sgnn")
        assert sg["status"] == "ok" and sg["agrees"], sg


def test_end_to_end_cora_gcn(tmp_path):
    root = cora_root()
    if root is None:
        pytest.skip("Cora is not under $SGNN_DATA (or ../shared/datasets)")
    rows = main(caches(tmp_path) + [f"data.root={root}", "dataset=cora", "model=gcn", THREE,
                                    "bench.repetitions=5", "progress=false", "threads=1"], tmp_path / "out")
    assert all(r["status"] == "ok" and r["agrees"] for r in rows)
    assert 0.77 <= rows[0]["test_accuracy"] <= 0.85             # Kipf & Welling: 81.5%
    assert (rows[0]["nodes"], rows[0]["edges"], rows[0]["stand_in"]) == (2708, 10556, False)


# --- run.py and gather.py (subprocesses) -------------------------------------------------------

def _python(args: list[str], **env) -> subprocess.CompletedProcess:
    env = {**os.environ, **env}
    return subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_run_py_missing_file_stops_with_clear_message(tmp_path):
    out = f"hydra.run.dir={tmp_path / 'out'}"
    p = _python(["run.py", "dataset=cora", "threads=1", *caches(tmp_path), out],
                SGNN_DATA=str(fake_partial_cora(tmp_path)))
    assert p.returncode == 2, p.stderr[-2000:]
    assert "ind.cora.allx" in p.stderr and "Traceback" not in p.stderr


def test_run_py_multirun_then_gather(tmp_path):
    sweep = tmp_path / "multi"
    fast = [("++" + a) if a.startswith("dataset.") else a for a in FAST[1:]]   # cora has no dataset.nodes
    p = _python(["run.py", "-m", "dataset=synthetic,cora", "model=gcn", *fast, THREE, *caches(tmp_path),
                 f"hydra.sweep.dir={sweep}"], SGNN_DATA=str(fake_partial_cora(tmp_path)))
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(list(sweep.rglob("results.json"))) == 1 and len(list(sweep.rglob("error.json"))) == 1
    g = _python(["experiments/gather.py", str(sweep)])
    assert g.returncode == 0, g.stderr[-2000:]
    assert "ind.cora.allx" in g.stdout
    rows = json.loads((sweep / "gathered.json").read_text())
    assert {r["framework"] for r in rows} == {"pytorch", "pyg", "dgl"}
    assert (sweep / "speedups.png").stat().st_size > 10_000 and (sweep / "gathered.csv").exists()
