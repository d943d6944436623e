"""GNN layers on the sparse compiler, drop-in for PyG's (same arguments and state_dict keys).

>>> from sgnn.layers import GCNConv, SAGEConv, GATConv, from_pyg
"""
from .from_pyg import from_pyg
from .gat_conv import GATConv
from .gcn_conv import GCNConv
from .graph import Graph, graph_of
from .sage_conv import SAGEConv
from . import pyg_fx

pyg_fx.install()  # to_hetero treats sgnn's convs as message passing (no PyG import here)

__all__ = ["GCNConv", "SAGEConv", "GATConv", "from_pyg", "Graph", "graph_of"]
