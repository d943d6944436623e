"""Graph structure shared by the layers: the adjacency ``A[target, source]`` as a CSR, built once.

``graph_of(edge_index, ...)`` accepts a PyG ``edge_index`` ([2, E], row 0 = source), an
``sgnn.SparseTensor`` or a torch sparse adjacency (both read as ``adj_t``: rows are targets),
or a PyG ``EdgeIndex``. Built graphs are cached per input tensor through a weak reference and
re-validated by the tensor's version counter, data pointer and shape, so an in-place edit or a
different graph never hits a stale entry. Quantities derived from a graph (degrees,
normalisations, self-loop variants) are cached on the ``Graph`` itself.
"""
from __future__ import annotations

import torch

from ..engine import SparseTensor
from ..engine.formats import CSR, Format
from ..errors import UserError
from ._common import TensorCache

_cache = TensorCache()


class Graph:
    """``A[target, source]`` in CSR (duplicates kept, as message passing sees them) plus a cache."""

    def __init__(self, adj: SparseTensor, edge_perm: torch.Tensor | None = None,
                 edge_index: torch.Tensor | None = None):
        self.adj = adj
        self.edge_perm = edge_perm  # CSR position -> original edge id (edge_index inputs only)
        self.edge_index = edge_index
        self._derived: dict = {}

    @property
    def num_dst(self) -> int:
        return self.adj.shape[0]

    @property
    def num_src(self) -> int:
        return self.adj.shape[1]

    def derived(self, key, make):
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    def rows(self) -> torch.Tensor:
        """Target node of every stored edge, in CSR order."""
        return self.derived("rows", lambda: self.adj.coordinates()[0].long())

    def cols(self) -> torch.Tensor:
        return self.adj.crd[1].long()

    def in_degree(self, weighted: bool = True) -> torch.Tensor:
        """Sum of incoming edge weights (edge count for a pattern-only graph), float64."""
        def make():
            pos = self.adj.pos[1].long()
            if self.adj.values is None or not weighted:
                return (pos[1:] - pos[:-1]).to(torch.float64)
            out = torch.zeros(self.num_dst, dtype=torch.float64)
            return out.index_add_(0, self.rows(), self.adj.values.to(torch.float64))
        return self.derived(("deg", weighted), make)

    def split_self_loops(self) -> tuple["Graph", torch.Tensor, torch.Tensor]:
        """(graph without self loops, per-node "had a loop", weight of its last stored loop)."""
        def make():
            r, c = self.rows(), self.cols()
            loop = r == c
            has = torch.zeros(self.num_dst, dtype=torch.bool)
            has[r[loop]] = True
            old = torch.zeros(self.num_dst, dtype=torch.float64)
            if self.adj.values is not None and bool(loop.any()):
                ids = self.edge_perm if self.edge_perm is not None else torch.arange(r.numel())
                order = torch.argsort(ids[loop])  # the last loop edge (by original order) wins, as in PyG
                old[r[loop][order]] = self.adj.values[loop][order].to(torch.float64)
            if not bool(loop.any()):
                return self, has, old
            keep = ~loop
            vals = None if self.adj.values is None else self.adj.values[keep]
            m = SparseTensor.from_coo(r[keep], c[keep], _ids(keep), tuple(self.adj.shape), sum_duplicates=False)
            sel = m.values.long()  # position among kept edges
            kept_perm = None if self.edge_perm is None else self.edge_perm[keep][sel]
            base = Graph(m.with_values(None if vals is None else vals[sel]), kept_perm)
            return base, has, old
        return self.derived("split_loops", make)

    def has_self_loop(self) -> torch.Tensor:
        """Per target node: whether an edge i -> i is stored."""
        def make():
            r, c = self.rows(), self.cols()
            loop = (r == c)
            out = torch.zeros(self.num_dst, dtype=torch.bool)
            out[r[loop]] = True
            return out
        return self.derived("has_loop", make)

    def with_self_loops(self) -> "Graph":
        """Self loops removed, then one added per node of the square part (PyG GATConv's rule)."""
        def make():
            r, c = self.rows(), self.cols()
            keep = r != c
            n = min(self.num_dst, self.num_src)
            loops = torch.arange(n, dtype=torch.int64)
            ids = torch.arange(r.numel(), dtype=torch.int64)
            ids = self.edge_perm[ids] if self.edge_perm is not None else ids
            # edge ids of kept edges; self loops get id -1 - node so fill values can be placed later
            rr = torch.cat([r[keep], loops])
            cc = torch.cat([c[keep], loops])
            eid = torch.cat([ids[keep], -1 - loops]).to(torch.float64)
            m = SparseTensor.from_coo(rr, cc, eid, tuple(self.adj.shape), sum_duplicates=False)
            perm = m.values.long()
            return Graph(m.with_values(None) if self.adj.values is None else
                         m.with_values(_loop_values(self.adj, perm, self.edge_perm)), perm)
        return self.derived("self_loops", make)


def _ids(mask: torch.Tensor) -> torch.Tensor:
    return torch.arange(int(mask.sum()), dtype=torch.float64)


def _loop_values(adj: SparseTensor, perm: torch.Tensor, orig_perm) -> torch.Tensor:
    """Edge weights carried through a rebuild: kept edges keep theirs, new loops get 1."""
    vals = torch.ones(perm.numel(), dtype=adj.values.dtype)
    # original CSR position of each kept edge: invert orig_perm (edge id -> CSR position)
    n_edges = adj.nnz
    if orig_perm is not None:
        where = torch.empty(n_edges, dtype=torch.int64)
        where[orig_perm] = torch.arange(n_edges)
    else:
        where = torch.arange(n_edges)
    kept = perm >= 0
    vals[kept] = adj.values[where[perm[kept]]]
    return vals


