"""The gather roofline of bench=spmm (sgnn/harness/roofline.py, gather_probe.py): the C++ gather-sum
probe against a torch reference per dtype (hypothesis over shapes and patterns), bad input refused before
native code, sane positive bandwidths per dtype, and the fractions on synthetic timings."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sgnn.harness import roofline as R
from sgnn.harness.gather_probe import gather_sum

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def reference(pos, crd, x):
    """Σ over each row's x[crd] in float64 (torch's index_add_)."""
    n = pos.numel() - 1
    rows = torch.repeat_interleave(torch.arange(n), (pos[1:] - pos[:-1]).long())
    return torch.zeros(n, x.size(1), dtype=torch.float64).index_add_(0, rows, x[crd.long()].double())


def random_pattern(n, m, max_deg, seed):
    gen = torch.Generator().manual_seed(seed)
    deg = torch.randint(0, max_deg + 1, (n,), generator=gen)
    pos = torch.zeros(n + 1, dtype=torch.int32)
    pos[1:] = deg.cumsum(0).to(torch.int32)
    return pos, torch.randint(0, m, (int(pos[-1]),), generator=gen, dtype=torch.int32)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), extra=st.integers(0, 5), f=st.sampled_from([1, 3, 16, 17, 48, 130, 256, 300]),
       max_deg=st.integers(0, 12), dtype=st.sampled_from(DTYPES), ahead=st.sampled_from([0, 1, 8, 64]),
       threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_probe_sums_the_gathered_rows(n, extra, f, max_deg, dtype, ahead, threads, seed):
    pos, crd = random_pattern(n, n + extra, max_deg, seed)
    x = torch.randn(n + extra, f, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    y = gather_sum(pos, crd, x, ahead=ahead, threads=threads)
    ref = reference(pos, crd, x)
    assert y.dtype == dtype and y.shape == (n, f)
    # narrow outputs are truncated (bf16) / rounded (fp16) once; sums in float (double for float64)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    assert float((y.double() - ref).abs().max()) <= tol * max(1.0, float(ref.abs().max()))


def test_probe_refuses_bad_input_before_native_code():
    pos, crd = R.uniform_pattern(10, 30)
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="crd must lie"):
        gather_sum(pos, torch.full_like(crd, 10), x)
    with pytest.raises(ValueError, match="int32"):
        gather_sum(pos.long(), crd, x)
    with pytest.raises(ValueError, match="rise from 0"):
        gather_sum(torch.flip(pos, [0]).contiguous(), crd, x)
    with pytest.raises(ValueError, match="y must be"):
        gather_sum(pos, crd, x, torch.empty(9, 4))
    with pytest.raises(ValueError, match="x must be"):
        gather_sum(pos, crd, x.int())
    with pytest.raises(ValueError, match="contiguous"):
        gather_sum(pos, crd, torch.randn(4, 10).t())
    with pytest.raises(ValueError, match="ahead"):
        gather_sum(pos, crd, x, ahead=-1)


def test_uniform_pattern():
    pos, crd = R.uniform_pattern(7, 23, seed=3)
    assert pos.dtype == crd.dtype == torch.int32 and int(pos[0]) == 0 and int(pos[-1]) == 23
    assert set((pos[1:] - pos[:-1]).tolist()) == {3, 4} and 0 <= int(crd.min()) and int(crd.max()) < 7
    with pytest.raises(ValueError):
        R.uniform_pattern(0, 5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_bandwidth_is_positive_per_dtype(dtype):
    pos, crd = R.uniform_pattern(2000, 16000)
    g = R.gather_bandwidth(pos, crd, 32, dtype, reps=2, probes=R.PROBES, aheads=(0, 16))
    assert g["dtype"] == R.SHORT[dtype] and g["n"] == 2000 and g["nnz"] == 16000
    assert g["bytes"] == R.probe_bytes(2000, 16000, 32, dtype) == \
        R.itemsize(dtype) * (16000 * 32 + 2000 * 32) + 4 * 2001 + 4 * 16000
    assert set(g["candidates"]) == {"probe ahead=0", "probe ahead=16", "embedding_bag", "index_select"}
    for c in g["candidates"].values():
        assert 0 < c["median_gb_per_s"] <= c["best_gb_per_s"] < 1e4      # GB/s: positive, not absurd
    assert g["best_gb_per_s"] == max(c["best_gb_per_s"] for c in g["candidates"].values())
    assert g["bytes_per_s"] == pytest.approx(g["best_gb_per_s"] * 1e9)
    assert g["candidates"][g["best_probe"]]["best_gb_per_s"] == g["best_gb_per_s"]


def test_gather_bandwidth_refuses_bad_settings():
    pos, crd = R.uniform_pattern(10, 30)
    with pytest.raises(ValueError, match="probes"):
        R.gather_bandwidth(pos, crd, 4, probes=["gather"])
    with pytest.raises(ValueError, match="aheads"):
        R.gather_bandwidth(pos, crd, 4, aheads=[-1])
    with pytest.raises(ValueError, match="reps"):
        R.gather_bandwidth(pos, crd, 4, reps=0)


def test_byte_model_and_fp64():
    n, nnz, f = 1000, 7000, 64
    assert R.roofline_bytes(n, nnz, f, torch.float64) == 8 * nnz * f + 4 * (n + 1) + 12 * nnz + 8 * n * f
    assert R.probe_bytes(n, nnz, f) == R.roofline_bytes(n, nnz, f) - 4 * nnz
    assert R.dtype_of("fp64") is torch.float64 and R.dtype_of(torch.float64) is torch.float64


def test_fractions_on_synthetic_timings():
    n, nnz, f, bf = 1000, 8000, 64, torch.bfloat16
    nbytes = R.roofline_bytes(n, nnz, f, bf)
    copy_bw, gather_bw = 40e9, 20e9
    at_roof = R.fractions(nbytes / gather_bw, n, nnz, f, bf, copy_bw, gather_bw)      # exactly at the roofline
    assert at_roof["roofline_fraction"] == pytest.approx(1.0) and at_roof["stream_fraction"] == pytest.approx(0.5)
    assert at_roof["achieved_gb_per_s"] == pytest.approx(20.0) and at_roof["roofline_bytes"] == nbytes
    half = R.fractions(2 * nbytes / gather_bw, n, nnz, f, bf, copy_bw, gather_bw)
    assert half["roofline_fraction"] == pytest.approx(0.5) and not half["probe_understates"]
    assert half["floor_fraction"] == pytest.approx(R.floor_bytes(n, nnz, f, bf) / copy_bw / (2 * nbytes / gather_bw))
    assert half["gflops"] == pytest.approx(2 * nnz * f / (2 * nbytes / gather_bw) / 1e9)
    fast = R.fractions(0.5 * nbytes / gather_bw, n, nnz, f, bf, copy_bw, gather_bw)  # faster than the roof
    assert fast["roofline_fraction"] == pytest.approx(2.0) and fast["probe_understates"]
    with pytest.raises(ValueError, match="positive"):
        R.fractions(0.0, n, nnz, f, bf, copy_bw, gather_bw)
    with pytest.raises(ValueError, match="positive"):
        R.fractions(1.0, n, nnz, f, bf, copy_bw, 0.0)


def test_understated_probe_is_a_failed_target_and_flagged_in_the_table(capsys):
    from omegaconf import OmegaConf

    from sgnn.harness import bench_spmm as bs
    t = OmegaConf.create({"speedup_vs_torch": {}, "arxiv_min_features": 64})
    base = {"framework": "sgnn", "dataset": "g", "F": 16, "dtype": "fp32", "threads": 2, "n": 100, "nnz": 800,
            "label": "g", "median_ms": 0.2, "min_ms": 0.1, "p10_ms": 0.1, "p90_ms": 0.3, "others_cores": 0.0}
    nbytes = R.roofline_bytes(100, 800, 16)
    rows = {}
    # the roofline: 1.5× what the median reaches, 0.75× what the best run reaches / far above both
    for name, bw in (("over", nbytes / 1.5e-4), ("ok", nbytes / 0.5e-4)):
        rows[name] = r = dict(base)
        bs._derived(r, r, 40e9, {"bytes_per_s": bw})
    over, ok = rows["over"], rows["ok"]
    assert over["roofline_fraction"] == pytest.approx(0.75) and over["roofline_fraction_best"] == pytest.approx(1.5)
    assert over["probe_understates"] and not ok["probe_understates"]
    res = bs.targets([over], {}, t)
    assert [r["pass"] for r in res] == [False] and "PROBE UNDERSTATES" in res[0]["what"] and "150%" in res[0]["what"]
    cells = bs._cells(over)
    assert cells[bs.COLUMNS.index("% roof")] == "75.0% !" and cells[bs.COLUMNS.index("% roof best")] == "150.0% !"
    assert bs.targets([ok], {}, t) == [] and not bs._cells(ok)[bs.COLUMNS.index("% roof best")].endswith("!")
