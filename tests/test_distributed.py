"""sgnn.distributed: partitions, part files, and gloo runs (1, 2, 4 processes) equal to one process.

Every multi-process run is a few spawned processes on 127.0.0.1 with a short process-group timeout,
joined with a deadline and killed past it: a test may fail, never hang.
"""
import datetime
import os
import queue
import socket
import time

import pytest
import torch

from sgnn.distributed import (DistGraph, PartitionError, PeerError, build_part, load_partition, partition,
                              read_manifest, save_partition)
from sgnn.errors import UserError

PG_TIMEOUT = 15          # seconds: init_process_group(timeout=...) of every spawned rank
DEADLINE = 50            # seconds: a launch past this is killed and fails
N, F = 240, 8
pytestmark = pytest.mark.timeout(120)     # a second guard (pytest-timeout) besides the launch deadline


# --- graphs (built identically in the test process and in every rank) --------------------------------

def graph(world: int):
    """Random graph with isolated nodes, a self loop and a repeated edge; its parts put every isolated node
    in the last part (a part with no edges when world > 1) and all neighbours of node 0 in other parts."""
    g = torch.Generator().manual_seed(7)
    active = N - 40                                         # nodes [active, N) are isolated
    ei = torch.randint(0, active, (2, 900), generator=g)
    ei = torch.cat([ei, ei.flip(0), torch.tensor([[3, 5, 5], [3, 6, 6]])], 1)
    parts = torch.arange(N) % max(world - 1, 1)
    parts[active:] = world - 1
    if world > 1:
        nbrs = torch.cat([ei[0][ei[1] == 0], ei[1][ei[0] == 0]]).unique()
        parts[0], parts[nbrs[nbrs != 0]] = 0, 1
        parts[active:] = world - 1
    x = torch.randn(N, F, generator=g)
    return ei, x, parts


def models():
    from sgnn.layers import GATConv, GCNConv, SAGEConv
    torch.manual_seed(0)
    return {"sage": [SAGEConv(F, 6), SAGEConv(6, 3)], "gat": [GATConv(F, 3, heads=2), GATConv(6, 3, heads=1)],
            "gcn": [GCNConv(F, 6), GCNConv(6, 3)]}


def forward(layers, x, g):
    with torch.inference_mode():
        for i, conv in enumerate(layers):
            x = conv(x, g)
            x = x.relu() if i < len(layers) - 1 else x
    return x


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


# --- the launcher ------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn, rank, world, port, args, q, timeout):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout))
    try:
        q.put((rank, "ok", fn(rank, world, *args)))
    except BaseException as e:               # reported to the test, which asserts on it
        q.put((rank, "error", f"{type(e).__name__}: {e}"))
    finally:
        dist.destroy_process_group()


