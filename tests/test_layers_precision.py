"""Layers in bfloat16 / float16 (``model.bfloat16()`` / ``model.half()``, features in that dtype).

Dense transforms run through torch's narrow GEMM, the sparse aggregation through narrow engine
kernels (float32 accumulation, one rounding). Each layer is compared with the same layer in float32
on the same rounded inputs and weights, and with PyG run in bfloat16.
"""
from __future__ import annotations

import copy

import pytest
import torch

from sgnn.layers import GATConv, GCNConv, SAGEConv, from_pyg

N, F, OUT = 2000, 32, 16
TOL = {torch.bfloat16: 3e-2, torch.float16: 4e-3}  # max |err| / max |ref|, output and GEMM rounding
LAYERS = {"gcn": lambda: GCNConv(F, OUT), "sage": lambda: SAGEConv(F, OUT),
          "sage_max": lambda: SAGEConv(F, OUT, aggr="max"), "gat": lambda: GATConv(F, OUT // 2, heads=2)}


@pytest.fixture(scope="module")
def graph():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(0, N, (12000,), generator=g)
    dst = (torch.rand(12000, generator=g).pow(3) * N).long()  # power-law in-degrees, empty rows
    return torch.stack([src, dst]), torch.randn(N, F, generator=g)


def _compare(out, ref, dt):
    assert out.dtype == dt and out.shape == ref.shape
    err = float((out.float() - ref).abs().max() / ref.abs().max())
    assert err <= TOL[dt], f"relative error {err:.3g} > {TOL[dt]:g}"
    agree = float((out.float().argmax(1) == ref.argmax(1)).float().mean())
    assert agree >= 0.99, f"argmax agreement {agree:.4f} < 0.99"


@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_vs_float32(graph, name, dt):
    ei, x = graph
    torch.manual_seed(1)
    m = LAYERS[name]().bfloat16() if dt == torch.bfloat16 else LAYERS[name]().half()
    xn = x.to(dt)
    with torch.no_grad():
        out = m(xn, ei)
        ref = copy.deepcopy(m).float()(xn.float(), ei)
    _compare(out, ref, dt)


@pytest.mark.parametrize("name", ["GCNConv", "SAGEConv", "GATConv"])
def test_from_pyg_bfloat16_vs_pyg(graph, name):
    pyg = pytest.importorskip("torch_geometric.nn")
    ei, x = graph
    torch.manual_seed(2)
    P = getattr(pyg, name)(F, OUT) if name != "GATConv" else pyg.GATConv(F, OUT // 2, heads=2)
    P = P.bfloat16()
    m = from_pyg(copy.deepcopy(P))
    assert next(m.parameters()).dtype == torch.bfloat16
    xb = x.bfloat16()
    with torch.no_grad():
        out, ref_bf16 = m(xb, ei), P(xb, ei)
        ref = copy.deepcopy(P).float()(xb.float(), ei)
    _compare(out, ref, torch.bfloat16)
    _compare(ref_bf16, ref, torch.bfloat16)  # PyG in bfloat16 is held to the same bound


@pytest.mark.parametrize("name", list(LAYERS))
def test_features_take_the_parameters_dtype(graph, name):
    """The layers' mixed-dtype rule: features are converted to the parameters' dtype."""
    ei, x = graph
    m = LAYERS[name]()
    with torch.no_grad():
        assert m.bfloat16()(x, ei).dtype == torch.bfloat16
        assert m.float()(x.bfloat16(), ei).dtype == torch.float32
