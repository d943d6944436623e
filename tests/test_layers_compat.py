"""Drop-in compatibility with PyG's convs at the edges of the API (issue 8).

The behaviours of PyG's own conv tests, written for sgnn: EdgeIndex inputs, ``flow``,
MessagePassing options and unknown arguments, every aggregator, PyG's self-loop rule per input
type, lazy initialisation, static graphs, attention weights, dtype-preserving ``from_pyg``, and
graph caches that die with their graphs.
"""
from __future__ import annotations

import gc

import pytest
import torch
import torch_geometric.nn as pyg
from torch_geometric import EdgeIndex

from layer_helpers import adj_t, assert_close, features, make_graph, randomize_zero_parameters, rel_error
from sgnn.errors import NotSupported, UserError
from sgnn.layers import GATConv, GCNConv, SAGEConv, from_pyg
from sgnn.engine import operands

STAR = torch.tensor([[0, 0, 0, 1, 2, 3], [1, 2, 3, 0, 0, 0]])


def twin(ours, theirs):
    randomize_zero_parameters(theirs)
    ours.load_state_dict(theirs.state_dict())
    return ours.eval(), theirs.eval()


def same(ours, theirs, *args, rtol=1e-5, **kw):
    with torch.no_grad():
        assert_close(ours(*args, **kw), theirs(*args, **kw), "sgnn vs PyG", rtol)


LAYERS = {"gcn": (GCNConv, pyg.GCNConv, {}), "sage": (SAGEConv, pyg.SAGEConv, {}),
          "gat": (GATConv, pyg.GATConv, {"heads": 2})}


# ------------------------------------------------------------------ EdgeIndex
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("sort", [None, "col", "row"])
def test_edge_index_subclass(layer, sort):
    ours, theirs, kw = LAYERS[layer]
    n, ei = make_graph("duplicates")
    e = EdgeIndex(ei, sparse_size=(n, n))
    if sort is not None:
        e = e.sort_by(sort)[0]
    a, b = twin(ours(8, 4, **kw), theirs(8, 4, **kw))
    x = features(n, 8)
    same(a, b, x, e)
    with torch.no_grad():
        assert torch.equal(a(x, e), a(x, e.as_tensor()))


# ------------------------------------------------------------------ flow
@pytest.mark.parametrize("layer", LAYERS)
def test_flow_target_to_source(layer):
    ours, theirs, kw = LAYERS[layer]
    n, ei = make_graph("directed")
    a, b = twin(ours(8, 4, flow="target_to_source", **kw), theirs(8, 4, flow="target_to_source", **kw))
    same(a, b, features(n, 8), ei)
    s2t = ours(8, 4, **kw)
    s2t.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert_close(a(features(n, 8), ei), s2t.eval()(features(n, 8), ei.flip(0)), "flip equivalence")
    a.flow = "source_to_target"  # read at call time, as PyG does
    with torch.no_grad():
        assert_close(a(features(n, 8), ei.flip(0)), s2t(features(n, 8), ei.flip(0)), "flow set later")


def test_flow_checks():
    with pytest.raises(ValueError, match="flow"):
        GCNConv(4, 4, flow="sideways")
    conv = GCNConv(4, 4, flow="target_to_source")
    with pytest.raises(UserError, match="target_to_source"):
        conv(features(4, 4), adj_t(STAR, 4, 4))


# ------------------------------------------------------------------ constructor arguments
@pytest.mark.parametrize("layer", LAYERS)
def test_unknown_arguments_raise_type_error_like_pyg(layer):
    ours, theirs, kw = LAYERS[layer]
    for cls in (ours, theirs):
        with pytest.raises(TypeError):
            cls(4, 4, bogus=1, **kw)


def test_gat_node_dim_is_fixed_like_pyg():
    for cls in (GATConv, pyg.GATConv):
        with pytest.raises(TypeError):
            cls(4, 4, node_dim=1)


def test_decomposed_layers_accepted():
    a, b = twin(GCNConv(8, 4, decomposed_layers=2), pyg.GCNConv(8, 4, decomposed_layers=2))
    same(a, b, features(4, 8), STAR)


# ------------------------------------------------------------------ aggregators
@pytest.mark.parametrize("aggr", ["mean", "max", "min"])
@pytest.mark.parametrize("graph", ["directed", "self_loops", "isolated"])
def test_gcn_aggr(aggr, graph):
    n, ei = make_graph(graph)
    a, b = twin(GCNConv(8, 4, aggr=aggr), pyg.GCNConv(8, 4, aggr=aggr))
    same(a, b, features(n, 8), ei)
    w = torch.rand(ei.size(1), generator=torch.Generator().manual_seed(2))
    same(a, b, features(n, 8), ei, w)


@pytest.mark.parametrize("aggr", ["mean", "max", "min", "mul"])
def test_gat_aggr(aggr):
    n, ei = make_graph("self_loops")
    a, b = twin(GATConv(8, 4, heads=2, aggr=aggr), pyg.GATConv(8, 4, heads=2, aggr=aggr))
    same(a, b, features(n, 8), ei)


