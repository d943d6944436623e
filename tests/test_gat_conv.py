"""GATConv against PyG (every option) and DGL GATConv.

Every parity check goes through ``layer_helpers.assert_layer`` (STYLE item 14).
"""
from __future__ import annotations

import pytest
import torch
import torch_geometric.nn as pyg

from sgnn.layers import GATConv

from layer_helpers import (assert_close, assert_layer, dgl_graph, Fa, features, flat, make_graph, opt_id,
                           random_edges, symmetric_graph, T, table)

# PyG converts a COO adj_t to CSR on every call and says so
pytestmark = pytest.mark.filterwarnings("ignore:Converting sparse tensor to CSR format:UserWarning")


# ------------------------------------------------------------------ GATConv
GAT_GRAPHS = ["directed", "messy"]  # messy: self loops and duplicate edges (no sparse-input checks there)
GAT_CASES = [pytest.param(flat(o), GAT_GRAPHS[par], id=f"{opt_id(flat(o))}-{GAT_GRAPHS[par]}")
             for o, par in table(heads=(1, 3), concat=(T, Fa),
                                 **{"negative_slope,dropout": ((0.2, 0.0), (0.5, 0.6))},
                                 add_self_loops=(T, Fa), bias=(T, Fa), residual=(Fa, T))]


@pytest.mark.parametrize("opts,graph", GAT_CASES)
def test_gat_options(opts, graph):
    n, ei = make_graph(graph)
    assert_layer(GATConv(8, 4, **opts), pyg.GATConv(8, 4, **opts), features(n, 8), ei)


FILLS = ["mean", "add", "max", 0.5]


@pytest.mark.parametrize("graph", ["messy", "isolated"])
@pytest.mark.parametrize("loops_fill", [(T, f) for f in FILLS] + [(Fa, "mean")],
                         ids=lambda lf: f"loops{int(lf[0])}-fill{lf[1]}")
def test_gat_edge_attr(loops_fill, graph):
    loops, fill = loops_fill
    n, ei = make_graph(graph)
    ea = features(ei.size(1), 3, seed=5)
    opts = dict(heads=2, edge_dim=3, add_self_loops=loops, fill_value=fill)
    assert_layer(GATConv(8, 4, **opts), pyg.GATConv(8, 4, **opts), features(n, 8), ei, edge_attr=ea)


def test_gat_edge_attr_one_dimensional_one_head():
    n, ei = make_graph("self_loops")
    ea = features(ei.size(1), 1, seed=5).view(-1)
    opts = dict(heads=1, edge_dim=1, fill_value="add")
    assert_layer(GATConv(8, 4, **opts), pyg.GATConv(8, 4, **opts), features(n, 8), ei, edge_attr=ea)


@pytest.mark.parametrize("opts", [dict(residual=Fa, bias=T), dict(residual=T, bias=T), dict(residual=T, bias=Fa)],
                         ids=opt_id)
@pytest.mark.parametrize("in_channels", [(8, 6), 8], ids=["lin_src_dst", "shared_lin"])
def test_gat_edge_attr_heads_averaged(in_channels, opts):
    """concat=False with edge features: the planner peels the head mean off the edge logits'
    [i, j, h] storage (it used to raise NotSupported in eval()); it is averaged after the kernel."""
    f_dst = in_channels[1] if isinstance(in_channels, tuple) else in_channels
    x = (features(30, 8, seed=1), features(30, f_dst, seed=2)) if isinstance(in_channels, tuple) else features(30, 8)
    ei = random_edges(30, 30, 150, seed=4, loops=True)
    kw = dict(heads=3, concat=Fa, edge_dim=3, **opts)
    assert_layer(GATConv(in_channels, 4, **kw), pyg.GATConv(in_channels, 4, **kw), x, ei,
                 edge_attr=features(ei.size(1), 3, seed=5))


GAT_BIPARTITE = [dict(heads=1, residual=Fa, edge_dim=None), dict(heads=2, residual=T, edge_dim=None),
                 dict(heads=1, residual=T, edge_dim=3), dict(heads=2, residual=Fa, edge_dim=3)]


@pytest.mark.parametrize("opts", GAT_BIPARTITE, ids=opt_id)
@pytest.mark.parametrize("loops", [T, Fa], ids=["loops1", "loops0"])
@pytest.mark.parametrize("in_channels", [(8, 6), 8], ids=["lin_src_dst", "shared_lin"])
def test_gat_bipartite(in_channels, loops, opts):
    f_dst = in_channels[1] if isinstance(in_channels, tuple) else in_channels
    x = (features(30, 8, seed=1), features(20, f_dst, seed=2))
    ei = random_edges(30, 20, 120, seed=4, loops=True)
    kw = {"edge_attr": features(ei.size(1), 3, seed=5)} if opts["edge_dim"] else {}
    assert_layer(GATConv(in_channels, 4, add_self_loops=loops, **opts),
                 pyg.GATConv(in_channels, 4, add_self_loops=loops, **opts), x, ei, **kw)


def test_gat_bipartite_without_target_features():
    x = (features(30, 8, seed=1), None)
    ei = random_edges(30, 20, 120, seed=4, loops=True)
    assert_layer(GATConv(8, 4, heads=2), pyg.GATConv(8, 4, heads=2), x, ei, size=(30, 20))


# ------------------------------------------------------------------ DGL (symmetrised graphs)
@pytest.mark.parametrize("heads", [1, 3])
def test_dgl_gat_conv(heads):
    dnn = pytest.importorskip("dgl.nn", reason="dgl is not importable")
    n, ei = symmetric_graph()
    p = pyg.GATConv(8, 4, heads=heads)
    out = assert_layer(GATConv(8, 4, heads=heads), p, features(n, 8), ei)
    d = dnn.GATConv(8, 4, num_heads=heads, negative_slope=0.2)
    with torch.no_grad():
        d.fc.weight.copy_(p.lin.weight)
        d.attn_l.copy_(p.att_src)
        d.attn_r.copy_(p.att_dst)
        d.bias.copy_(p.bias)
        ref = d(dgl_graph(ei, n, self_loops=True), features(n, 8)).reshape(n, heads * 4)
    assert_close(out, ref, "sgnn GATConv vs DGL GATConv with self loops")
