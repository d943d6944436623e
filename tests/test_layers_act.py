"""Fused activations (``act=``, sgnn's extension): equal to the PyG layer followed by the activation,
on every code path (kernel epilogue, after the GEMM, after normalize / mean of heads / residual),
and ``from_pyg`` moving a BasicGNN's activation into its convs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch_geometric.nn as pyg
from torch import nn

from sgnn.errors import UserError
from sgnn.layers import GATConv, GCNConv, SAGEConv, from_pyg
from sgnn.layers.activation import Act, resolve

from layer_helpers import assert_close, features, make_graph, random_edges

ACTS = {"relu": F.relu, "elu": F.elu, "leaky_relu": F.leaky_relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}

# (id, sgnn constructor, PyG constructor, channels): each path through the layers once
CASES = [
    ("gcn_xw_first", GCNConv, pyg.GCNConv, (8, 4), {}),
    ("gcn_ax_first", GCNConv, pyg.GCNConv, (4, 8), {}),
    ("gcn_no_bias", GCNConv, pyg.GCNConv, (4, 8), {"bias": False}),
    ("sage_mean_fused", SAGEConv, pyg.SAGEConv, (8, 4), {}),
    ("sage_mean_ax_first", SAGEConv, pyg.SAGEConv, (4, 8), {}),
    ("sage_sum_normalize", SAGEConv, pyg.SAGEConv, (8, 4), {"aggr": "sum", "normalize": True}),
    ("sage_max", SAGEConv, pyg.SAGEConv, (8, 4), {"aggr": "max"}),
    ("sage_no_root", SAGEConv, pyg.SAGEConv, (4, 8), {"root_weight": False}),
    ("gat_concat", GATConv, pyg.GATConv, (8, 4), {"heads": 2}),
    ("gat_mean_heads", GATConv, pyg.GATConv, (8, 4), {"heads": 2, "concat": False}),
    ("gat_residual", GATConv, pyg.GATConv, (8, 4), {"heads": 2, "residual": True}),
    ("gat_no_bias", GATConv, pyg.GATConv, (8, 4), {"heads": 3, "bias": False}),
]


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_act_equals_layer_then_activation(case, act):
    _, S, P, (f_in, f_out), opts = case
    n, ei = make_graph("duplicates")
    x = features(n, f_in)
    p = P(f_in, f_out, **opts)
    s = S(f_in, f_out, act=act, **opts)
    s.load_state_dict(p.state_dict())
    with torch.no_grad():
        for name, prm in p.named_parameters():           # non-zero biases: their place is checked too
            if name.endswith("bias"):
                prm.copy_(torch.linspace(-0.5, 0.5, prm.numel()))
        s.load_state_dict(p.state_dict())
        ref = ACTS[act](p(x, ei))
        assert_close(s(x, ei), ref, f"{case[0]} act={act}")
    with torch.inference_mode():
        assert_close(s(x, ei), ref, f"{case[0]} act={act} (inference_mode)")


def test_act_on_a_big_graph_with_sparse_features():
    """The paths with large (huge-page) buffers and a sparse×dense X·W, with ReLU fused."""
    x = (torch.rand(3000, 64, generator=torch.Generator().manual_seed(0)) < 0.05).float()
    ei = random_edges(3000, 3000, 20000, seed=3)
    for S, P, ch in [(GCNConv, pyg.GCNConv, (64, 16)), (GCNConv, pyg.GCNConv, (64, 512)),
                     (SAGEConv, pyg.SAGEConv, (64, 16)), (SAGEConv, pyg.SAGEConv, (64, 512))]:
        p, s = P(*ch), S(*ch, act="relu")
        s.load_state_dict(p.state_dict())
        with torch.no_grad():
            assert_close(s(x, ei), p(x, ei).relu(), f"{S.__name__}{ch}")


def test_resolve():
    assert resolve(None) is None
    assert resolve("ReLU") == Act("relu")
    assert resolve(nn.ELU(alpha=0.5)) == Act("elu", 0.5)
    assert resolve(nn.LeakyReLU(0.3)) == Act("leaky_relu", 0.3)
    assert resolve(nn.Tanh()) == Act("tanh")
    with pytest.raises(UserError, match="gelu"):
        resolve("gelu")
    with pytest.raises(UserError, match="cannot fuse"):
        resolve(nn.GELU())


def test_repr_shows_act():
    assert "act=relu" in repr(GCNConv(4, 4, act="relu"))
    assert "act=" not in repr(GCNConv(4, 4))


@pytest.mark.parametrize("model", ["GCN", "GraphSAGE", "GAT"])
@pytest.mark.parametrize("act", ["relu", "elu", "leaky_relu"])
def test_from_pyg_fuses_basic_gnn_activation(model, act):
    torch.manual_seed(0)
    net = getattr(pyg.models, model)(8, 16, num_layers=3, out_channels=5, act=act).eval()
    n, ei = make_graph("directed")
    x = features(n, 8)
    fast = from_pyg(net)
    assert fast.act is None and net.act is not None
    assert all(c.act is not None for c in fast.convs[:-1]) and fast.convs[-1].act is None
    with torch.no_grad():
        assert_close(fast(x, ei), net(x, ei), f"{model} {act}")
    plain = from_pyg(net, fuse_activations=False)
    assert plain.act is not None and all(c.act is None for c in plain.convs)


def test_from_pyg_leaves_models_with_norms_alone():
    net = pyg.models.GCN(8, 16, num_layers=2, out_channels=5, norm="batch_norm").eval()
    fast = from_pyg(net)
    assert fast.act is not None and all(c.act is None for c in fast.convs)
    n, ei = make_graph("directed")
    x = features(n, 8)
    with torch.no_grad():
        assert_close(fast(x, ei), net(x, ei), "GCN with batch norm")
