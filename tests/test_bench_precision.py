"""bench=precision (accuracy of mixed / bf16 / fp16 inference vs fp32) and the per-dtype gather roofline of
bench=spmm: the error definitions, tiny runs (Cora, 1 seed, 5 epochs; a small synthetic graph), their
table / JSON fields, and that a wrong float32 reference or a wrong narrow SpMM is reported as such."""
import json
from pathlib import Path

import pytest
import torch

from sgnn.harness import DataMissing, compose, load, main
from sgnn.harness import bench_precision as bp
from sgnn.harness import roofline
from sgnn.harness.bench_spmm import _verify
from sgnn.harness.machine import machine_info

QUIET = ["progress=false", "quiet.wait_s=0", "quiet.retries=0", "quiet.sample_s=0", "threads=1"]
TINY_PRECISION = ["bench=precision", "bench.datasets=[cora]", "bench.models=[gcn]", "bench.seeds=[0]",
                  "model.epochs=5", "bench.repetitions=2", "bench.min_repetitions=1", "bench.warmup=0",
                  *QUIET]


# --- definitions ---------------------------------------------------------------------------------

def test_relative_error_is_per_row_max_over_the_rows_largest_reference():
    ref = torch.tensor([[1.0, -4.0], [0.5, 0.25], [0.0, 0.0]])
    y = torch.tensor([[1.5, -4.0], [0.5, 0.0], [0.0, 0.0]])
    worst, mean = bp.rel_errors(y, ref)
    assert worst == pytest.approx(0.5) and mean == pytest.approx((0.125 + 0.5 + 0.0) / 3)
    assert bp.rel_errors(ref.bfloat16(), ref)[0] == 0.0
    with pytest.raises(ValueError, match="equal shapes"):
        bp.rel_errors(y[:2], ref)


def test_byte_model_per_dtype():
    n, nnz, f = 1000, 7000, 64
    assert roofline.floor_bytes(n, nnz, f) == 4 * (n + 1) + 8 * nnz + 8 * n * f           # the fp32 formula
    assert roofline.roofline_bytes(n, nnz, f) == 4 * nnz * f + 4 * (n + 1) + 8 * nnz + 4 * n * f
    bf = torch.bfloat16
    assert roofline.floor_bytes(n, nnz, f, bf) == 4 * (n + 1) + 6 * nnz + 4 * n * f
    assert roofline.roofline_bytes(n, nnz, f, bf) == 2 * nnz * f + 4 * (n + 1) + 6 * nnz + 2 * n * f
    assert roofline.dtype_of("bf16") is bf and roofline.dtype_of("float16") is torch.float16
    with pytest.raises(ValueError, match="dtype"):
        roofline.dtype_of("int8")
    # the gather probes themselves: tests/test_roofline.py


def test_a_wrong_reference_fails_the_targets():
    """compare() against a reference that is not the float32 output: agreement drops, targets FAIL."""
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(400, 7, generator=gen)
    data = type("D", (), {"y": ref.argmax(1), "test_mask": torch.ones(400, dtype=torch.bool)})()
    wrong = ref[torch.randperm(400, generator=gen)]
    y = ref + 1e-3 * torch.randn(400, 7, generator=gen)
    t = compose(["bench=precision"]).bench.targets
    for reference, ok in ((ref, True), (wrong, False)):
        m, m32 = bp.compare(y, reference, data), bp.compare(reference, reference, data)
        assert (m["argmax_agreement"] > 0.99) == ok and (m["max_rel_error"] < 0.01) == ok
        s = {"dataset": "cora", "label": "cora", "model": "gcn", "precision": "bf16", "seeds": 1,
             "accuracy_comparable": True, "test_accuracy_mean": m["test_accuracy"],
             "accuracy_delta_points": 100 * (m["test_accuracy"] - m32["test_accuracy"]),
             "min_argmax_agreement": m["argmax_agreement"]}
        assert [r["pass"] for r in bp.targets([s], [], t)] == [ok, ok]


def test_a_wrong_narrow_spmm_is_a_mismatch():
    ref = torch.randn(100, 16)
    y = ref.bfloat16()
    assert _verify("sgnn", lambda x: y, None, y, ref, tol=1e-2)["verified"]
    wrong = y.clone()
    wrong[3, 4] += 1.0
    out = _verify("sgnn", lambda x: wrong, None, wrong, ref, tol=1e-2)
    assert not out["verified"] and out["rel_error"] > 1e-2 and len(out["mismatch_again"]) == 3


# --- tiny runs -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precision")
    overrides = [*TINY_PRECISION, f"train.cache_dir={tmp / 'weights'}"]
    try:
        load(compose(["dataset=cora"]))
    except DataMissing as e:
        pytest.skip(f"Cora not available: {e}")
    return overrides, tmp, main(overrides, tmp / "out")


