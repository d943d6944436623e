"""SAGEConv against PyG (every option) and DGL SAGEConv.

Every parity check goes through ``layer_helpers.assert_layer`` (STYLE item 14).
"""
from __future__ import annotations

import pytest
import torch
import torch_geometric.nn as pyg

from sgnn.layers import SAGEConv

from layer_helpers import (assert_close, assert_layer, dgl_graph, Fa, features, make_graph, opt_id,
                           random_edges, symmetric_graph, T, table)

# PyG converts a COO adj_t to CSR on every call and says so
pytestmark = pytest.mark.filterwarnings("ignore:Converting sparse tensor to CSR format:UserWarning")


# ------------------------------------------------------------------ SAGEConv
SAGE_SCENARIOS = [("directed", (8, 4)), ("duplicates", (4, 8))]
SAGE_CASES = [pytest.param(o, *SAGE_SCENARIOS[par], id=f"{opt_id(o)}-{SAGE_SCENARIOS[par][0]}")
              for o, par in table(aggr=("mean", "sum", "max"), normalize=(Fa, T), root_weight=(Fa, T),
                                  project=(Fa, T), bias=(Fa, T))]


@pytest.mark.parametrize("opts,graph,channels", SAGE_CASES)
def test_sage_options(opts, graph, channels):
    n, ei = make_graph(graph)
    assert_layer(SAGEConv(*channels, **opts), pyg.SAGEConv(*channels, **opts), features(n, channels[0]), ei)


@pytest.mark.parametrize("opts,out", [pytest.param(o, (4, 16)[par], id=f"{opt_id(o)}-out{(4, 16)[par]}")
                                      for o, par in table(aggr=("mean", "sum", "max"), root_weight=(Fa, T),
                                                          project=(Fa, T), bias=(T, Fa))])
def test_sage_bipartite(opts, out):
    x = (features(30, 8, seed=1), features(20, 6, seed=2))
    ei = random_edges(30, 20, 120, seed=4)
    assert_layer(SAGEConv((8, 6), out, **opts), pyg.SAGEConv((8, 6), out, **opts), x, ei)


@pytest.mark.parametrize("aggr", ["mean", "max"])
def test_sage_bipartite_without_target_features(aggr):
    x = (features(30, 8, seed=1), None)
    ei = random_edges(30, 20, 120, seed=4)
    assert_layer(SAGEConv(8, 5, aggr=aggr), pyg.SAGEConv(8, 5, aggr=aggr), x, ei, size=(30, 20))


# ------------------------------------------------------------------ DGL (symmetrised graphs)
@pytest.mark.parametrize("channels", [(8, 4), (4, 8)])
def test_dgl_sage_conv_mean(channels):
    dnn = pytest.importorskip("dgl.nn", reason="dgl is not importable")
    n, ei = symmetric_graph()
    p = pyg.SAGEConv(*channels, aggr="mean")
    out = assert_layer(SAGEConv(*channels, aggr="mean"), p, features(n, channels[0]), ei)
    d = dnn.SAGEConv(*channels, aggregator_type="mean")
    with torch.no_grad():
        d.fc_neigh.weight.copy_(p.lin_l.weight)  # neighbours: PyG lin_l (with the bias)
        d.fc_self.weight.copy_(p.lin_r.weight)   # root: PyG lin_r (no bias)
        d.fc_self.bias.copy_(p.lin_l.bias)       # DGL keeps the one bias in fc_self
        ref = d(dgl_graph(ei, n, self_loops=False), features(n, channels[0]))
    assert_close(out, ref, "sgnn SAGEConv vs DGL SAGEConv('mean')")
