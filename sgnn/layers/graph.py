"""Graph structure shared by the layers: the adjacency ``A[target, source]`` as a CSR, built once.

``graph_of(edge_index, ...)`` accepts a PyG ``edge_index`` ([2, E], row 0 = source), an
``sgnn.SparseTensor`` or a torch sparse adjacency (both read as ``adj_t``: rows are targets),
or a PyG ``EdgeIndex`` (its cached CSC is used directly when it is sorted by target). Built
graphs are cached per input tensor through a weak reference and re-validated by the tensor's
version counter, data pointer and shape, so an in-place torch edit or a different graph never
hits a stale entry; an entry dies with its tensor. Edits that bypass torch (writing through
``edge_index.numpy()``) do not bump the version counter and are not seen: edit through torch.
Quantities derived from a graph (degrees, normalisations, self-loop variants) are cached on
the ``Graph`` itself.
"""
from __future__ import annotations

import threading
import weakref

import torch

from ..engine import SparseTensor, memory, operands
from ..engine.formats import CSR, Format
from ..errors import UserError


SMALL = 1 << 22  # graphs up to this many stored edges keep their E-sized int64 index arrays cached
CHUNK = 1 << 22  # entries scanned per step where an E-sized temporary would be too big


class Graph:
    """``A[target, source]`` in CSR (duplicates kept, as message passing sees them) plus a cache.

    ``edge_perm`` (CSR position -> original edge id) exists for ``edge_index`` inputs; it may be
    given as a callable, computed on first use (only edge features and attention weights need
    it), so a large graph does not hold an E-sized int64 array it never reads."""

    def __init__(self, adj: SparseTensor, edge_perm=None, *, from_sparse: bool = False, sources=None,
                 buffer=None, sources_async=None, row_ranges=None):
        self.adj = adj
        self._buffer = buffer  # (shape, dtype) -> local rows of a buffer with room for the halo rows
        self._sources = sources  # t_local -> t over all source columns (a distributed graph's halo exchange)
        self._async = sources_async  # as sources, the halo rows still in flight (see row_ranges)
        self._ranges = row_ranges  # n -> the target row ranges in order, or None (see row_ranges)
        self._perm = edge_perm
        self.from_sparse = from_sparse  # built from a sparse adjacency (PyG's rules differ by input type)
        self._derived: dict = {}
        self._lock = threading.RLock()

    @property
    def edge_perm(self) -> torch.Tensor | None:
        p = self._perm
        return self.derived("perm", p) if callable(p) else p

    @property
    def distributed(self) -> bool:
        return self._sources is not None

    def sources(self, t: torch.Tensor) -> torch.Tensor:
        """A per-node tensor of this process's nodes extended to every source column of the graph
        (itself for a local graph; local rows then halo rows for a partitioned one)."""
        return t if self._sources is None else self._sources(t)

    def sources_async(self, t: torch.Tensor) -> torch.Tensor:
        """``sources(t)``, whose halo rows may still be in flight: they hold their values once the
        iteration of ``row_ranges`` has moved past the first range."""
        return self.sources(t) if self._async is None else self._async(t)

    def row_ranges(self, n: int):
        """None (compute the ``n`` target rows at once), or the target row ranges ``(r0, r1)`` to compute
        in order, covering ``[0, n)``: the first reads no halo row, and the halo rows started by
        ``sources_async`` have arrived when the next one is produced (a partitioned graph's overlap)."""
        return None if self._ranges is None else self._ranges(n)

    def _same_sources(self) -> dict:
        return {"sources": self._sources, "buffer": self._buffer, "sources_async": self._async,
                "row_ranges": self._ranges}

    def source_rows(self, shape, dtype) -> torch.Tensor:
        """A fresh tensor for a source-side tensor of this process's rows: for a partitioned graph the
        head of a buffer with room for the halo rows, which ``sources`` then adds without a copy."""
        return memory.empty(shape, dtype) if self._buffer is None else self._buffer(shape, dtype)

    @property
    def num_dst(self) -> int:
        return self.adj.shape[0]

    @property
    def num_src(self) -> int:
        return self.adj.shape[1]

    @property
    def nnz(self) -> int:
        return self.adj.nnz

    def derived(self, key, make):
        """``make()`` computed once per key (under a lock: layers may share a graph across threads)."""
        hit = self._derived.get(key)
        if hit is None:
            with self._lock:
                hit = self._derived.get(key)
                if hit is None:
                    hit = self._derived[key] = make()
        return hit

    def rows(self) -> torch.Tensor:
        """Target node of every stored edge, in CSR order (int64; cached for small graphs only)."""
        make = lambda: self.adj.coordinates()[0].long()  # noqa: E731
        return self.derived("rows", make) if self.nnz <= SMALL else make()

    def cols(self) -> torch.Tensor:
        return self.adj.crd[1].long()

    def counts(self) -> torch.Tensor:
        """Stored edges per target (int64)."""
        return self.derived("counts", lambda: torch.diff(self.adj.pos[1].long()))

    def in_degree(self, weighted: bool = True) -> torch.Tensor:
        """Sum of incoming edge weights (edge count for a pattern-only graph), float64."""
        def make():
            if self.adj.values is None or not weighted:
                return self.counts().to(torch.float64)
            return torch.segment_reduce(self.adj.values, "sum", lengths=self.counts()).to(torch.float64)
        return self.derived(("deg", weighted), make)

    def loops(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(CSR positions, target nodes) of the stored self loops, found chunk by chunk (no E-sized
        temporary)."""
        def make():
            pos, crd = self.adj.pos[1].long(), self.adj.crd[1]
            n = min(self.num_dst, self.num_src)
            step = max(1, n * CHUNK // max(self.nnz, 1))
            found, nodes = [], []
            for r0 in range(0, n, step):
                r1 = min(n, r0 + step)
                p0, p1 = int(pos[r0]), int(pos[r1])
                rows = torch.repeat_interleave(torch.arange(r0, r1), torch.diff(pos[r0:r1 + 1]))
                hit = torch.nonzero(crd[p0:p1] == rows).view(-1)
                found.append(hit + p0)
                nodes.append(rows[hit])
            if not found:
                return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
            return torch.cat(found), torch.cat(nodes)
        return self.derived("loops", make)

    def loop_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per target: (has a stored loop, weight of its last loop by original edge order, sum of its
        loops' weights, number of loops), float64 weights; pattern-only loops weigh 1."""
        def make():
            at, node = self.loops()
            n = self.num_dst
            w = torch.ones(at.numel(), dtype=torch.float64) if self.adj.values is None \
                else self.adj.values[at].to(torch.float64)
            total = torch.zeros(n, dtype=torch.float64).index_add_(0, node, w)
            count = torch.zeros(n, dtype=torch.float64).index_add_(0, node, torch.ones_like(w))
            last = torch.zeros(n, dtype=torch.float64)
            if at.numel():  # the last loop edge (by original order) wins, as in PyG
                order = self.loop_order()
                last[node[order]] = w[order]
            return count > 0, last, total, count
        return self.derived("loop_weights", make)

    def loop_order(self) -> torch.Tensor:
        """The stored self loops (``loops()``'s entries) in the caller's edge order."""
        def make():
            at, node = self.loops()
            if self._perm is None or at.numel() == torch.unique(node).numel():
                return torch.arange(at.numel())
            return torch.argsort(self.edge_perm[at])
        return self.derived("loop_order", make)

    def without_self_loops(self) -> "Graph":
        """The stored self loops removed (a copy; values and edge order kept)."""
        return self.derived("no_loops", self._strip_loops)

    def _strip_loops(self) -> "Graph":
        at, nodes = self.loops()
        if not at.numel():
            return self
        keep = torch.ones(self.nnz, dtype=torch.bool)
        keep[at] = False
        pos = torch.zeros(self.num_dst + 1, dtype=torch.long)
        pos[1:] = torch.cumsum(self.counts() - torch.bincount(nodes, minlength=self.num_dst), 0)
        adj = self.adj
        vals = None if adj.values is None else adj.values[keep]
        m = SparseTensor(adj.shape, adj.format, [None, pos.to(adj.index_dtype)], [None, adj.crd[1][keep]],
                         vals, check=False)
        perm = None if self._perm is None else (lambda: self.edge_perm[keep])
        return Graph(m, perm, from_sparse=self.from_sparse, **self._same_sources())

    def with_self_loops(self, rebuild=None) -> "Graph":
        """Pattern only: self loops removed, then one added per node of the square part (PyG
        GATConv's rule). Its edge order (``edge_perm``: -1 - node for an added loop) is computed on
        first use, from ``rebuild()`` (a fresh copy of this graph) when given, so that the result
        does not keep this graph alive."""
        def coords(g):
            base = g._strip_loops()  # not kept: the graph with loops replaces it
            n = min(g.num_dst, g.num_src)
            loops = torch.arange(n, dtype=base.adj.index_dtype)
            rr = torch.cat([base.adj.coordinates()[0], loops])
            cc = torch.cat([base.adj.crd[1], loops])
            return base, rr, cc, n

        shape = tuple(self.adj.shape)
        source = rebuild if rebuild is not None else (lambda: self)  # no reference to self with rebuild

        def perm():
            base, rr, cc, n = coords(source())
            old = base.edge_perm if base._perm is not None else torch.arange(base.nnz)
            eid = torch.cat([old, -1 - torch.arange(n)]).to(torch.float64)
            return SparseTensor.from_coo(rr, cc, eid, shape, sum_duplicates=False).values.long()

        def make():
            _, rr, cc, _ = coords(self)
            m = SparseTensor.from_coo(rr, cc, None, shape, sum_duplicates=False)
            return Graph(m, perm if rebuild is not None or self._perm is not None else None,
                         from_sparse=self.from_sparse, **self._same_sources())
        return self.derived("self_loops", make)


def _check_edge_index(ei: torch.Tensor) -> None:
    if ei.dim() != 2 or ei.size(0) != 2:
        raise UserError(f"Expected 'edge_index' of shape [2, num_edges] (got {list(ei.shape)})")
    if ei.dtype not in (torch.int64, torch.int32):
        raise UserError(f"Expected 'edge_index' to hold int64 or int32 indices (got {ei.dtype})")
    if ei.device.type != "cpu":
        raise UserError(f"Expected 'edge_index' on the CPU (got device {ei.device})")


FLOWS = ("source_to_target", "target_to_source")


def graph_of(edge_index, num_src: int, num_dst: int | None, edge_weight: torch.Tensor | None = None,
             flow: str = "source_to_target", self_loops: bool = False) -> Graph:
    """The cached ``Graph`` of any supported adjacency input.

    ``num_dst=None``: as many targets as the adjacency has rows (an ``edge_index``: ``num_src``).
    ``flow="target_to_source"`` reads an ``edge_index`` with row 1 as the source (PyG's rule);
    sparse adjacencies are always ``adj_t`` and refuse it, as PyG does. ``self_loops``: the graph
    with PyG GATConv's self loops; for an ``edge_index`` it is cached on its own, so a GAT-only model
    holds one CSR, not the plain one as well."""
    if isinstance(edge_index, Graph):
        return edge_index
    if hasattr(edge_index, "__sgnn_graph__"):  # e.g. sgnn.distributed.DistGraph: local rows + halo columns
        g = edge_index.__sgnn_graph__(num_src, num_src if num_dst is None else num_dst, flow)
        return g.with_self_loops() if self_loops else g
    if flow not in FLOWS:
        raise UserError(f"Expected 'flow' to be either 'source_to_target' or 'target_to_source' (got {flow!r})")
    sparse = isinstance(edge_index, SparseTensor) or not isinstance(edge_index, torch.Tensor) \
        or edge_index.layout != torch.strided
    if sparse and flow != "source_to_target":
        raise UserError('Flow direction "target_to_source" is invalid for message propagation via a sparse '
                        'adjacency (it is always adj_t); pass an edge_index or transpose the adjacency')
    if isinstance(edge_index, SparseTensor):
        g = _check_size(edge_index.derived(("graph",), lambda: _graph_from_sparse(edge_index)), num_src, num_dst)
        return g.with_self_loops() if self_loops else g
    if not isinstance(edge_index, torch.Tensor):
        name = type(edge_index).__name__
        if name == "SparseTensor" and hasattr(edge_index, "csr"):  # torch_sparse.SparseTensor (adj_t)
            rowptr, col, val = edge_index.csr()
            st = SparseTensor.from_csr(rowptr, col, val, tuple(edge_index.sizes()))
            return graph_of(st, num_src, num_dst, self_loops=self_loops)
        raise UserError(f"Expected 'edge_index' to be a Tensor, an sgnn.SparseTensor or a torch sparse "
                        f"tensor (got {name})")
    if edge_index.layout != torch.strided:
        g = operands.cached((edge_index,), ("graph", edge_index.layout),
                            lambda: _graph_from_sparse(SparseTensor.from_torch(edge_index)), by_content=True)
        g = _check_size(g, num_src, num_dst)
        return g.with_self_loops() if self_loops else g
    return _edge_index_graph(edge_index, num_src, num_src if num_dst is None else num_dst, edge_weight,
                             flow == "target_to_source", self_loops)


def _edge_index_graph(edge_index, num_src: int, num_dst: int, edge_weight, flip: bool, self_loops: bool) -> Graph:
    """The cached graph of an ``edge_index`` [2, E] (with PyG GATConv's self loops when ``self_loops``)."""
    _check_edge_index(edge_index)
    if edge_weight is not None:
        if not isinstance(edge_weight, torch.Tensor) or edge_weight.dim() != 1 or \
                edge_weight.numel() != edge_index.size(1):
            raise UserError(f"Expected 'edge_weight' of shape [{edge_index.size(1)}] "
                            f"(got {list(getattr(edge_weight, 'shape', []))})")
    key = ("graph", num_src, num_dst, None if edge_weight is None else id(edge_weight), flip)
    deps = (edge_index,) if edge_weight is None else (edge_index, edge_weight)

    def plain():
        return _graph_from_edge_index(edge_index, num_src, num_dst, edge_weight, flip)
    if not self_loops:
        return operands.cached(deps, key, plain, by_content=True)
    known = operands.peek(edge_index, key)
    if known is not None:  # other layers keep the plain graph anyway: derive from it
        return known.with_self_loops()
    ref = weakref.ref(edge_index)

    def rebuild():
        e = ref()
        if e is None:
            raise UserError("the edge_index this graph was built from no longer exists")
        return _graph_from_edge_index(e, num_src, num_dst, None, flip)
    return operands.cached(deps, key + ("loops",), lambda: plain().with_self_loops(rebuild), by_content=True)


def _check_size(g: Graph, num_src: int, num_dst: int | None) -> Graph:
    if g.num_src != num_src or (num_dst is not None and g.num_dst != num_dst):
        raise UserError(f"Expected a sparse adjacency adj_t of shape [{num_dst}, {num_src}] "
                        f"([targets, sources]; got {list(g.adj.shape)})")
    return g


def plain_edge_index(ei: torch.Tensor) -> torch.Tensor:
    """A plain ``torch.Tensor`` with the data of ``ei`` (PyG's ``EdgeIndex`` wraps its data: a bare
    ``as_subclass`` would give a tensor without storage)."""
    if type(ei) is torch.Tensor:
        return ei
    if hasattr(ei, "as_tensor"):
        return ei.as_tensor()
    return ei.as_subclass(torch.Tensor)


def _graph_from_edge_index(ei: torch.Tensor, num_src: int, num_dst: int, w, flip: bool) -> Graph:
    fast = _graph_from_sorted_edge_index(ei, num_src, num_dst, w, flip)
    if fast is not None:
        return fast
    orig, ei = ei, plain_edge_index(ei)
    memory.check_fits(ei.shape[1] * 16 + num_dst * 8, f"the CSR of a {ei.shape[1]}-edge edge_index")
    src, dst = (ei[1], ei[0]) if flip else (ei[0], ei[1])
    if src.numel():
        if int(src.min()) < 0 or int(dst.min()) < 0:
            raise UserError("Expected 'edge_index' to hold non-negative node indices (got a negative index)")
        if int(src.max()) >= num_src or int(dst.max()) >= num_dst:
            raise UserError(f"Expected 'edge_index' sources in [0, {num_src}) and targets in [0, {num_dst}) "
                            f"(got max source {int(src.max())}, max target {int(dst.max())})")
    vals = None if w is None else w.detach().to(torch.float32 if not w.is_floating_point() else w.dtype)
    m = SparseTensor.from_coo(dst, src, vals, (num_dst, num_src), sum_duplicates=False)
    return Graph(m, _lazy_perm(orig, num_src, num_dst, flip))


def _lazy_perm(ei: torch.Tensor, num_src: int, num_dst: int, flip: bool):
    """CSR position -> edge id, recomputed from ``ei`` when first needed (the same stable sort)."""
    ref = weakref.ref(ei)

    def perm():
        e = ref()
        if e is None:
            raise UserError("the edge_index this graph was built from no longer exists")
        e = plain_edge_index(e)
        src, dst = (e[1], e[0]) if flip else (e[0], e[1])
        ids = torch.arange(src.numel(), dtype=torch.float64)
        return SparseTensor.from_coo(dst, src, ids, (num_dst, num_src), sum_duplicates=False).values.long()
    return perm


def _edge_values(w, perm):
    return None if w is None else w.detach().to(torch.float32 if not w.is_floating_point() else w.dtype)[perm]


def _graph_from_sorted_edge_index(ei, num_src: int, num_dst: int, w, flip: bool) -> Graph | None:
    """A PyG ``EdgeIndex`` sorted by target: its cached CSC is our CSR (validated, not re-sorted)."""
    if not hasattr(ei, "get_csc") or not hasattr(ei, "is_sorted_by_col"):
        return None
    by_target = ei.is_sorted_by_row if flip else ei.is_sorted_by_col
    if not by_target:
        return None
    (ptr, idx), perm = ei.get_csr() if flip else ei.get_csc()
    if ptr.numel() != num_dst + 1:
        return None  # a sparse size other than this call's: take the general path (it checks bounds)
    perm = torch.arange(idx.numel()) if perm is None else perm.long()
    try:  # validated (bounds, monotone pointers); rows must be sorted, repeats allowed ("du")
        m = SparseTensor((num_dst, num_src), Format("du"), [None, plain_edge_index(ptr)],
                         [None, plain_edge_index(idx)])
    except UserError:
        return None  # not sorted within a target: the general path sorts
    return Graph(m.with_values(_edge_values(w, perm)), perm)


def _graph_from_sparse(t: SparseTensor) -> Graph:
    if t.ndim != 2:
        raise UserError(f"Expected a 2-dimensional adjacency (got {t.ndim} dimensions)")
    if t.values is not None and t.values.requires_grad:  # the cached graph holds its values detached
        t = t.with_values(t.values.detach())
    a = t if t.format in (CSR, Format("du")) else t.to(CSR)
    return Graph(a, from_sparse=True)
