"""sgnn.distributed overlap: the interior rows are computed while the halo is in flight.

2-process gloo runs (the launcher of tests/test_distributed.py) with overlap on and off equal one process for
GCN, SAGE and GAT over the three plan shapes; a part with no interior rows, a part with no boundary rows,
isolated nodes; the interior-first local order; a peer that dies or hangs during the asynchronous exchange.
"""
import time

import pytest
import torch

from sgnn.distributed import DistGraph, PeerError, build_part, load_partition, save_partition
from sgnn.distributed.storage import partition_id

from test_distributed import forward, launch, rel

N, F = 120, 8
pytestmark = pytest.mark.timeout(150)


def graphs():
    """``{name: (edge_index, parts)}``. "mixed": undirected, two communities joined by a few edges, isolated
    nodes in both parts (both parts have interior and boundary rows). "one_way": directed, every edge into
    part 0 comes from part 1 and part 1 reads only itself: part 0 has no interior row, part 1 no boundary row
    (but sends halo rows), its isolated nodes included."""
    g = torch.Generator().manual_seed(3)
    parts = (torch.arange(N) >= N // 2).long()
    half = N // 2 - 10                                        # nodes [half, N/2) and [N - 10, N) are isolated
    a = torch.randint(0, half, (2, 300), generator=g)
    b = torch.randint(N // 2, N - 10, (2, 300), generator=g)
    cross = torch.stack([torch.randint(0, half, (12,), generator=g), torch.randint(N // 2, N - 10, (12,), generator=g)])
    mixed = torch.cat([a, b, cross], 1)
    mixed = torch.cat([mixed, mixed.flip(0)], 1)
    into0 = torch.stack([torch.randint(N // 2, N, (N // 2,), generator=g), torch.arange(N // 2)])  # src, dst
    one_way = torch.cat([into0, b, torch.randint(N // 2, N, (2, 40), generator=g)], 1)
    return {"mixed": (mixed, parts), "one_way": (one_way, parts)}


def models():
    """Each plan shape: gemm ((ÂX)W: widening layers), kernel (Â(XW), GAT concat), torch (GAT head mean)."""
    from sgnn.layers import GATConv, GCNConv, SAGEConv
    torch.manual_seed(0)
    return {"gcn": [GCNConv(F, 16), GCNConv(16, 3)], "sage": [SAGEConv(F, 16), SAGEConv(16, 3)],
            "gat": [GATConv(F, 4, heads=2), GATConv(8, 3, heads=2, concat=False)]}


def features():
    return torch.randn(N, F, generator=torch.Generator().manual_seed(5))


# --- rank programs -------------------------------------------------------------------------------------------

def _overlap_matches(rank, world):
    """Per graph, model and overlap setting: relative error vs one process; the plan shapes run; the row
    ranges the layers computed (interior first) and the exchanges' log fields."""
    from sgnn.engine import layerplan
    shapes, call = set(), layerplan.LayerPlan.__call__

    def recording(self, ops, graph):
        shapes.add(self.shape)
        return call(self, ops, graph)
    layerplan.LayerPlan.__call__ = recording
    x, out = features(), {"shapes": shapes}
    for name, (ei, parts) in graphs().items():
        dg = DistGraph.from_global(ei, N, parts)
        ranges, orig = [], dg._row_ranges
        dg._row_ranges = lambda n: None if (r := orig(n)) is None else _recorded(r, ranges)
        dg.exchange_async = _late(dg)
        out[name] = {"interior": dg.num_interior, "local": dg.num_local, "send_view": dg.send_rows is not None}
        for model, layers in models().items():
            ref = forward(layers, x, ei)
            for overlap in (True, False):
                dg.overlap = overlap
                ranges.clear()
                dg.log.clear()
                got = dg.gather(forward(layers, dg.shard(x), dg))
                out[name][model, overlap] = {"error": rel(got, ref), "ranges": sorted(set(ranges)),
                                             "blocked": all("blocked_s" in e for e in dg.log), "exchanges": len(dg.log)}
    return out


def _late(dg):
    """``dg.exchange_async`` whose halo rows read NaN until ``wait()``: a row computed before the wait that
    reads one gives NaN, whatever the timing of the real transfer."""
    real = dg.exchange_async

    def exchange_async(t):
        out, wait = real(t)
        wait()
        halo = out[dg.num_local:].clone()
        out[dg.num_local:] = float("nan")
        return out, lambda: out[dg.num_local:].copy_(halo)
    return exchange_async


def _recorded(gen, into):
    for r in gen:
        into.append(r)
        yield r


def _peer_fails_in_flight(rank, world, how):
    """Rank 1 agrees on the first halo exchange, then dies (or hangs) instead of posting it: rank 0 has started
    its transfer and computed its interior rows when the wait fails."""
    ei, parts = graphs()["mixed"]
    dg = DistGraph.from_global(ei, N, parts)
    layers = models()["sage"]
    if rank == 1:
        dg._same_everywhere(dg.shard(features()), "exchange")
        if how == "hang":
            time.sleep(60)
        import os
        os._exit(3)
    start = time.monotonic()
    try:
        forward(layers, dg.shard(features()), dg)
    except PeerError as e:
        return {"error": str(e), "seconds": time.monotonic() - start}
    return {"error": None}


# --- tests ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs():
    x = features()
    for ei, _ in graphs().values():             # compile in this process: the ranks find the kernels cached
        for layers in models().values():
            forward(layers, x, ei)
    return launch(_overlap_matches, 2)


def test_send_rows_are_a_view_when_they_form_one_run(runs):
    """P = 2 on an undirected graph: the rows a rank sends are its boundary rows, one ascending run of the
    interior-first order, sent from a view (no packing copy); the directed graph's part 1 sends scattered
    interior rows, packed by index_select. Both give the one-process result (the test below)."""
    assert runs[0]["mixed"]["send_view"] and runs[1]["mixed"]["send_view"]
    assert not runs[1]["one_way"]["send_view"]


@pytest.mark.parametrize("graph", ["mixed", "one_way"])
@pytest.mark.parametrize("model", ["gcn", "sage", "gat"])
def test_overlap_on_and_off_equal_one_process(runs, graph, model):
    for rank, res in runs.items():
        assert not isinstance(res, Exception), f"rank {rank}: {res}"
        r, n, cut = res[graph], res[graph]["local"], res[graph]["interior"]
        on, off = r[model, True], r[model, False]
        assert on["error"] <= 1e-5 and off["error"] <= 1e-5, (rank, on, off)
        assert off["ranges"] == [] and on["blocked"] and off["blocked"] and min(on["exchanges"], off["exchanges"]) > 0
        assert on["ranges"] == [r for r in ((0, cut), (cut, n)) if r[0] < r[1]], (rank, cut, on["ranges"])


def test_parts_with_no_interior_or_no_boundary_rows(runs):
    for rank, res in runs.items():
        assert not isinstance(res, Exception), f"rank {rank}: {res}"
        mixed, one_way = res["mixed"], res["one_way"]
        assert 10 <= mixed["interior"] < mixed["local"]          # interior rows (isolated ones too) and boundary
        assert one_way["interior"] == (0 if rank == 0 else one_way["local"])
        assert res["shapes"] == {"gemm", "kernel", "torch"}


def test_local_order_is_interior_first(tmp_path):
    ei, parts = graphs()["mixed"]
    from sgnn.distributed import as_csr
    rowptr, col = as_csr(ei, N)
    d = save_partition(tmp_path, ei, N, parts)
    for r in (0, 1):
        p = load_partition(d, r)
        rows = torch.repeat_interleave(torch.arange(N), rowptr[1:] - rowptr[:-1])
        outside = torch.zeros(N, dtype=torch.bool)
        outside[rows[parts[col] != parts[rows]]] = True
        inner = p.nodes[: p.num_interior]
        assert not outside[inner].any() and outside[p.nodes[p.num_interior:]].all()     # a split, not a prefix
        assert (torch.diff(inner) > 0).all() and (torch.diff(p.nodes[p.num_interior:]) > 0).all()
        assert torch.equal(p.nodes.sort().values, (parts == r).nonzero().view(-1))
    one = build_part(rowptr, col, torch.zeros(N, dtype=torch.int64), 0, 1, partition_id(rowptr, col, parts, 1))
    assert one.num_interior == N and one.num_halo == 0 and torch.equal(one.nodes, torch.arange(N))


@pytest.mark.parametrize("how", ["dies", "hang"])
def test_a_peer_failing_during_the_async_exchange_raises(how):
    res = launch(_peer_fails_in_flight, 2, how, expect=1, timeout=5)
    err = res[0]["error"]
    assert err and "halo exchange" in err and "peer died" in err, res[0]
    assert res[0]["seconds"] < (3 if how == "dies" else 15), res[0]
