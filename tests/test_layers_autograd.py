"""Training through the layers: outputs and gradients (parameters and features) equal PyG's.

Every configuration that used to return no ``grad_fn``, or gradients that silently missed a path
(GCN with in < out, SAGE with out > in or max, GAT concat/residual/edge_dim), is covered here.
"""
from __future__ import annotations

import pytest
import torch
import torch_geometric.nn as pyg

from layer_helpers import features, make_graph, randomize_zero_parameters, rel_error
from sgnn.layers import GATConv, GCNConv, SAGEConv, from_pyg

RTOL = 1e-4


def _grads(layer, x, ei, **kw):
    x = x.clone().requires_grad_(True)
    out = layer(x, ei, **kw)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * weight).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in layer.named_parameters()}


def assert_grads_match(ours, theirs, x, ei, **kw):
    randomize_zero_parameters(theirs)
    ours.load_state_dict(theirs.state_dict())
    out_s, gx_s, gp_s = _grads(ours, x, ei, **kw)
    out_p, gx_p, gp_p = _grads(theirs, x, ei, **kw)
    assert rel_error(out_s, out_p) <= RTOL, "output"
    assert gx_s is not None, "no gradient reached x"
    assert rel_error(gx_s, gx_p) <= RTOL, f"x.grad: {rel_error(gx_s, gx_p):.3g}"
    assert gp_s.keys() == gp_p.keys()
    for name in gp_p:
        assert gp_s[name] is not None, f"{name}: no gradient"
        assert rel_error(gp_s[name], gp_p[name]) <= RTOL, f"{name}.grad: {rel_error(gp_s[name], gp_p[name]):.3g}"


GRAPHS = ["directed", "self_loops", "duplicates", "isolated"]


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("channels", [(8, 4), (4, 8)])
@pytest.mark.parametrize("opts", [{}, {"improved": True}, {"normalize": False, "add_self_loops": False},
                                  {"bias": False}, {"aggr": "mean"}, {"aggr": "max"}])
def test_gcn_gradients(graph, channels, opts):
    n, ei = make_graph(graph)
    assert_grads_match(GCNConv(*channels, **opts), pyg.GCNConv(*channels, **opts), features(n, channels[0]), ei)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("channels", [(8, 4), (4, 8)])
@pytest.mark.parametrize("opts", [{}, {"aggr": "sum"}, {"aggr": "max"}, {"aggr": "min"}, {"root_weight": False},
                                  {"normalize": True}, {"project": True}, {"aggr": ["mean", "max", "std"]}])
def test_sage_gradients(graph, channels, opts):
    n, ei = make_graph(graph)
    assert_grads_match(SAGEConv(*channels, **opts), pyg.SAGEConv(*channels, **opts), features(n, channels[0]), ei)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("opts", [{"heads": 2}, {"heads": 2, "concat": False}, {"heads": 3, "residual": True},
                                  {"heads": 2, "concat": False, "residual": True}, {"add_self_loops": False},
                                  {"heads": 2, "aggr": "mean"}])
def test_gat_gradients(graph, opts):
    n, ei = make_graph(graph)
    assert_grads_match(GATConv(8, 4, **opts), pyg.GATConv(8, 4, **opts), features(n, 8), ei)


def test_gat_edge_attr_gradients():
    n, ei = make_graph("self_loops")
    attr = torch.randn(ei.size(1), 3, generator=torch.Generator().manual_seed(5))
    for fill in ("mean", 0.5, "max"):
        assert_grads_match(GATConv(8, 4, heads=2, edge_dim=3, fill_value=fill),
                           pyg.GATConv(8, 4, heads=2, edge_dim=3, fill_value=fill), features(n, 8), ei,
                           edge_attr=attr)


def test_gat_attention_dropout_in_train_mode():
    n, ei = make_graph("directed")
    x = features(n, 8)
    conv = GATConv(8, 4, heads=2, dropout=0.5).train()
    torch.manual_seed(0)
    a = conv(x, ei)
    b = conv(x, ei)
    assert not torch.allclose(a, b), "dropout must be random in train mode"
    full = GATConv(8, 4, heads=2, dropout=1.0).train()  # every attention weight dropped: bias only
    ref = pyg.GATConv(8, 4, heads=2, dropout=1.0).train()
    randomize_zero_parameters(ref)
    full.load_state_dict(ref.state_dict())
    assert rel_error(full(x, ei), ref(x, ei)) <= 1e-6
    xg = x.clone().requires_grad_(True)
    conv(xg, ei).sum().backward()
    assert xg.grad is not None and bool(xg.grad.abs().sum() > 0)
    conv.eval()
    assert torch.equal(conv(x, ei), conv(x, ei))


def test_two_layer_training_matches_pyg():
    """Twenty Adam steps of a 16 -> 32 -> 7 GCN: the first layer trains, losses track PyG's."""
    n, ei = make_graph("directed")
    x = features(n, 16)
    y = torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(0))
    ref = pyg.models.GCN(16, 32, 2, 7)
    ours = from_pyg(ref)
    losses = []
    for model in (ours, ref):
        torch.manual_seed(0)
        m = model
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        run = []
        for _ in range(20):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(x, ei), y)
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    for a, b in zip(*losses):
        assert abs(a - b) <= 1e-4 * abs(b)


def test_double_backward_is_refused():
    n, ei = make_graph("directed")
    x = features(n, 8).requires_grad_(True)
    out = GCNConv(8, 4)(x, ei)
    (g,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_inference_mode_with_trainable_parameters():
    n, ei = make_graph("directed")
    for conv in (GCNConv(8, 4), SAGEConv(8, 4), GATConv(8, 4, heads=2)):
        with torch.inference_mode():
            out = conv(features(n, 8), ei)
        assert out.grad_fn is None and not out.requires_grad
