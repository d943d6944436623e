"""GCNConv against PyG (every option) and DGL GraphConv.

Every parity check goes through ``layer_helpers.assert_layer`` (STYLE item 14).
"""
from __future__ import annotations

import pytest
import torch
import torch_geometric.nn as pyg

from sgnn.layers import GCNConv

from layer_helpers import (assert_close, assert_layer, dgl_graph, edge_weight, Fa, features, flat,
                           make_graph, opt_id, symmetric_graph, T, table)

# PyG converts a COO adj_t to CSR on every call and says so
pytestmark = pytest.mark.filterwarnings("ignore:Converting sparse tensor to CSR format:UserWarning")


# ------------------------------------------------------------------ GCNConv: every option
# A scenario is (graph, weighted, channels); XW runs first when out <= in, else (ÂX)W. Each option
# combination runs in a complementary pair, so it sees both graphs, weights and channel orders.
GCN_PAIRS = [[("directed", Fa, (8, 4)), ("self_loops", T, (4, 8))],
             [("directed", T, (4, 8)), ("self_loops", Fa, (8, 4))]]
def scenario_id(sc) -> str:
    graph, weighted, (f_in, f_out) = sc
    return f"{graph}-{'w' if weighted else 'unw'}-{f_in}to{f_out}"


GCN_CASES = [pytest.param(flat(o), sc, id=f"{opt_id(flat(o))}-{scenario_id(sc)}")
             for o, par in table(improved=(Fa, T), cached=(Fa, T),
                                 **{"normalize,add_self_loops": ((T, T), (T, Fa), (Fa, Fa))}, bias=(Fa, T))
             for sc in GCN_PAIRS[par]]


@pytest.mark.parametrize("opts,scenario", GCN_CASES)
def test_gcn_options(opts, scenario):
    graph, weighted, channels = scenario
    n, ei = make_graph(graph)
    kw = {"edge_weight": edge_weight(ei.size(1))} if weighted else {}
    x = features(n, channels[0])
    assert_layer(GCNConv(*channels, **opts), pyg.GCNConv(*channels, **opts), x, ei, **kw)


def test_gcn_rejects_loops_without_normalize_like_pyg():
    with pytest.raises(ValueError, match="self-loops"):
        pyg.GCNConv(4, 4, normalize=False, add_self_loops=True)
    with pytest.raises(ValueError, match="self-loops"):
        GCNConv(4, 4, normalize=False, add_self_loops=True)


# ------------------------------------------------------------------ DGL (symmetrised graphs)
@pytest.mark.parametrize("channels", [(8, 4), (4, 8)])
def test_dgl_graph_conv(channels):
    dnn = pytest.importorskip("dgl.nn", reason="dgl is not importable")
    n, ei = symmetric_graph()
    p = pyg.GCNConv(*channels)
    out = assert_layer(GCNConv(*channels), p, features(n, channels[0]), ei)
    d = dnn.GraphConv(*channels, norm="both", allow_zero_in_degree=True)
    with torch.no_grad():
        d.weight.copy_(p.lin.weight.t())
        d.bias.copy_(p.bias)
        ref = d(dgl_graph(ei, n, self_loops=True), features(n, channels[0]))
    assert_close(out, ref, "sgnn GCNConv vs DGL GraphConv(norm='both') with self loops")
