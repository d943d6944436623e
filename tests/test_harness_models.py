"""The same weights in plain PyTorch and DGL give PyG's logits; timing and agreement checks."""
import pytest
import torch
from omegaconf import OmegaConf
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from sgnn.harness.models import FRAMEWORKS, build_pyg, gcn_adjacency
from sgnn.harness.pipeline import check
from sgnn.harness.timing import bench

RELU = {"act": "relu", "dropout": 0.5}
ELU = {"act": "elu", "dropout": 0.6}
MODELS = {
    "gcn": {"name": "gcn", "hidden": 5, "layers": 2, **RELU},
    "sage": {"name": "sage", "hidden": 5, "layers": 2, **RELU},
    "gat": {"name": "gat", "hidden": 3, "heads": 4, "out_heads": 1, "layers": 2, **ELU},
    "gat-3-layers-mean-heads": {"name": "gat", "hidden": 3, "heads": 2, "out_heads": 3, "layers": 3, **ELU},
    "sage-3-layers": {"name": "sage", "hidden": 6, "layers": 3, **RELU},
}


def awkward_graph(n=37, f=11, seed=0) -> Data:
    """Symmetric random graph with an isolated node (n-1) and a hub (node 0)."""
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n - 1, (2, 120), generator=g)
    hub = torch.arange(1, n - 1)
    ei = torch.cat([torch.stack([src, dst]), torch.stack([hub.new_zeros(hub.numel()), hub])], 1)
    ei = to_undirected(ei[:, ei[0] != ei[1]], num_nodes=n)
    return Data(x=torch.randn(n, f, generator=g), edge_index=ei, num_nodes=n)


@pytest.mark.parametrize("spec", MODELS, ids=list(MODELS))
@pytest.mark.parametrize("framework", ["pytorch", "dgl"])
def test_framework_matches_pyg(spec, framework):
    data = awkward_graph()
    torch.manual_seed(0)
    net = build_pyg(OmegaConf.create(MODELS[spec]), data.num_features, 4).eval()
    for p in net.parameters():                       # biases are zero-initialised: make them count
        torch.nn.init.normal_(p, std=0.5)
    with torch.inference_mode():
        ref = net(data.x, data.edge_index)
        out = FRAMEWORKS[framework](net, data)()
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_gcn_adjacency_is_symmetric_normalised():
    data = awkward_graph()
    a = gcn_adjacency(data.edge_index, data.num_nodes).to_dense()
    assert torch.allclose(a, a.t())
    assert a[-1, -1] == 1.0                                    # isolated node: only its self loop


def test_bench_counts_repetitions_and_returns_output():
    calls = []
    timing, out = bench(lambda: calls.append(1) or torch.ones(2), warmup=3, repetitions=7)
    assert len(calls) == 10 and timing.repetitions == 7 and timing.warmup == 3
    assert 0 <= timing.min_ms <= timing.median_ms and torch.equal(out, torch.ones(2))
    with pytest.raises(ValueError, match="expected repetitions >= 1"):
        bench(lambda: None, 0, 0)


def test_check_reports_disagreement():
    c = OmegaConf.create({"rtol": 1e-4, "atol": 1e-4, "min_agreement": 0.999})
    ref = torch.eye(4)
    assert check(ref, ref.clone(), c)["agrees"]
    bad = check(ref, ref.flip(1), c)
    assert not bad["agrees"] and bad["argmax_agreement"] < 1 and "argmax agreement" in bad["warning"]
    assert not check(ref, torch.zeros(3, 4), c)["agrees"]


def test_threads_are_restored():
    from sgnn.harness.timing import threads
    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
