"""The layers under ``torch.compile(fullgraph=True)``, ``torch.export`` and ``gradcheck``.

A compiled call is one ``sgnn::conv`` custom op (fake implementation for tracing, autograd formula
for training): no graph break, no fake tensor near native code, the eager numbers.
"""
from __future__ import annotations

import pytest
import torch
import torch_geometric.nn as pyg

from layer_helpers import features, make_graph
from sgnn.layers import GATConv, GCNConv, SAGEConv, from_pyg

MODELS = {"gcn": lambda: pyg.models.GCN(8, 16, 2, 4), "sage": lambda: pyg.models.GraphSAGE(8, 16, 2, 4),
          "gat": lambda: pyg.models.GAT(8, 16, 2, 4, heads=2)}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("arch", MODELS)
def test_compile_fullgraph_first_call_inference_and_training(arch):
    torch.manual_seed(0)
    n, ei = make_graph("self_loops")
    x = features(n, 8)
    model = from_pyg(MODELS[arch]())
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():  # the very first call goes through the compiler
        out_c = compiled.eval()(x, ei)
        out_e = model.eval()(x, ei)
    assert torch.allclose(out_c, out_e, atol=1e-6)
    model.train()
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    grads = []
    for fn, xx in ((compiled, xs[0]), (model, xs[1])):
        model.zero_grad()
        (fn(xx, ei) * torch.linspace(-1, 1, 4)).sum().backward()
        grads.append([xx.grad.clone()] + [p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_compiled_gat_dropout_gradients_follow_the_forward_mask():
    n, ei = make_graph("directed")
    conv = GATConv(8, 4, heads=2, dropout=0.5).train()
    compiled = torch.compile(conv, fullgraph=True)
    x = features(n, 8).requires_grad_(True)
    torch.manual_seed(3)
    out = compiled(x, ei)
    out.sum().backward()
    g_compiled = x.grad.clone()
    x.grad = None
    torch.manual_seed(3)
    eager = conv(x, ei)  # same RNG stream: same mask, so the same output and gradients
    assert torch.allclose(out, eager, atol=1e-6)
    eager.sum().backward()
    assert torch.allclose(g_compiled, x.grad, atol=1e-5)


@pytest.mark.parametrize("arch", MODELS)
def test_export(arch):
    n, ei = make_graph("directed")
    x = features(n, 8)
    model = from_pyg(MODELS[arch]()).eval()
    ep = torch.export.export(model, (x, ei))
    assert any("sgnn.conv" in str(node.target) for node in ep.graph.nodes)
    with torch.no_grad():
        assert torch.allclose(ep.module()(x, ei), model(x, ei), atol=1e-6)


CONFIGS = [(GCNConv, {}), (GCNConv, {"aggr": "max"}), (SAGEConv, {}), (SAGEConv, {"aggr": "max"}),
           (SAGEConv, {"aggr": "sum", "root_weight": False}), (GATConv, {"heads": 2}),
           (GATConv, {"heads": 2, "concat": False, "residual": True})]


@pytest.mark.parametrize("cls,opts", CONFIGS, ids=lambda c: getattr(c, "__name__", str(c)))
def test_gradcheck_float64(cls, opts):
    torch.manual_seed(0)
    ei = torch.tensor([[0, 1, 2, 3, 4, 1, 2], [1, 2, 3, 4, 0, 3, 0]])
    conv = cls(3, 2, **opts).double()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    params = list(conv.parameters())
    names = [name for name, _ in conv.named_parameters()]

    def fn(x, *ps):
        return torch.func.functional_call(conv, dict(zip(names, ps)), (x, ei))
    assert torch.autograd.gradcheck(fn, (x, *[p.detach().requires_grad_(True) for p in params]))