def _check_edge_index(ei: torch.Tensor) -> None:
    if ei.dim() != 2 or ei.size(0) != 2:
        raise UserError(f"Expected 'edge_index' of shape [2, num_edges] (got {list(ei.shape)})")
    if ei.dtype not in (torch.int64, torch.int32):
        raise UserError(f"Expected 'edge_index' to hold int64 or int32 indices (got {ei.dtype})")
    if ei.device.type != "cpu":
        raise UserError(f"Expected 'edge_index' on the CPU (got device {ei.device})")


def graph_of(edge_index, num_src: int, num_dst: int, edge_weight: torch.Tensor | None = None) -> Graph:
    """The cached ``Graph`` of any supported adjacency input."""
    if isinstance(edge_index, Graph):
        return edge_index
    if isinstance(edge_index, SparseTensor):
        return edge_index.derived(("graph",), lambda: _graph_from_sparse(edge_index))
    if not isinstance(edge_index, torch.Tensor):
        name = type(edge_index).__name__
        if name == "SparseTensor" and hasattr(edge_index, "csr"):  # torch_sparse.SparseTensor (adj_t)
            rowptr, col, val = edge_index.csr()
            st = SparseTensor.from_csr(rowptr, col, val, tuple(edge_index.sizes()))
            return graph_of(st, num_src, num_dst)
        raise UserError(f"Expected 'edge_index' to be a Tensor, an sgnn.SparseTensor or a torch sparse "
                        f"tensor (got {name})")
    if edge_index.layout != torch.strided:
        key = (edge_index.layout,)
        return _cached(edge_index, key, lambda: _graph_from_sparse(SparseTensor.from_torch(edge_index)))
    _check_edge_index(edge_index)
    if edge_weight is not None:
        if not isinstance(edge_weight, torch.Tensor) or edge_weight.dim() != 1 or \
                edge_weight.numel() != edge_index.size(1):
            raise UserError(f"Expected 'edge_weight' of shape [{edge_index.size(1)}] "
                            f"(got {list(getattr(edge_weight, 'shape', []))})")
    wkey = None if edge_weight is None else _weight_key(edge_weight)
    key = ("ei", num_src, num_dst, wkey)
    return _cached(edge_index, key, lambda: _graph_from_edge_index(edge_index, num_src, num_dst, edge_weight))


def _weight_key(w: torch.Tensor):
    """Identity of an edge-weight tensor (its content when it is an inference tensor)."""
    if w.is_inference():
        return ("content", w.dtype, tuple(w.shape), hash(w.numpy().tobytes()) if w.numel() < 1 << 22 else id(w))
    return (id(w), w._version, w.data_ptr(), w.dtype)


def _storage_ptr(t: torch.Tensor):
    """Where a tensor's data lives (sparse tensors: their index and value arrays)."""
    if t.layout == torch.strided:
        return t.data_ptr()
    if t.layout == torch.sparse_coo:
        return (t._indices().data_ptr(), t._values().data_ptr())
    if t.layout == torch.sparse_csr:
        return (t.crow_indices().data_ptr(), t.col_indices().data_ptr(), t.values().data_ptr())
    if t.layout == torch.sparse_csc:
        return (t.ccol_indices().data_ptr(), t.row_indices().data_ptr(), t.values().data_ptr())
    return id(t)


def _cached(t: torch.Tensor, key, make) -> Graph:
    """The graph built from ``t`` (and ``key``), rebuilt when ``t`` changed since.

    A normal tensor is compared by its version counter (bumped by every in-place edit); an
    inference tensor has none, so its content is compared with a kept copy (O(E), far below
    the cost of the layer itself)."""
    inference = t.is_inference()
    full = (None if inference else t._version, _storage_ptr(t), tuple(t.shape), t.dtype, *key)
    entries = _cache.get(t)
    if entries is None:
        entries = {}
        _cache.set(t, entries)
    hit = entries.get(full)
    if hit is not None and (not inference or torch.equal(hit[1], t)):
        return hit[0]
    if len(entries) > 8:
        entries.clear()
    g = make()
    entries[full] = (g, t.clone() if inference else None)
    return g


def _graph_from_edge_index(ei: torch.Tensor, num_src: int, num_dst: int, w) -> Graph:
    ei = ei.as_subclass(torch.Tensor) if type(ei) is not torch.Tensor else ei
    src, dst = ei[0], ei[1]
    if src.numel():
        if int(src.min()) < 0 or int(dst.min()) < 0:
            raise UserError("Expected 'edge_index' to hold non-negative node indices (got a negative index)")
        if int(src.max()) >= num_src or int(dst.max()) >= num_dst:
            raise UserError(f"Expected 'edge_index' sources in [0, {num_src}) and targets in [0, {num_dst}) "
                            f"(got max source {int(src.max())}, max target {int(dst.max())})")
    ids = torch.arange(src.numel(), dtype=torch.float64)
    m = SparseTensor.from_coo(dst, src, ids, (num_dst, num_src), sum_duplicates=False)
    perm = m.values.long()
    vals = None if w is None else w.detach().to(torch.float32 if not w.is_floating_point() else w.dtype)[perm]
    return Graph(m.with_values(vals), perm, ei)


def _graph_from_sparse(t: SparseTensor) -> Graph:
    if t.ndim != 2:
        raise UserError(f"Expected a 2-dimensional adjacency (got {t.ndim} dimensions)")
    a = t if t.format in (CSR, Format("du")) else t.to(CSR)
    return Graph(a)