def test_precision_entry_fields_and_sane_values(cora_run):
    _, tmp, res = cora_run
    rows = res["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "mixed", "bf16", "fp16"]
    assert [r["dtype"] for r in rows] == ["float32", "float32", "bfloat16", "float16"]
    for r in rows:
        assert "error" not in r, r.get("traceback")
        assert 0.0 <= r["argmax_agreement"] <= 1.0 and 0.0 <= r["test_accuracy"] <= 1.0
        assert r["max_rel_error"] >= r["mean_rel_error"] >= 0.0
        assert r["median_ms"] > 0 and r["speedup_vs_fp32"] > 0 and r["loadavg_1m"] >= 0
        assert r["others_cores"] >= 0 and r["model"] == "gcn" and r["seed"] == 0 and r["epochs"] == 5
    fp32, mixed, bf16, fp16 = rows
    assert fp32["argmax_agreement"] == 1.0 and fp32["max_rel_error"] == 0.0 and fp32["vs_pyg"]["agrees"]
    assert 0 < fp16["max_rel_error"] < bf16["max_rel_error"] < 0.1      # fp16 has 3 more mantissa bits
    assert 0 < mixed["max_rel_error"] < bf16["max_rel_error"]           # bf16 copies, float32 elsewhere
    assert {s["precision"] for s in res["summary"]} == {"fp32", "mixed", "bf16", "fp16"}
    assert all(t["pass"] is not None for t in res["targets"]) and len(res["targets"]) == 7
    saved = json.loads((tmp / "out" / "results.json").read_text())
    assert saved["bench"] == "precision" and saved["machine"]["flags"] == machine_info()["flags"]
    assert saved["rows"][2]["argmax_agreement"] == bf16["argmax_agreement"]
    assert (tmp / "out" / "results.csv").exists() and (tmp / "out" / "results.partial.json").exists()


def test_precision_entry_detects_a_wrong_float32_output(cora_run, monkeypatch):
    """sgnn fp32 made wrong (logits negated): its check against PyG and every narrow target FAIL."""
    overrides, tmp, _ = cora_run
    real = bp.forward

    def wrong_fp32(net, data, precision):
        fn = real(net, data, precision)
        return (lambda: -fn()) if precision == "fp32" else fn
    monkeypatch.setattr(bp, "forward", wrong_fp32)
    res = main(overrides, tmp / "wrong")
    assert not res["rows"][0]["vs_pyg"]["agrees"]
    assert all(r["argmax_agreement"] < 0.5 for r in res["rows"][1:])
    assert [t["pass"] for t in res["targets"]] == [False] * 7


def test_spmm_entry_narrow_rows_and_roofline_per_dtype(tmp_path):
    res = main(["bench=spmm", "bench.datasets=[synthetic]", "dataset=synthetic", "dataset.nodes=400",
                "dataset.edges=3000", "bench.features=[16]", "bench.frameworks=[sgnn]", "bench.latency=false",
                "bench.narrow.datasets=[synthetic]", "bench.narrow.features=[16]", "bench.repetitions=2",
                "bench.min_repetitions=1", "bench.warmup=1", "bench.bandwidth_mib=8",
                "bench.bandwidth_reps=2", "bench.gather_reps=2", f"data.cache={tmp_path / 'data'}", *QUIET],
               tmp_path / "out")
    rows = res["rows"]
    assert [(r["framework"], r["dtype"]) for r in rows] == [("sgnn", "fp32"), ("sgnn", "bf16"),
                                                           ("sgnn", "fp16")]
    for r in rows:
        assert "error" not in r, r.get("traceback")
        assert r["floor_fraction"] > 0 and r["roofline_fraction"] > 0 and r["gflops"] > 0
    for r in rows[1:]:
        assert r["verified"] and 0 <= r["rel_error"] <= r["tolerance"] and r["vs_fp32"] > 0
    n, nnz = rows[0]["n"], rows[0]["nnz"]
    assert rows[1]["roofline_bytes"] == roofline.roofline_bytes(n, nnz, 16, torch.bfloat16)
    assert [g["dtype"] for g in res["gather_roofline"]] == ["fp32", "bf16", "fp16"]
    assert all(g["best_gb_per_s"] > 0 for g in res["gather_roofline"])
    what = [t["what"] for t in res["targets"]]
    assert sum("vs sgnn fp32" in w for w in what) == 1 and sum("gather roofline" in w for w in what) == 3
    assert Path(tmp_path / "out" / "results.json").exists()


def test_speed_target_per_dataset_and_precision():
    from omegaconf import OmegaConf
    s = {"dataset": "arxiv", "label": "arxiv (stand-in)", "model": "gcn", "precision": "bf16", "seeds": 1,
         "accuracy_comparable": False, "speedup_vs_fp32": 1.5}
    for need, ok in ((1.4, True), (2.0, False)):
        t = OmegaConf.create({"agreement": 0.99, "accuracy_points": 0.5,
                              "speedup_vs_fp32": {"arxiv": {"bf16": need}}})
        got = bp.targets([s], [], t)
        assert [r["pass"] for r in got] == [ok] and "1.50× fp32" in got[0]["what"]
    assert bp.targets([{**s, "dataset": "cora"}], [], t) == []       # not a comparable graph, no target
