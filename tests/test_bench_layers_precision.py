"""bench=layers in bfloat16: the -bf16 / -mixed frameworks, interleaved timing, and the two bf16 targets
(sgnn-bf16 vs sgnn fp32, vs the fastest checked peer in any precision) from the measured medians."""
import time

import pytest
from omegaconf import OmegaConf
from test_bench import entry

from sgnn.harness import main
from sgnn.harness.bench_layers import check_framework, interleaved
from sgnn.harness.layers_report import precision_of, precision_summary, targets
from sgnn.harness.machine import Quiet

T = OmegaConf.create({"vs_fastest": {}, "gat_vs_pyg": 3.0, "gat_vs_dgl": 1.5,
                      "bf16_vs_fp32": {"g": 2.0}, "bf16_vs_fastest_peer": {"g": 4.0}})


def test_framework_names():
    assert precision_of("pyg-csr-bf16") == ("pyg-csr", "bf16")
    assert precision_of("sgnn-mixed") == ("sgnn", "mixed")
    assert precision_of("pyg-csr") == ("pyg-csr", "fp32") and precision_of("sgnn") == ("sgnn", "fp32")
    for fw in ("pyg-cached-bf16", "dgl-bf16", "sgnn-mixed", "pytorch"):
        check_framework(fw)
    for bad in ("pyg-mixed", "cugraph-bf16", "sgnn-fp8"):
        with pytest.raises(ValueError, match="bench.frameworks"):
            check_framework(bad)


def _row(fw: str, ms: float | None, verified: bool = True, **kw) -> dict:
    r = {"dataset": "g", "model": "gcn2", "framework": fw, **kw}
    if ms is None:
        r["error"] = "NotImplementedError: no bf16"
        return r
    r.update(median_ms=ms, verified=verified, argmax_agreement=1.0 if verified else 0.5, others_cores=0.0)
    return r


def _targets(rows):
    summary = precision_summary(rows, [("g", "gcn2")])
    got = [t for t in targets(rows, ["g"], T, summary) if "sgnn-bf16" in t["what"]]
    return summary[0], got


def test_ratios_and_targets_come_from_the_medians():
    rows = [_row("pyg", 40.0, check="ref"), _row("pyg-bf16", 30.0), _row("dgl", 50.0),
            _row("dgl-bf16", 1.0, verified=False),            # fastest, but its output is wrong: not a peer
            _row("pytorch-bf16", None), _row("sgnn", 16.0), _row("sgnn-mixed", 10.0), _row("sgnn-bf16", 7.0)]
    s, (vs32, vspeer) = _targets(rows)
    assert s["bf16_vs_fp32"] == pytest.approx(16 / 7) and s["mixed_vs_fp32"] == pytest.approx(1.6)
    assert s["fastest_peer"] == "pyg-bf16" and s["bf16_vs_fastest_peer"] == pytest.approx(30 / 7)
    assert s["peers_unchecked"] == ["dgl-bf16"] and list(s["peers_failed"]) == ["pytorch-bf16"]
    assert s["peers"] == ["pyg", "pyg-bf16", "dgl"]
    assert vs32["pass"] and "2.29×" in vs32["what"] and "target ≥ 2.0×" in vs32["what"]
    assert vspeer["pass"] and "4.29×" in vspeer["what"] and "pyg-bf16" in vspeer["what"]
    assert "not peers, output mismatched: dgl-bf16" in vspeer["what"]
    rows[-1]["median_ms"] = 9.0                                # 16/9 < 2, 30/9 < 4
    _, (vs32, vspeer) = _targets(rows)
    assert not vs32["pass"] and not vspeer["pass"] and "1.78×" in vs32["what"]


def test_a_fast_but_wrong_bf16_output_fails():
    rows = [_row("pyg", 40.0, check="ref"), _row("sgnn", 16.0), _row("sgnn-bf16", 1.0, verified=False)]
    s, got = _targets(rows)
    assert s["bf16_vs_fp32"] == 16 and len(got) == 2
    assert all(not t["pass"] and "NOT verified" in t["what"] for t in got)


