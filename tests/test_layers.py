"""Every layer: awkward graphs, sparse features, inference modes, caches, error paths, real Planetoid data.

Each layer's option table against PyG and its DGL check live in ``test_{gcn,sage,gat}_conv.py``.

Every parity check goes through ``layer_helpers.assert_layer`` (STYLE item 14).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch_geometric.nn as pyg
from torch import nn

import sgnn
from sgnn.layers import GATConv, GCNConv, SAGEConv, from_pyg

from layer_helpers import (adj_t, assert_close, assert_layer, edge_weight, Fa, features, GRAPHS,
                           make_graph, random_edges, randomize_zero_parameters, rel_error, sparse_features,
                           T)

# PyG converts a COO adj_t to CSR on every call and says so
pytestmark = pytest.mark.filterwarnings("ignore:Converting sparse tensor to CSR format:UserWarning")

# ------------------------------------------------------------------ awkward graphs, every layer
def layer_pairs():
    """(id, sgnn layer, PyG layer, needs edge weights, needs edge_attr) for the graph table."""
    return [
        ("gcn", GCNConv(8, 4), pyg.GCNConv(8, 4), Fa, Fa),
        ("gcn_improved_weighted", GCNConv(8, 4, improved=T), pyg.GCNConv(8, 4, improved=T), T, Fa),
        ("sage_mean", SAGEConv(8, 4), pyg.SAGEConv(8, 4), Fa, Fa),
        ("sage_max", SAGEConv(8, 4, aggr="max"), pyg.SAGEConv(8, 4, aggr="max"), Fa, Fa),
        ("gat", GATConv(8, 4, heads=2), pyg.GATConv(8, 4, heads=2), Fa, Fa),
        ("gat_no_loops", GATConv(8, 4, heads=2, add_self_loops=Fa),
         pyg.GATConv(8, 4, heads=2, add_self_loops=Fa), Fa, Fa),
        ("gat_edge_attr", GATConv(8, 4, heads=2, edge_dim=2), pyg.GATConv(8, 4, heads=2, edge_dim=2), Fa, T),
    ]


LAYER_IDS = [p[0] for p in layer_pairs()]


def call_kwargs(ei, weighted: bool, with_attr: bool) -> dict:
    kw = {}
    if weighted:
        kw["edge_weight"] = edge_weight(ei.size(1))
    if with_attr:
        kw["edge_attr"] = features(ei.size(1), 2, seed=6)
    return kw


@pytest.mark.parametrize("layer", LAYER_IDS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_graphs(graph, layer):
    _, s, p, weighted, with_attr = layer_pairs()[LAYER_IDS.index(layer)]
    n, ei = make_graph(graph)
    assert_layer(s, p, features(n, s.in_channels), ei, **call_kwargs(ei, weighted, with_attr))


# ------------------------------------------------------------------ sparse and mostly-zero features
def x_variants():
    x = sparse_features(600, 128, density=0.02)  # 76,800 entries, ~2% nonzero: X·W runs sparse×dense
    assert x.numel() >= 65536 and float((x != 0).float().mean()) < 0.05
    return {"mostly_zero_dense": x, "torch_coo": x.to_sparse(), "torch_csr": x.to_sparse_csr()}


@pytest.mark.parametrize("kind", ["mostly_zero_dense", "torch_coo", "torch_csr"])
@pytest.mark.parametrize("layer", ["gcn", "gcn_ax_first", "sage_mean", "sage_max_project", "gat_residual"])
def test_sparse_features(layer, kind):
    x = x_variants()[kind]
    ei = random_edges(600, 600, 3000, seed=7)
    s, p = {
        "gcn": (GCNConv(128, 16), pyg.GCNConv(128, 16)),
        "gcn_ax_first": (GCNConv(128, 256), pyg.GCNConv(128, 256)),
        "sage_mean": (SAGEConv(128, 16), pyg.SAGEConv(128, 16)),
        "sage_max_project": (SAGEConv(128, 16, aggr="max", project=T),
                             pyg.SAGEConv(128, 16, aggr="max", project=T)),
        "gat_residual": (GATConv(128, 8, heads=2, residual=T), pyg.GATConv(128, 8, heads=2, residual=T)),
    }[layer]
    assert_layer(s, p, x, ei)


# ------------------------------------------------------------------ inference modes
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("layer", ["gcn", "sage_mean", "sage_max", "gat", "gat_edge_attr"])
def test_inference_modes(layer, mode):
    _, s, p, weighted, with_attr = layer_pairs()[LAYER_IDS.index(layer)]
    n, ei = make_graph("directed")
    x = features(n, s.in_channels)
    kw = call_kwargs(ei, weighted, with_attr)
    ref = assert_layer(s, p, x, ei, check_inputs=Fa, **kw)
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with ctx:
        x2 = x.clone()  # created inside the mode (an inference tensor under inference_mode)
        out = s(x2, ei.clone(), **{k: v.clone() for k, v in kw.items()})
        again = s(x, ei, **kw)  # tensors from outside the mode, graph cached by the no_grad call
    assert_close(out, ref, mode)
    assert_close(again, ref, f"{mode}, second call")


def test_inference_mode_mostly_zero_features():
    x = sparse_features(600, 128)
    ei = random_edges(600, 600, 3000, seed=7)
    ref = assert_layer(GCNConv(128, 16), p := pyg.GCNConv(128, 16), x, ei, check_inputs=Fa)
    s = GCNConv(128, 16)
    s.load_state_dict(p.state_dict())
    with torch.inference_mode():
        out = s(x.clone(), ei.clone())
    assert_close(out, ref, "inference_mode, sparse×dense X·W")


# ------------------------------------------------------------------ caches never go stale
def paired(layer: str):
    _, s, p, weighted, with_attr = layer_pairs()[LAYER_IDS.index(layer)]
    randomize_zero_parameters(p)
    s.load_state_dict(p.state_dict())
    return s.eval(), p.eval(), weighted, with_attr


@pytest.mark.parametrize("layer", ["gcn", "gcn_improved_weighted", "sage_mean", "sage_max", "gat",
                                   "gat_edge_attr"])
def test_second_graph_gives_its_own_answer(layer):
    s, p, weighted, with_attr = paired(layer)
    n, ei1 = make_graph("directed", seed=0)
    x = features(n, s.in_channels)
    with torch.no_grad():
        for seed in (0, 1, 2):  # same sizes, different edges; the earlier graphs are freed in between
            ei = random_edges(n, n, 300, seed=seed) if seed else ei1
            kw = call_kwargs(ei, weighted, with_attr)
            assert_close(s(x, ei, **kw), p(x, ei, **kw), f"graph {seed}")
        ei2 = random_edges(n, n, 300, seed=9)
        kw1, kw2 = call_kwargs(ei1, weighted, with_attr), call_kwargs(ei2, weighted, with_attr)
        for ei, kw, name in [(ei1, kw1, "G1"), (ei2, kw2, "G2"), (ei1, kw1, "G1 again")]:  # both alive
            assert_close(s(x, ei, **kw), p(x, ei, **kw), name)


@pytest.mark.parametrize("layer", ["gcn", "gcn_improved_weighted", "sage_mean", "sage_max", "gat",
                                   "gat_edge_attr"])
def test_in_place_edit_of_edge_index(layer):
    s, p, weighted, with_attr = paired(layer)
    n, ei = make_graph("directed")
    x = features(n, s.in_channels)
    kw = call_kwargs(ei, weighted, with_attr)
    with torch.no_grad():
        assert_close(s(x, ei, **kw), p(x, ei, **kw), "before the edit")
        ei[1, :40] = (ei[1, :40] + 7) % n
        ei[0, 40:60] = (ei[0, 40:60] + 3) % n
        assert_close(s(x, ei, **kw), p(x, ei, **kw), "after editing edge_index in place")


def test_in_place_edit_of_edge_weight():
    s, p, _, _ = paired("gcn_improved_weighted")
    n, ei = make_graph("self_loops")
    x, w = features(n, 8), edge_weight(ei.size(1))
    with torch.no_grad():
        assert_close(s(x, ei, w), p(x, ei, w), "before the edit")
        w[:100] *= 3.0
        assert_close(s(x, ei, w), p(x, ei, w), "after editing edge_weight in place")
        assert_close(s(x, ei, w.clone()), p(x, ei, w), "a new weight tensor with the same values")
        assert_close(s(x, ei), p(x, ei), "no weights after weights")


@pytest.mark.parametrize("layout", [torch.sparse_csr, torch.sparse_coo], ids=["csr", "coo"])
def test_in_place_edit_of_sparse_adjacency(layout):
    s, p, _, _ = paired("gcn")
    n, ei = make_graph("directed")
    x = features(n, 8)
    a = adj_t(ei, n, n, edge_weight(ei.size(1)), layout)
    vals = a.values() if layout == torch.sparse_csr else a._values()
    with torch.no_grad():
        assert_close(s(x, a), p(x, a), "before the edit")
        vals[:100] *= 3.0
        assert_close(s(x, a), p(x, a), "after editing adj_t's values in place")


@pytest.mark.parametrize("layer", ["gcn", "sage_mean", "gat"])
def test_in_place_edit_of_mostly_zero_features(layer):
    classes = {"gcn": (GCNConv, pyg.GCNConv, {}), "sage_mean": (SAGEConv, pyg.SAGEConv, {}),
               "gat": (GATConv, pyg.GATConv, {"heads": 2})}
    S, P, kw = classes[layer]
    p, s = P(128, 16, **kw), S(128, 16, **kw)
    randomize_zero_parameters(p)
    s.load_state_dict(p.state_dict())
    x = sparse_features(600, 128)
    ei = random_edges(600, 600, 3000, seed=7)
    with torch.no_grad():
        assert_close(s(x, ei), p(x, ei), "before the edit")
        x[:50] = features(50, 128, seed=8) * (x[:50] == 0)  # new nonzeros, old ones cleared
        assert_close(s(x, ei), p(x, ei), "after editing x in place")
        x2 = sparse_features(600, 128, seed=11)
        assert_close(s(x2, ei), p(x2, ei), "a different x")


def test_gcn_cached_keeps_the_first_graph_like_pyg():
    p, s = pyg.GCNConv(8, 4, cached=T), GCNConv(8, 4, cached=T)
    randomize_zero_parameters(p)
    s.load_state_dict(p.state_dict())
    n, ei1 = make_graph("directed", seed=0)
    ei2 = random_edges(n, n, 300, seed=1)
    x = features(n, 8)
    with torch.no_grad():
        assert_close(s(x, ei1), p(x, ei1), "first call")
        assert_close(s(x, ei2), p(x, ei2), "second call (both keep the first normalisation)")


# ------------------------------------------------------------------ error paths
ERRORS = [
    ("3_rows", lambda n: torch.zeros(3, 5, dtype=torch.long),
     r"edge_index.*shape \[2, num_edges\].*\[3, 5\]"),
    ("1_dim", lambda n: torch.zeros(6, dtype=torch.long), r"edge_index.*shape \[2, num_edges\].*\[6\]"),
    ("float", lambda n: torch.zeros(2, 5), r"edge_index.*int64.*float32"),
    ("source_out_of_range", lambda n: torch.tensor([[0, n], [1, 2]]), r"\[0, 10\).*got max source 10"),
    ("target_out_of_range", lambda n: torch.tensor([[0, 1], [2, n + 5]]), r"\[0, 10\).*max target 15"),
    ("negative", lambda n: torch.tensor([[0, -1], [1, 2]]), r"non-negative"),
]


@pytest.mark.parametrize("layer", ["gcn", "sage_mean", "sage_max", "gat", "gat_edge_attr"])
@pytest.mark.parametrize("case", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_edge_index(case, layer):
    _, make, pattern = case
    s, _, _, with_attr = paired(layer)
    n = 10
    ei = make(n)
    kw = {"edge_attr": torch.zeros(ei.shape[-1], 2)} if with_attr else {}
    with torch.no_grad(), pytest.raises(sgnn.UserError, match=pattern):
        s(features(n, s.in_channels), ei, **kw)


def test_bad_edge_weight_and_x():
    s = GCNConv(8, 4)
    n, ei = make_graph("directed")
    with torch.no_grad():
        with pytest.raises(sgnn.UserError, match=rf"edge_weight.*\[{ei.size(1)}\].*\[7\]"):
            s(features(n, 8), ei, torch.ones(7))
        with pytest.raises(sgnn.UserError, match="'x'.*two-dimensional.*got 1"):
            s(torch.zeros(n), ei)

# ------------------------------------------------------------------ real data: Cora, CiteSeer
PLANETOID_FILES = ["x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"]


@pytest.fixture(scope="module", params=["Cora", "CiteSeer"])
def planetoid(request, tmp_path_factory):
    root = os.environ.get("SGNN_DATA")
    if not root:
        pytest.skip("SGNN_DATA is not set (expects $SGNN_DATA/planetoid/<Name>/raw/ind.<name>.*)")
    name = request.param
    raw = Path(root) / "planetoid" / name / "raw"
    missing = [f for f in PLANETOID_FILES if not (raw / f"ind.{name.lower()}.{f}").exists()]
    if missing:
        pytest.skip(f"{name}: raw Planetoid files missing under {raw}: {missing}")
    from torch_geometric.datasets import Planetoid
    tmp = tmp_path_factory.mktemp(name)
    (tmp / name).mkdir()
    (tmp / name / "raw").symlink_to(raw.resolve(), target_is_directory=True)  # processed/ is written in tmp
    return Planetoid(str(tmp), name)[0]


@pytest.mark.parametrize("layer", ["gcn", "sage_mean", "gat"])
def test_planetoid_layers(planetoid, layer):
    d = planetoid
    f = d.num_features
    s, p = {
        "gcn": (GCNConv(f, 16), pyg.GCNConv(f, 16)),
        "sage_mean": (SAGEConv(f, 16), pyg.SAGEConv(f, 16)),
        "gat": (GATConv(f, 8, heads=8), pyg.GATConv(f, 8, heads=8)),
    }[layer]
    assert_layer(s, p, d.x, d.edge_index)


class Block(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv
        self.drop = nn.Dropout(0.5)

    def forward(self, x, ei):
        return self.drop(F.elu(self.conv(x, ei)))


class TwoLayer(nn.Module):
    """Convolutions nested in a submodule and a ModuleList, with plain modules in between."""

    def __init__(self, first: nn.Module, second: nn.Module, hidden: int):
        super().__init__()
        self.body = Block(first)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.ModuleList([second])

    def forward(self, x, ei):
        return self.out[0](self.norm(self.body(x, ei)), ei)


@pytest.mark.parametrize("arch", ["gcn_gcn", "gat_sage"])
def test_from_pyg_two_layer_model(planetoid, arch):
    d = planetoid
    f, c = d.num_features, int(d.y.max()) + 1
    torch.manual_seed(0)
    if arch == "gcn_gcn":
        model = TwoLayer(pyg.GCNConv(f, 16), pyg.GCNConv(16, c), 16)
        kinds = (GCNConv, GCNConv)
    else:
        model = TwoLayer(pyg.GATConv(f, 8, heads=4), pyg.SAGEConv(32, c), 32)
        kinds = (GATConv, SAGEConv)
    model.eval()
    fast = from_pyg(model)
    assert isinstance(fast.body.conv, kinds[0]) and isinstance(fast.out[0], kinds[1])
    assert not isinstance(model.body.conv, kinds[0]), "from_pyg must not modify the original model"
    assert list(fast.state_dict().keys()) == list(model.state_dict().keys())
    assert not fast.training
    with torch.no_grad():
        ref = model(d.x, d.edge_index)
        out = fast(d.x, d.edge_index)
    assert_close(out, ref, f"{arch} logits")
    assert torch.equal(out.argmax(-1), ref.argmax(-1)), "predictions differ"


@pytest.mark.parametrize("arch", ["gcn", "sage", "gat"])
def test_training_parity_on_planetoid(planetoid, arch):
    """Same initial weights, dropout off, 20 Adam steps: every step's loss within 1e-4 relative of
    PyG's, and the parameter gradients within 1e-4 relative (of each tensor's largest gradient)."""
    d = planetoid
    f, c = d.num_features, int(d.y.max()) + 1
    torch.manual_seed(0)
    ref = {"gcn": lambda: pyg.models.GCN(f, 16, 2, c), "sage": lambda: pyg.models.GraphSAGE(f, 16, 2, c),
           "gat": lambda: pyg.models.GAT(f, 8, 2, c, heads=8)}[arch]()
    ours = from_pyg(ref)
    runs = []
    for model in (ours, ref):
        opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
        losses, grads = [], []
        for _ in range(20):
            opt.zero_grad()
            loss = F.cross_entropy(model(d.x, d.edge_index)[d.train_mask], d.y[d.train_mask])
            loss.backward()
            losses.append(loss.item())
            grads.append([p.grad.clone() for p in model.parameters()])
            opt.step()
        runs.append((losses, grads))
    (l_s, g_s), (l_p, g_p) = runs
    for step, (a, b) in enumerate(zip(l_s, l_p)):
        assert abs(a - b) <= 1e-4 * abs(b), f"step {step}: loss {a} vs PyG {b}"
    for step, (gs, gp) in enumerate(zip(g_s, g_p)):
        for a, b in zip(gs, gp):
            assert rel_error(a, b) <= 1e-4, f"step {step}: gradient rel. error {rel_error(a, b):.3g}"