def test_unsupported_aggr_is_refused():
    with pytest.raises(NotSupported, match="aggr"):
        GCNConv(4, 4, aggr="std")
    with pytest.raises(NotSupported, match="aggr"):
        GATConv(4, 4, aggr="lstm")


SAGE_AGGRS = ["min", "mul", "std", "var", ["mean", "max", "std"], "softmax", "powermean", "lstm", "median"]


@pytest.mark.parametrize("aggr", SAGE_AGGRS, ids=str)
@pytest.mark.parametrize("graph", ["directed", "isolated"])
def test_sage_aggregators(aggr, graph):
    n, ei = make_graph(graph)
    if aggr == "lstm":  # PyG's LSTM aggregation needs edges sorted by target
        ei = ei[:, torch.sort(ei[1], stable=True).indices]
    torch.manual_seed(0)
    b = pyg.SAGEConv(8, 4, aggr=aggr)
    a = SAGEConv(8, 4, aggr=aggr)
    assert list(a.state_dict()) == list(b.state_dict())
    a, b = twin(a, b)
    same(a, b, features(n, 8), ei, rtol=1e-4)


def test_sage_aggregation_module_and_from_pyg():
    from torch_geometric.nn.aggr import SoftmaxAggregation
    n, ei = make_graph("directed")
    b = pyg.SAGEConv(8, 4, aggr=SoftmaxAggregation(learn=True))
    a = from_pyg(b)
    same(a.eval(), b.eval(), features(n, 8), ei)


@pytest.mark.parametrize("aggr", ["mean", "sum", "max"])
def test_sage_weighted_sparse_adj_like_pyg(aggr):
    n, ei = make_graph("directed")
    w = torch.rand(ei.size(1), generator=torch.Generator().manual_seed(4))
    a, b = twin(SAGEConv(8, 4, aggr=aggr), pyg.SAGEConv(8, 4, aggr=aggr))
    same(a, b, features(n, 8), adj_t(ei, n, n, w))


# ------------------------------------------------------------------ self loops by input type
@pytest.mark.parametrize("improved", [False, True])
@pytest.mark.parametrize("layout", [torch.sparse_csr, torch.sparse_coo])
def test_gcn_adj_t_with_self_loops_adds_like_pyg(improved, layout):
    n, ei = make_graph("self_loops")
    w = torch.rand(ei.size(1), generator=torch.Generator().manual_seed(4)) + 0.5
    a, b = twin(GCNConv(8, 4, improved=improved), pyg.GCNConv(8, 4, improved=improved))
    x = features(n, 8)
    same(a, b, x, adj_t(ei, n, n, w, layout))  # sparse: the loop weight is added to the stored one
    same(a, b, x, ei, w)  # edge_index: existing loops are replaced


# ------------------------------------------------------------------ static graphs, lazy init
@pytest.mark.parametrize("layer", ["gcn", "sage"])
def test_static_graph_batch(layer):
    ours, theirs, kw = LAYERS[layer]
    a, b = twin(ours(16, 32), theirs(16, 32))
    x = torch.randn(3, 4, 16)
    same(a, b, x, STAR)
    assert a(x, STAR).shape == (3, 4, 32)


@pytest.mark.parametrize("layer", LAYERS)
def test_lazy_initialisation(layer):
    ours, theirs, kw = LAYERS[layer]
    n, ei = make_graph("directed")
    conv = ours(-1, 4, **kw)
    out = conv(features(n, 8), ei)
    assert out.shape[0] == n and conv.state_dict().keys() == theirs(8, 4, **kw).state_dict().keys()
    ref = theirs(-1, 4, **kw)
    ref(features(n, 8), ei)
    lazy = ours(-1, 4, **kw)
    a, b = twin(lazy, ref)
    same(a, b, features(n, 8), ei)
    fresh = from_pyg(theirs(-1, 4, **kw))  # converted before PyG initialised it
    assert fresh(features(n, 8), ei).shape == out.shape


def test_lazy_bipartite_sage():
    conv = SAGEConv((-1, -1), 4)
    out = conv((features(4, 8), features(2, 6)), torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]]))
    assert out.shape == (2, 4)


# ------------------------------------------------------------------ attention weights
@pytest.mark.parametrize("opts", [{}, {"add_self_loops": False}, {"flow": "target_to_source"}])
def test_gat_return_attention_weights(opts):
    n, ei = make_graph("self_loops")
    a, b = twin(GATConv(8, 4, heads=2, **opts), pyg.GATConv(8, 4, heads=2, **opts))
    x = features(n, 8)
    with torch.no_grad():
        out_a, (ei_a, al_a) = a(x, ei, return_attention_weights=True)
        out_b, (ei_b, al_b) = b(x, ei, return_attention_weights=True)
        assert_close(out_a, out_b, "output")
        assert torch.equal(ei_a, ei_b), "edge order"
        assert_close(al_a, al_b, "attention")
        assert_close(out_a, a(x, ei), "fused kernel vs edge-wise")


