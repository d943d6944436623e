"""experiments/dist_inference.py, the harness's second Hydra app: a tiny synthetic graph partitioned,
run on 1 rank (no torchrun) and 2 ranks (torchrun), the gathered output checked against one process."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sgnn.harness import data
from sgnn.harness.dist_inference import warmup_graph

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "dist_inference.py"
TINY = ["dataset=synthetic", "dataset.nodes=400", "dataset.edges=2000", "dataset.features=16",
        "dataset.classes=4", "hidden=16", "layers=2"]
pytestmark = pytest.mark.timeout(240)


def launch(tmp_path: Path, prefix: list[str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [*prefix, str(SCRIPT), *TINY, f"data.cache={tmp_path / 'data'}",
           f"hydra.run.dir={tmp_path / 'out'}", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)


def results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "results.json").read_text())


def test_parts_is_required(tmp_path):
    p = launch(tmp_path, [sys.executable])
    assert p.returncode != 0 and "parts=P is required" in p.stderr


def test_one_rank_without_torchrun(tmp_path):
    p = launch(tmp_path, [sys.executable], "parts=1", "method=range", "model=gcn")
    assert p.returncode == 0, p.stderr[-3000:]
    res = results(tmp_path)
    assert res["check"]["ok"] and res["check"]["relative_error"] <= 1e-5
    assert res["config"]["parts"] == 1 and res["manifest_info"]["method"] == "range"
    assert "vs one process: relative error" in p.stdout


def test_two_ranks_under_torchrun_match_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this python")
    p = launch(tmp_path, [torchrun, "--standalone", "--nproc-per-node=2"], "parts=2", "model=sage",
               "method=metis")
    assert p.returncode == 0, p.stderr[-3000:]
    res = results(tmp_path)
    assert [r["rank"] for r in res["ranks"]] == [0, 1] and all(r["halo"] > 0 for r in res["ranks"])
    assert res["check"]["ok"] and 0 < res["manifest_info"]["edge_cut"] < 1
    assert set(res["check"]["modes"]) == {"on", "off"} and all(c["ok"] for c in res["check"]["modes"].values())
    assert len(res["ab"]["ratios"]) == 1 and all(0 <= r["interior"] <= r["local"] for r in res["ranks"])
    assert sum(r["local"] for r in res["ranks"]) == res["check"]["reference"]["nodes"]


def test_ranks_mismatch_is_refused(tmp_path):
    p = launch(tmp_path, [sys.executable], "parts=2")
    assert p.returncode != 0 and "needs as many ranks" in p.stderr


def test_warmup_graph_is_the_harness_generator():
    ei = warmup_graph(64, seed=3)
    again = data.symmetric_edges(data.power_law_edges(64, 256, torch.Generator().manual_seed(3)), 64)
    assert torch.equal(ei, again) and torch.equal(ei, ei.flip(0)[:, torch.argsort(ei[1] * 64 + ei[0])])
