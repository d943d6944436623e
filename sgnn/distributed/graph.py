"""``DistGraph``: this rank's rows of a partitioned graph, its halo, and the halo exchange.

The local adjacency is ``A[target, source]`` over ``num_local + num_halo`` columns: columns
``0..num_local-1`` are the owned nodes in local order (a self loop of local node i is entry (i, i)),
the rest are halo nodes grouped by owner. ``exchange(t)`` returns ``t`` followed by the halo rows,
received from their owners with one ``all_to_all_single``; the send/receive plan is built once at
construction (each rank asks every owner for its halo ids). ``exchange_async(t)`` starts the same
transfer and returns ``(buffer, wait)``: the local rows ``[0, num_interior)`` (interior-first order,
see ``storage``) read no halo column, so a kernel can run on them while the halo is in flight.

Layers use it through ``__sgnn_graph__``: ``GCNConv(...)(dist_graph.shard(x), dist_graph)`` runs the
local kernels on the local CSR and exchanges every source-side tensor; with ``overlap`` (the default)
the layer plan computes the interior rows during the exchange, then waits and computes the boundary
rows. Inference only (tensors requiring grad are refused). Every rank must run the same sequence of
exchanges.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.distributed as dist

from ..errors import UserError
from .common import PartitionError, PeerError, agree, as_csr, as_tensor, world
from .storage import Part, build_part, check_parts, load_partition, partition_id, read_manifest

MAX_DIMS = 6


class DistGraph:
    """This rank's part of a graph partitioned one part per rank (see the module docstring).

    Attributes: ``nodes`` (global ids of the local nodes, local order), ``halo`` (global ids of the halo
    nodes), ``num_local``, ``num_halo``, ``num_nodes``, ``node_data`` (per-node tensors saved with the
    partition, local rows), ``num_interior`` (local rows ``[0, num_interior)`` need no halo), ``log``
    (one dict per exchange, see ``exchange_async``; clear it between layers to attribute
    communication), ``separate_wait`` (time a barrier before each exchange as ``wait_s``, so that load
    imbalance is not counted as transfer time), ``overlap`` (layers compute the interior rows while the
    halo is in flight; False: exchange, then compute every row).
    """

    def __init__(self, part: Part, group=None, *, overlap: bool = True):
        self.part, self.group = part, group
        self.rank, self.world_size = world(group)
        self.log: list[dict] = []
        self.separate_wait = False
        self.overlap = bool(overlap)
        self.num_interior = part.num_interior
        self._pending: list = []  # waits of the exchanges started for the layer running now
        self._graph = self._adj = self._all_nodes = None
        self._plan()
        self._control = self._control_group()

    # --- constructors ----------------------------------------------------------------------------

    @classmethod
    def from_global(cls, graph, num_nodes: int, parts, *, node_data: dict | None = None,
                    group=None, overlap: bool = True) -> "DistGraph":
        """This rank's part of a global ``edge_index`` / CSR and node-to-part vector (for tests and small
        graphs: every rank reads the whole input, then keeps only its own part)."""
        rank, size = world(group)
        part, err = None, None
        try:
            rowptr, col = as_csr(graph, num_nodes)
            parts, num_parts = check_parts(parts, num_nodes, size)
            pid = partition_id(rowptr, col, parts, num_parts)
            part = build_part(rowptr, col, parts, rank, num_parts, pid, node_data)
        except Exception as e:                # any failure: every rank must hear of it
            err = e
        agree(err, group, "building the partition")
        return cls(part, group, overlap=overlap)

    @classmethod
    def load(cls, directory, group=None, *, verify: bool = True, overlap: bool = True) -> "DistGraph":
        """This rank's part from a ``save_partition`` directory (reads the manifest and one part file)."""
        rank, size = world(group)
        part, err = None, None
        try:
            m = read_manifest(directory)
            if int(m["num_parts"]) != size:
                raise PartitionError(f"{directory} holds {m['num_parts']} parts, but the process group has "
                                     f"{size} rank(s): run one rank per part (torchrun --nproc-per-node="
                                     f"{m['num_parts']})")
            part = load_partition(directory, rank, verify=verify)
        except Exception as e:                # any failure: every rank must hear of it
            err = e
        agree(err, group, "loading the partition")
        return cls(part, group, overlap=overlap)

    # --- the plan ----------------------------------------------------------------------------------

    def _plan(self) -> None:
        p, err = self.part, None
        if p.num_parts != self.world_size or p.rank != self.rank:
            err = PartitionError(f"this part is rank {p.rank} of {p.num_parts}, the process is rank "
                                 f"{self.rank} of {self.world_size}")
        agree(err, self.group, "checking the partition")
        ids = self._all_gather_object((p.partition_id, p.num_nodes, p.num_local))
        if len({(i, n) for i, n, _ in ids}) != 1:
            text = ", ".join(f"rank {r}: {i} ({n} nodes)" for r, (i, n, _) in enumerate(ids))
            raise PartitionError(f"the ranks hold parts of different partitionings ({text})")
        self.local_counts = [c for _, _, c in ids]
        self.recv_counts = [int(c) for c in p.halo_counts.tolist()]
        self.send_counts, self.send_idx = [0] * self.world_size, torch.zeros(0, dtype=torch.int64)
        self.send_rows = None  # (r0, r1) when send_idx is the run r0..r1-1: sent from a view, no packing copy
        if self.world_size > 1:
            self._requests()
        self.total_halo = sum(self._all_gather_object(p.num_halo))

    def _requests(self) -> None:
        """Ask every owner for this rank's halo ids; learn which local rows each peer needs."""
        p = self.part
        counts = torch.empty(self.world_size, dtype=torch.int64)
        self._collective(dist.all_to_all_single, counts, p.halo_counts.long().contiguous())
        self.send_counts = [int(c) for c in counts.tolist()]
        wanted = torch.empty(sum(self.send_counts), dtype=torch.int64)
        self._collective(dist.all_to_all_single, wanted, p.halo.long().contiguous(), self.send_counts,
                         self.recv_counts)
        order = torch.argsort(p.nodes)                      # the local order is not ascending
        idx = order[torch.searchsorted(p.nodes[order], wanted).clamp_(max=max(p.num_local - 1, 0))] \
            if p.num_local else torch.zeros_like(wanted)
        err = None
        if wanted.numel() and (p.num_local == 0 or not torch.equal(p.nodes[idx], wanted)):
            err = PartitionError("a peer asked for halo nodes this rank does not own (inconsistent parts)")
        agree(err, self.group, "building the halo plan")
        self.send_idx = idx
        n = idx.numel()  # rows sent as one ascending run (P = 2, symmetric graph: the boundary rows) are a view
        run = n > 0 and int(idx[-1]) - int(idx[0]) + 1 == n and bool((idx[1:] > idx[:-1]).all())
        self.send_rows = (int(idx[0]), int(idx[0]) + n) if run else None

    def _all_gather_object(self, obj) -> list:
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        self._collective(dist.all_gather_object, out, obj)
        return out

    def _control_group(self):
        """A second gloo group (own connections) for the small collectives an exchange starts with: on the
        halo's group they would queue behind a transfer in flight (a second exchange of the same layer
        then waited for the first). Only for the default group (``new_group`` is collective over it)."""
        if self.world_size == 1 or self.group is not None:
            return self.group
        try:  # the same timeout as the default group (new_group's own default is 30 min)
            timeout = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu")).options._timeout
        except Exception:  # unknown (a torch without these internals): no second group
            return self.group
        try:
            return dist.new_group(backend="gloo", timeout=timeout)
        except Exception as e:
            raise self._peer_error("new_group", e) from e

    def _collective(self, fn, *args, on=None, **kw):
        try:
            return fn(*args, group=self.group if on is None else on, **kw)
        except Exception as e:
            raise self._peer_error(fn.__name__, e) from e

    def _peer_error(self, what: str, e: Exception) -> PeerError:
        return PeerError(f"rank {self.rank}: {what} with the other ranks failed (a peer died, or did not "
                         f"reach the same call within the process group's timeout): {e}")

    # --- properties --------------------------------------------------------------------------------

    @property
    def num_local(self) -> int:
        return self.part.num_local

    @property
    def num_halo(self) -> int:
        return self.part.num_halo

    @property
    def num_nodes(self) -> int:
        return self.part.num_nodes

    @property
    def nodes(self) -> torch.Tensor:
        return self.part.nodes

    @property
    def halo(self) -> torch.Tensor:
        return self.part.halo

    @property
    def node_data(self) -> dict:
        return self.part.node_data

    @property
    def halo_fraction(self) -> float:
        """Halo nodes per local node on this rank."""
        return self.num_halo / max(self.num_local, 1)

    def __repr__(self) -> str:
        return (f"DistGraph(rank={self.rank}/{self.world_size}, local={self.num_local}, halo={self.num_halo}, "
                f"nonzeros={self.part.col.numel()}, nodes={self.num_nodes})")

    # --- data movement -----------------------------------------------------------------------------

    def shard(self, x) -> torch.Tensor:
        """This rank's rows (local order) of a global per-node tensor or array ``[num_nodes, ...]``."""
        t = as_tensor(x)
        if t.dim() == 0 or t.shape[0] != self.num_nodes:
            raise UserError(f"DistGraph.shard: expected a tensor with {self.num_nodes} rows "
                            f"(got {list(t.shape)})")
        return t[self.nodes]

    def exchange(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` [num_local, ...] followed by its halo rows [num_halo, ...] from their owners."""
        out, wait = self.exchange_async(t)
        wait()
        return out

    def exchange_async(self, t: torch.Tensor) -> tuple[torch.Tensor, Callable[[], None]]:
        """Start the exchange of ``t`` [num_local, ...]: ``(out, wait)``, ``out`` = ``t`` followed by room
        for the halo rows, which hold the peers' rows once ``wait()`` returned (a failed or timed-out
        transfer raises ``PeerError`` there). ``t`` written in place by ``source_buffer`` is not copied.

        Logs ``wait_s`` (the barrier of ``separate_wait``), ``post_s`` (checks, packing the rows to send,
        starting the transfer), ``blocked_s`` (time spent in ``wait()``: the exposed transfer),
        ``transfer_s`` (start to completion of the transfer) and ``seconds`` (all the time this rank
        spent on the exchange instead of computing: ``wait_s + post_s + blocked_s``)."""
        t = self._check(t, "exchange")
        if self.total_halo == 0:
            return t, _done
        start = time.perf_counter()
        wait_s = 0.0
        if self.separate_wait:
            self._collective(dist.barrier, on=self._control)
            wait_s = time.perf_counter() - start
        self._same_everywhere(t, "exchange")
        out = self._buffer_of(t)
        copy = out is None  # t is not the head of a buffer from source_buffer: copied in front of the halo
        if copy:
            out = self._full_buffer(t.shape, t.dtype)
        send = t.index_select(0, self.send_idx) if self.send_rows is None else t[slice(*self.send_rows)]
        posted = time.perf_counter()
        work = self._collective(dist.all_to_all_single, out[self.num_local:], send, self.recv_counts,
                                self.send_counts, async_op=True)
        done_at = []
        work.get_future().then(lambda _: done_at.append(time.perf_counter()))
        if copy:  # while the halo is in flight
            out[: self.num_local] = t
        row = t[:1].numel() * t.element_size()
        entry = {"op": "exchange", "rows_sent": send.size(0), "bytes_sent": send.size(0) * row,
                 "bytes_recv": self.num_halo * row, "wait_s": wait_s, "post_s": time.perf_counter() - start - wait_s,
                 "blocked_s": 0.0, "transfer_s": 0.0}
        entry["seconds"] = wait_s + entry["post_s"]
        self.log.append(entry)
        pending = [work, send]  # the send rows live until the transfer completed

        def wait() -> None:
            if not pending:
                return
            w0 = time.perf_counter()
            try:
                pending[0].wait()
            except Exception as e:
                raise self._peer_error("all_to_all_single (the halo exchange)", e) from e
            finally:
                pending.clear()
            w1 = time.perf_counter()
            entry["blocked_s"] = w1 - w0
            entry["seconds"] += w1 - w0
            entry["transfer_s"] = (done_at[0] if done_at else w1) - posted
        return out, wait

    def source_buffer(self, shape, dtype) -> torch.Tensor:
        """The first ``num_local`` rows of a buffer with room for the halo: a tensor written there is
        exchanged in place (no copy of the local rows)."""
        return self._full_buffer(shape, dtype)[: self.num_local]

    def _full_buffer(self, shape, dtype) -> torch.Tensor:
        from ..engine import memory
        return memory.empty((self.num_local + self.num_halo, *tuple(shape)[1:]), dtype)

    def _buffer_of(self, t: torch.Tensor) -> torch.Tensor | None:
        base = t._base
        if base is None or base.data_ptr() != t.data_ptr() or not base.is_contiguous() or not t.is_contiguous():
            return None
        row = t[0].numel() if t.shape[0] else 0
        if t.shape[0] != self.num_local or base.numel() != (self.num_local + self.num_halo) * row:
            return None
        return base.view(self.num_local + self.num_halo, *t.shape[1:])

    def gather(self, out_local: torch.Tensor) -> torch.Tensor:
        """The global tensor [num_nodes, ...] (global node order) of every rank's local rows, on every rank."""
        t = self._check(out_local, "gather")
        out = t.new_empty((self.num_nodes, *t.shape[1:]))
        if self.world_size == 1:
            out[self.nodes] = t
            return out
        self._same_everywhere(t, "gather")
        width = max(self.local_counts)
        buf = t.new_zeros((width, *t.shape[1:]))
        buf[: self.num_local] = t
        bufs = [torch.empty_like(buf) for _ in range(self.world_size)]
        self._collective(dist.all_gather, bufs, buf)
        for ids, b in zip(self._nodes_everywhere(), bufs):
            out[ids] = b[: ids.numel()]
        return out

    def _nodes_everywhere(self) -> list[torch.Tensor]:
        if self._all_nodes is None:
            buf = torch.full((max(self.local_counts),), -1, dtype=torch.int64)
            buf[: self.num_local] = self.nodes
            bufs = [torch.empty_like(buf) for _ in range(self.world_size)]
            self._collective(dist.all_gather, bufs, buf)
            self._all_nodes = [b[:c] for b, c in zip(bufs, self.local_counts)]
        return self._all_nodes

    def _check(self, t, what: str) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
            raise UserError(f"DistGraph.{what}: expected a dense torch.Tensor (got {type(t).__name__})")
        if t.requires_grad:
            raise UserError(f"DistGraph.{what}: refusing a tensor that requires grad (distributed inference "
                            f"only: no gradient crosses ranks); run under torch.inference_mode() or detach")
        if t.dim() == 0 or t.shape[0] != self.num_local or t.dim() > MAX_DIMS:
            raise UserError(f"DistGraph.{what}: expected a tensor of this rank's {self.num_local} local rows "
                            f"and at most {MAX_DIMS} dimensions (got {list(t.shape)})")
        if not t.is_floating_point():
            raise UserError(f"DistGraph.{what}: expected a floating-point tensor (got {t.dtype})")
        return t.contiguous()

    def _same_everywhere(self, t: torch.Tensor, what: str) -> None:
        """Every rank passes the same trailing shape and dtype (else: an error everywhere, not a hang)."""
        head = [t.dim(), *t.shape[1:]] + [-1] * (MAX_DIMS - t.dim())
        mine = torch.tensor([_DTYPES.index(t.dtype) if t.dtype in _DTYPES else -1, *head], dtype=torch.int64)
        heads = [torch.empty_like(mine) for _ in range(self.world_size)]
        self._collective(dist.all_gather, heads, mine, on=self._control)
        if any(not torch.equal(h, heads[0]) for h in heads) or int(mine[0]) < 0:
            shapes = ", ".join(f"rank {r}: {_describe(h)}" for r, h in enumerate(heads))
            raise UserError(f"DistGraph.{what}: the ranks passed different tensors ({shapes}); every rank must "
                            f"pass the same trailing shape and dtype, in the same order of calls")

    # --- the layer contract ------------------------------------------------------------------------

    def adjacency(self):
        """The local ``A[target, source]`` as an ``sgnn.SparseTensor`` [num_local, num_local + num_halo]."""
        if self._adj is None:
            from ..engine import SparseTensor
            from ..engine.formats import Format
            p, shape = self.part, (self.num_local, self.num_local + self.num_halo)
            self._adj = SparseTensor.from_csr(p.rowptr, p.col, None, shape) if p.unique else \
                SparseTensor(shape, Format("du"), [None, p.rowptr], [None, p.col])
        return self._adj

    def __sgnn_graph__(self, num_src: int, num_dst: int, flow: str = "source_to_target"):
        """The layers' ``Graph``: the local CSR, with ``exchange`` as its ``sources``."""
        if flow != "source_to_target":
            raise UserError(f"DistGraph: flow={flow!r} is not supported (a part stores the rows of its own "
                            f"targets, A[target, source]); partition the transposed graph instead")
        if num_src != self.num_local or num_dst != self.num_local:
            raise UserError(f"DistGraph: expected features of this rank's {self.num_local} local nodes "
                            f"(dist_graph.shard(x)); got {num_src} source and {num_dst} target rows")
        if self._graph is None:
            from ..layers.graph import Graph
            self._graph = Graph(self.adjacency(), None, sources=self.exchange, buffer=self.source_buffer,
                                sources_async=self._start, row_ranges=self._row_ranges)
        return self._graph

    def _overlaps(self) -> bool:
        return self.overlap and self.total_halo > 0

    def _start(self, t: torch.Tensor) -> torch.Tensor:
        """The layers' ``sources_async``: the exchange started, its wait left to ``_row_ranges``."""
        if not self._overlaps():
            return self.exchange(t)
        out, wait = self.exchange_async(t)
        self._pending.append(wait)
        return out

    def _row_ranges(self, n: int):
        """The layers' ``row_ranges``: the interior rows while the started exchanges are in flight, then
        (once they have arrived) the boundary rows; None without overlap."""
        if not self._overlaps():
            return None
        return self._interior_then_boundary(n, min(self.num_interior, n))

    def _interior_then_boundary(self, n: int, cut: int):
        if cut > 0:
            yield 0, cut
        pending, self._pending = self._pending, []
        for wait in pending:
            wait()
        if cut < n or cut == 0:
            yield cut, n


def _done() -> None:
    """``wait`` of an exchange with nothing in flight."""


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _describe(head: torch.Tensor) -> str:
    code, ndim, *dims = head.tolist()
    dtype = _DTYPES[code] if 0 <= code < len(_DTYPES) else "unsupported dtype"
    return f"{dtype} [*, {', '.join(str(d) for d in dims[: max(ndim - 1, 0)])}]"