def test_gat_return_attention_weights_sparse():
    a = GATConv(8, 32, heads=2).eval()
    x = features(4, 8)
    ei = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])
    with torch.no_grad():
        out, (adj, alpha) = a(x, adj_t(ei, 4, 4), return_attention_weights=True)
        assert_close(out, a(x, ei), "sparse vs edge_index")
    assert adj.shape == (4, 4, 2) and adj._nnz() == 7
    assert float(alpha.min()) >= 0 and float(alpha.max()) <= 1


def test_gat_empty_graph():
    out = GATConv(8, 32, heads=2)(torch.randn(0, 8), torch.empty(2, 0, dtype=torch.long))
    assert out.shape == (0, 64)


# ------------------------------------------------------------------ from_pyg
def test_from_pyg_keeps_dtype():
    n, ei = make_graph("directed")
    for model in (pyg.models.GCN(8, 16, 2, 4), pyg.models.GraphSAGE(8, 16, 2, 4), pyg.models.GAT(8, 16, 2, 4)):
        ref = model.double().eval()
        fast = from_pyg(ref)
        assert all(p.dtype == torch.float64 for p in fast.parameters())
        x = features(n, 8).double()
        with torch.no_grad():
            assert rel_error(fast(x, ei), ref(x, ei)) <= 1e-10


def test_from_pyg_refuses_hooks():
    conv = pyg.GCNConv(4, 4)
    conv.register_propagate_forward_hook(lambda *a: None)
    with pytest.raises(UserError, match="hooks"):
        from_pyg(conv)


def test_from_pyg_carries_flow_and_aggr():
    n, ei = make_graph("directed")
    for ref in (pyg.GCNConv(8, 4, aggr="max", flow="target_to_source"),
                pyg.GATConv(8, 4, heads=2, aggr="mean", flow="target_to_source"),
                pyg.SAGEConv(8, 4, aggr=["mean", "max"], flow="target_to_source")):
        randomize_zero_parameters(ref)
        same(from_pyg(ref).eval(), ref.eval(), features(n, 8), ei)


# ------------------------------------------------------------------ caches die with their graphs
def test_graph_cache_entries_die_with_their_graph():
    conv = GCNConv(8, 4)
    x = features(30, 8)
    before = len(operands._tables)
    for seed in range(200):
        ei = torch.randint(0, 30, (2, 60), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            conv(x, ei)
        del ei
    gc.collect()
    assert len(operands._tables) <= before + 1


# ------------------------------------------------------------------ heterogeneous graphs
HETERO_X = {"paper": features(6, 8, seed=1), "author": features(4, 5, seed=2)}
HETERO_EI = {("paper", "cites", "paper"): torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]]),
             ("author", "writes", "paper"): torch.tensor([[0, 1, 2, 3], [0, 0, 1, 5]]),
             ("paper", "rev_writes", "author"): torch.tensor([[0, 0, 1, 5], [0, 1, 2, 3]])}
HETERO_CONVS = {"sage": (lambda: SAGEConv((-1, -1), 16), lambda: pyg.SAGEConv((-1, -1), 16)),
                "gat": (lambda: GATConv((-1, -1), 16, heads=2, add_self_loops=False),
                        lambda: pyg.GATConv((-1, -1), 16, heads=2, add_self_loops=False))}


class _TwoLayer(torch.nn.Module):
    def __init__(self, make):
        super().__init__()
        self.c1, self.c2 = make(), make()

    def forward(self, x, edge_index):
        return self.c2(self.c1(x, edge_index).relu(), edge_index)


def _same_hetero(ours, ref, what: str) -> None:
    with torch.no_grad():
        ours(HETERO_X, HETERO_EI), ref(HETERO_X, HETERO_EI)  # lazy shapes
    randomize_zero_parameters(ref)
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        a, b = ours(HETERO_X, HETERO_EI), ref(HETERO_X, HETERO_EI)
    for key in b:
        assert_close(a[key], b[key], f"{what} {key}")


@pytest.mark.parametrize("kind", HETERO_CONVS)
def test_to_hetero(kind):
    ours_make, ref_make = HETERO_CONVS[kind]
    meta = (list(HETERO_X), list(HETERO_EI))
    _same_hetero(pyg.to_hetero(_TwoLayer(ours_make), meta), pyg.to_hetero(_TwoLayer(ref_make), meta), "to_hetero")


@pytest.mark.parametrize("kind", HETERO_CONVS)
def test_hetero_conv(kind):
    ours_make, ref_make = HETERO_CONVS[kind]
    _same_hetero(pyg.HeteroConv({k: ours_make() for k in HETERO_EI}),
                 pyg.HeteroConv({k: ref_make() for k in HETERO_EI}), "HeteroConv")


# ------------------------------------------------------------------ explain a layer call
@pytest.mark.parametrize("layer", LAYERS)
def test_explain_a_layer_call(layer):
    import sgnn
    ours, _, kw = LAYERS[layer]
    n, ei = make_graph("directed")
    e = sgnn.explain(ours(8, 4, **kw), features(n, 8), ei)
    assert e.kernels and e.decisions, "a layer call runs kernels and makes decisions"
    text = str(e)
    assert type(ours(8, 4, **kw)).__name__ in text and "== loop IR" in text and "== layer decisions" in text