def test_a_bf16_error_is_a_failed_target():
    rows = [_row("pyg", 40.0, check="ref"), _row("sgnn", 16.0), _row("sgnn-bf16", None)]
    _, got = _targets(rows)
    assert len(got) == 2 and all(not t["pass"] and "n/a (NotImplementedError" in t["what"] for t in got)


def test_rounds_interleave_in_alternating_order():
    calls = []

    def entry_of(name: str, sleep_s: float) -> dict:
        def call():
            calls.append(name)
            time.sleep(sleep_s)
        return {"fw": name, "row": {"framework": name}, "call": call, "reps": 3, "est": 1.0}
    es = [entry_of("a", 0.002), entry_of("b", 0.01)]
    b = OmegaConf.create({"rounds": 3})
    q = Quiet(OmegaConf.create({"wait_s": 0, "budget_s": 0, "threshold": 0.2, "window_s": 0.1, "retries": 0,
                                "retry_load": 0.3, "sample_s": 0}))
    interleaved(es, b, q, "test")
    # est >= 0.2 s: one warm-up call in the first round only, then 1 call per round (ceil(3 / 3))
    assert "".join(calls) == "aabb" + "ba" + "ab"
    a, bb = es[0]["row"], es[1]["row"]
    assert a["repetitions"] == bb["repetitions"] == 3 and a["rounds"] == 3 and a["warmup"] == 1
    assert 2 <= a["median_ms"] < bb["median_ms"] and bb["median_ms"] >= 10
    assert a["peak_rss_mib"] >= 0 and a["mem_method"] in ("VmHWM", "sampler")


def test_layers_entry_with_bf16_frameworks(tmp_path):
    res = main(entry("layers", tmp_path, "bench.models=[gcn2,gat2]", "bench.repetitions=2",
                     "bench.min_repetitions=1", "bench.rounds=2",
                     "bench.frameworks=[pyg,pytorch,pyg-bf16,pytorch-bf16,sgnn,sgnn-mixed,sgnn-bf16]",
                     "+bench.targets.bf16_vs_fp32.synthetic=0.001",
                     "+bench.targets.bf16_vs_fastest_peer.synthetic=0.001"), tmp_path / "out")
    by = {(r["model"], r["framework"]): r for r in res["rows"]}
    assert list(by) == [(m, f) for m in ("gcn2", "gat2") for f in
                        ("pyg", "pytorch", "pyg-bf16", "pytorch-bf16", "sgnn", "sgnn-mixed", "sgnn-bf16")]
    gcn_torch = by[("gcn2", "pytorch-bf16")]                 # torch.sparse: no bf16 CSR matmul on CPU
    assert "median_ms" not in gcn_torch and "bfloat16 CSR matmul" in gcn_torch["why"]
    for k, r in by.items():
        if k == ("gcn2", "pytorch-bf16"):
            continue
        assert "error" not in r, r.get("traceback")
        assert r["median_ms"] > 0 and r["rounds"] == 2 and (r.get("check") == "ref" or r["verified"])
        assert r["precision"] == precision_of(r["framework"])[1]
        if r["precision"] != "fp32":
            assert r["argmax_agreement"] >= 0.98 and r["max_abs_err"] > 0
    summary = {p["model"]: p for p in res["precision"]}
    assert set(summary) == {"gcn2", "gat2"}
    for model, p in summary.items():
        sg, bf = by[(model, "sgnn")], by[(model, "sgnn-bf16")]
        assert p["bf16_vs_fp32"] == pytest.approx(sg["median_ms"] / bf["median_ms"])
        peers = [r for (m, f), r in by.items()
                 if m == model and not f.startswith("sgnn") and "median_ms" in r]
        peer = min(peers, key=lambda r: r["median_ms"])
        assert p["fastest_peer"] == peer["framework"]
        assert p["bf16_vs_fastest_peer"] == pytest.approx(peer["median_ms"] / bf["median_ms"])
    bf16 = [t for t in res["targets"] if "sgnn-bf16 vs" in t["what"]]
    assert len(bf16) == 4 and all(t["pass"] for t in bf16)