def launch(fn, world: int, *args, expect: int | None = None, timeout: float = PG_TIMEOUT) -> dict:
    """{rank: result} of ``fn(rank, world, *args)`` in ``world`` spawned gloo processes (``expect``: how
    many ranks report; the others are expected to die or hang, and are killed)."""
    ctx = torch.multiprocessing.get_context("spawn")
    q, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_entry, args=(fn, r, world, port, args, q, timeout), daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    out, end = {}, time.monotonic() + DEADLINE
    try:
        while len(out) < (world if expect is None else expect):
            try:
                rank, status, value = q.get(timeout=max(end - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"launch {fn.__name__} x{world}: no result from ranks "
                            f"{sorted(set(range(world)) - set(out))} within {DEADLINE} s")
            out[rank] = value if status == "ok" else RuntimeError(value)
    finally:
        for p in procs:                       # reported ranks exit at once; silent ones are killed
            p.join(timeout=min(max(end - time.monotonic(), 0.1), 5))
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    return out


# --- rank programs (module level: spawned processes import them) --------------------------------------

def _models_match(rank, world, part_dir):
    """Relative errors vs one process: a hand-written SpMM, then each model (stopping at the first error:
    a rank that failed leaves, and its peers then fail fast instead of running out of step)."""
    ei, x, parts = graph(world)
    dg = DistGraph.from_global(ei, N, parts)
    disk = DistGraph.load(part_dir)
    import sgnn
    full = torch.zeros(N, F).index_add_(0, ei[1], x[ei[0]])
    results = {"spmm": rel(dg.gather(sgnn.einsum("ij,jk->ik", dg.adjacency(), dg.exchange(dg.shard(x)))), full)}
    ids = dg.exchange(dg.nodes.double()[:, None, None].expand(-1, 2, 3))        # halo rows = their ids
    results["shape"] = list(ids.shape[1:]) if torch.equal(ids[:, 1, 2].long(), torch.cat([dg.nodes, dg.halo])) \
        else "wrong halo rows"
    results["node_data"] = float(torch.equal(disk.node_data["x"], dg.shard(x)))
    for name, layers in models().items():
        try:
            ref = forward(layers, x, ei)
            results[name] = max(rel(dg.gather(forward(layers, dg.shard(x), dg)), ref),
                                rel(disk.gather(forward(layers, disk.node_data["x"], disk)), ref))
        except Exception as e:
            results[name] = f"{type(e).__name__}: {e}"
            break
    return results


def _errors(rank, world, dirs):
    """Each bad input, on both ranks; returns {case: message} (every rank must raise)."""
    found = {}
    for case in ("missing", "corrupted", "four_parts", "no_manifest"):
        found[case] = _raises(lambda: DistGraph.load(dirs[case]), PartitionError)
    found["mixed"] = _raises(lambda: DistGraph.load(dirs["ok"] if rank == 0 else dirs["other"]), PartitionError)
    ei, x, parts = graph(world)
    dg = DistGraph.from_global(ei, N, parts)
    found["grad"] = _raises(lambda: dg.exchange(torch.ones(dg.num_local, 2, requires_grad=True)), UserError)
    found["shapes"] = _raises(lambda: dg.exchange(torch.ones(dg.num_local, 2 + rank)), UserError)
    found["int"] = _raises(lambda: dg.exchange(torch.ones(dg.num_local, dtype=torch.int64)), UserError)
    found["flow"] = _raises(lambda: dg.__sgnn_graph__(dg.num_local, dg.num_local, "target_to_source"), UserError)
    found["rows"] = _raises(lambda: dg.__sgnn_graph__(N, N, "source_to_target"), UserError)
    found["parts_size"] = _raises(lambda: DistGraph.from_global(ei, N, parts[:-1]), PartitionError)
    found["after"] = rel(dg.gather(dg.exchange(dg.shard(x))[: dg.num_local]), x)   # the group still works
    return found


def _raises(fn, kind):
    try:
        fn()
    except kind as e:
        return f"{type(e).__name__}: {e}"
    return "no error"


def _peer_fails(rank, world, how):
    ei, x, parts = graph(world)
    dg = DistGraph.from_global(ei, N, parts)
    layers = models()["sage"]
    if rank == 1:
        with torch.inference_mode():
            layers[0](dg.shard(x), dg)                      # one layer, then die (or hang) mid-model
        if how == "hang":
            time.sleep(DEADLINE)
        os._exit(3)
    start = time.monotonic()
    try:
        forward(layers, dg.shard(x), dg)
    except PeerError as e:
        return {"error": str(e), "seconds": time.monotonic() - start}
    return {"error": None}


# --- tests -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def single_process():
    """References in this process first (also compiles the kernels the ranks then find cached)."""
    ei, x, _ = graph(1)
    return {k: forward(v, x, ei) for k, v in models().items()}


@pytest.fixture(scope="module")
def runs(single_process, tmp_path_factory):
    out = {}
    for world in (1, 2, 4):
        ei, x, parts = graph(world)
        d = save_partition(tmp_path_factory.mktemp(f"p{world}"), ei, N, parts, node_data={"x": x})
        out[world] = launch(_models_match, world, str(d))
    return out


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("model", ["spmm", "gcn", "sage", "gat"])
def test_distributed_equals_single_process(runs, world, model):
    for rank, res in runs[world].items():
        assert not isinstance(res, Exception), f"rank {rank}: {res}"
        assert isinstance(res.get(model), float), f"rank {rank} {model}: {res.get(model, res)}"
        assert res[model] <= 1e-5, f"rank {rank} {model}: relative error {res[model]:.3g}"
        assert res["node_data"] == 1.0 and res["shape"] == [2, 3]


def test_bad_inputs_raise_on_every_rank(tmp_path):
    ei, x, parts = graph(2)
    dirs = {"ok": save_partition(tmp_path / "ok", ei, N, parts),
            "other": save_partition(tmp_path / "other", ei, N, 1 - parts),
            "four_parts": save_partition(tmp_path / "four", ei, N, torch.arange(N) % 4)}
    for case in ("missing", "corrupted", "no_manifest"):
        dirs[case] = save_partition(tmp_path / case, ei, N, parts)
    (dirs["missing"] / "part-00001.pt").unlink()
    (dirs["no_manifest"] / "manifest.json").unlink()
    with open(dirs["corrupted"] / "part-00000.pt", "r+b") as f:
        f.seek(-64, 2)
        byte = f.read(1)
        f.seek(-64, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    res = launch(_errors, 2, {k: str(v) for k, v in dirs.items()})
    expect = {"missing": "rank 1.*missing", "corrupted": "rank 0.*corrupted", "four_parts": "4 parts",
              "no_manifest": "manifest.json is missing", "mixed": "different partitionings",
              "grad": "requires grad", "shapes": "different tensors", "int": "floating-point",
              "flow": "target_to_source", "rows": "local nodes", "parts_size": "parts"}
    import re
    for rank in (0, 1):
        assert not isinstance(res[rank], Exception), res[rank]
        for case, pattern in expect.items():
            assert re.search(pattern, res[rank][case]), f"rank {rank} {case}: {res[rank][case]}"
        assert res[rank]["after"] < 1e-7


@pytest.mark.parametrize("how", ["dies", "hang"])
def test_a_failed_peer_is_an_error_not_a_hang(how):
    """A dead peer: the survivor's next collective fails at once; a hung one: after the 5 s timeout."""
    res = launch(_peer_fails, 2, how, expect=1, timeout=5)
    assert res[0]["error"] and "peer died" in res[0]["error"], res[0]
    assert res[0]["seconds"] < (2 if how == "dies" else 12), res[0]


# --- in-process: partitions and part files -----------------------------------------------------------

def test_partition_methods():
    from sgnn.harness import synthetic
    g = synthetic.build(synthetic.Params(4000, 40000, 16, seed=1))
    csr = (torch.from_numpy(g.rowptr), torch.from_numpy(g.col))
    rows = torch.repeat_interleave(torch.arange(4000), torch.from_numpy(g.degree()))
    cut = {}
    for method in ("metis", "range"):
        p = partition(csr, 4000, 4, method, symmetric=True)
        assert p.shape == (4000,) and p.dtype == torch.int64 and set(p.unique().tolist()) == {0, 1, 2, 3}
        assert torch.equal(p, partition(csr, 4000, 4, method, symmetric=True))     # deterministic
        load = torch.bincount(p, weights=torch.from_numpy(g.degree()).double() + 1, minlength=4)
        assert load.max() / load.mean() < 1.1                                      # edge-balanced
        cut[method] = float((p[rows] != p[torch.from_numpy(g.col).long()]).float().mean())
    assert (torch.diff(partition(csr, 4000, 4, "range")) >= 0).all()               # contiguous
    assert cut["metis"] < 0.5 * cut["range"]                                       # communities found
    ei = torch.stack([torch.from_numpy(g.col).long(), rows])
    assert partition(ei, 4000, 3, "metis").unique().numel() == 3                    # edge_index input
    with pytest.raises(UserError, match="method"):
        partition(ei, 4000, 2, "random")


def test_parts_read_their_own_file_only(tmp_path):
    ei, x, parts = graph(4)
    d = save_partition(tmp_path, ei, N, parts, node_data={"x": x})
    m = read_manifest(d)
    assert m["num_parts"] == 4 and m["num_nodes"] == N and len(m["partition_id"]) == 20
    for r in range(4):
        p = load_partition(d, r)
        assert p.rowptr.dtype == p.col.dtype == torch.int32 and int(p.halo_counts[r]) == 0
        mine = torch.isin(ei[1], p.nodes)
        keys = ei[1][mine] * N + ei[0][mine]
        assert torch.equal(p.node_data["x"], x[p.nodes]) and p.unique == (keys.unique().numel() == keys.numel())
    for other in range(3):
        (d / f"part-{other:05d}.pt").unlink()                   # rank 3 never needs them
    assert torch.equal(load_partition(d, 3).nodes, p.nodes)
    rowptr = torch.zeros(N + 1, dtype=torch.int64)
    assert build_part(rowptr, torch.zeros(0, dtype=torch.int32), torch.zeros(N, dtype=torch.int64), 0, 1,
                      "x").num_halo == 0


def test_world_of_one_without_a_process_group():
    ei, x, _ = graph(1)
    dg = DistGraph.from_global(ei, N, torch.zeros(N, dtype=torch.int64))
    assert dg.num_halo == 0 and torch.equal(dg.gather(dg.shard(x)), x)
    ref = forward(models()["sage"], x, ei)
    assert rel(dg.gather(forward(models()["sage"], dg.shard(x), dg)), ref) < 1e-6
    with pytest.raises(PartitionError, match=r"parts in \[0, 1\) \(one part per rank"):
        DistGraph.from_global(ei, N, torch.arange(N) % 2)
