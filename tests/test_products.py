"""The products-scale stand-in: a community graph built straight into CSR, at ~200k nodes here."""
import numpy as np
import pytest
import torch

from sgnn.harness import DataMissing, compose, load
from sgnn.harness import synthetic as S

N, E, C = 200_000, 5_052_000, 200            # products' mean degree (50.5) at 1/12 of its size


@pytest.fixture(scope="module")
def graph():
    return S.build(S.Params(N, E, C, seed=3))


def _keys(g):
    rows = np.repeat(np.arange(g.num_nodes, dtype=np.int64), g.degree())
    return rows, rows * g.num_nodes + g.col


def test_csr_is_int32_symmetric_sorted_and_duplicate_free(graph):
    g = graph
    assert g.rowptr.dtype == np.int32 and g.col.dtype == np.int32 and g.col.size == 2 * E
    rows, keys = _keys(g)
    assert np.all(np.diff(keys) > 0)                                   # sorted rows, no duplicate
    assert not np.any(rows == g.col)                                   # no self loop
    t = np.sort(g.col.astype(np.int64) * N + rows)
    assert np.array_equal(t, keys)                                     # symmetric
    assert g.x.shape == (N, 100) and g.x.dtype == np.float32 and g.y.max() < 47
    assert set(np.unique(g.split)) == {0, 1, 2}


def test_power_law_degrees_and_community_locality(graph):
    d = graph.degree()
    assert abs(d.mean() - 2 * E / N) < 1e-9 and d.max() > 100 * d.mean()
    top = np.sort(d)[::-1]
    assert top[: N // 100].sum() > 0.07 * top.sum()                    # the top 1% hold > 7% of edges
    ks = np.unique(np.logspace(np.log10(2 * d.mean()), np.log10(d.max() / 4), 8).astype(int))
    ccdf = np.array([(d >= k).mean() for k in ks])
    slope = np.polyfit(np.log(ks), np.log(ccdf), 1)[0]
    assert -3.0 < slope < -1.2                                         # a heavy, power-law-like tail
    assert graph.intra_fraction() > 0.8
    conf = np.zeros((C, 47))
    np.add.at(conf, (graph.community, graph.y), 1)
    assert conf.max(1).sum() / N > 0.7                                 # labels follow communities


def test_deterministic_per_seed_and_cached_load_equals_build(graph, tmp_path):
    p = S.Params(N // 10, E // 10, C // 10, seed=3)
    a, b = S.build(p), S.load(p, tmp_path)
    for name in S.ARRAYS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert isinstance(b.col, np.memmap)
    calls = []
    c = S.load(p, tmp_path, build_fn=lambda q: calls.append(q))        # second load: from the cache
    assert not calls and np.array_equal(c.col, a.col)
    other = S.build(S.Params(N // 10, E // 10, C // 10, seed=4))
    assert not np.array_equal(other.col[:1000], a.col[:1000])


def test_harness_products_is_opt_in_and_labelled(tmp_path):
    small = ["dataset.stand_in.nodes=5000", "dataset.stand_in.edges=60000", "dataset.stand_in.communities=10"]
    base = ["dataset=products", f"data.cache={tmp_path}", f"data.root={tmp_path / 'root'}", *small]
    with pytest.raises(DataMissing, match="allow_stand_in"):
        load(compose(base))
    g = load(compose([*base, "data.allow_stand_in=true"]))
    assert g.stand_in and not g.accuracy_comparable and "stand-in" in g.label and "synthetic" in g.note
    ei = g.data.edge_index
    assert ei.shape == (2, 120000) and ei.dtype == torch.int64 and g.data.x.shape == (5000, 100)
    assert int(g.data.train_mask.sum()) == round(0.0803 * 5000)
