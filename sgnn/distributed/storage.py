"""One part per rank: its rows of the adjacency over local + halo columns, built from the global graph,
saved one file per part next to a small manifest, loaded by each rank alone.

Directory layout: ``manifest.json`` (format, world size, num_nodes, partition id, per part: file,
bytes, sha256, node / halo / nonzero counts) and ``part-00000.pt`` ... (``torch.save`` of a dict of
tensors). The partition id hashes the graph, the node-to-part vector and the part count, so a part
of another partitioning is recognised.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .common import PartitionError, as_csr, as_tensor

FORMAT, VERSION = "sgnn-partition", 2       # 2: local order interior-first (1: ascending ids)
VERSIONS = (1, 2)                                 # readable
CHUNK = 1 << 22                                   # nonzeros scanned per step when sorting interior first
TENSORS = ("nodes", "rowptr", "col", "halo", "halo_counts")


@dataclass
class Part:
    """Rank ``rank``'s share of a graph partitioned ``num_parts`` ways.

    ``nodes``: global ids of the owned nodes in local order: interior nodes (every source in this
    part) first, then boundary nodes, each ascending (version 1 files: all ascending). ``rowptr, col``:
    CSR of ``A[target, source]`` for the owned targets; columns ``0..num_local-1`` are the owned nodes,
    ``num_local..`` the halo nodes. ``halo``: global ids of the halo nodes, grouped by owner (ascending
    within an owner); ``halo_counts[q]``: how many of them rank q owns. ``unique``: no repeated entry in
    a row. ``node_data``: per-node tensors (features, labels), rows in local order.
    """

    rank: int
    num_parts: int
    num_nodes: int
    partition_id: str
    nodes: torch.Tensor
    rowptr: torch.Tensor
    col: torch.Tensor
    halo: torch.Tensor
    halo_counts: torch.Tensor
    unique: bool = True
    node_data: dict = field(default_factory=dict)

    @property
    def num_local(self) -> int:
        return self.nodes.numel()

    @property
    def num_halo(self) -> int:
        return self.halo.numel()

    @property
    def num_interior(self) -> int:
        """Rows ``[0, num_interior)`` read no halo column: the longest such prefix of the local order
        (every interior row, for a version 2 part)."""
        n, ptr = self.num_local, self.rowptr.long()
        if n == 0 or self.col.numel() == 0:
            return n
        last = self.col[(ptr[1:] - 1).clamp_(min=0)].long()    # a row's columns ascend: its largest
        first = torch.nonzero((ptr[1:] > ptr[:-1]) & (last >= n))
        return int(first[0]) if first.numel() else n

    def to_dict(self) -> dict:
        meta = {"rank": self.rank, "num_parts": self.num_parts, "num_nodes": self.num_nodes,
                "partition_id": self.partition_id, "unique": self.unique}
        return {**meta, **{k: getattr(self, k) for k in TENSORS}, "node_data": dict(self.node_data)}


def partition_id(rowptr: torch.Tensor, col: torch.Tensor, parts: torch.Tensor, num_parts: int) -> str:
    """A hash of the graph, the node-to-part vector and the part count."""
    head = f"{FORMAT}/{VERSION}:{rowptr.numel() - 1}:{col.numel()}:{col.dtype}:{num_parts}"
    h = hashlib.sha256(head.encode())
    for t in (rowptr.long(), col, parts.long()):
        h.update(memoryview(t.contiguous().numpy()).cast("B"))
    return h.hexdigest()[:20]


def check_parts(parts, num_nodes: int, num_parts: int | None = None) -> tuple[torch.Tensor, int]:
    parts = as_tensor(parts)
    if parts.dim() != 1 or parts.numel() != num_nodes or parts.dtype.is_floating_point:
        raise PartitionError(f"Expected parts: an integer tensor [{num_nodes}] (got {parts.dtype} "
                             f"{list(parts.shape)})")
    parts = parts.long()
    top = int(parts.max()) + 1 if parts.numel() else 1
    num_parts = top if num_parts is None else int(num_parts)
    if parts.numel() and (int(parts.min()) < 0 or top > num_parts):
        raise PartitionError(f"Expected parts in [0, {num_parts}) (one part per rank; got "
                             f"[{int(parts.min())}, {top - 1}])")
    return parts, num_parts


def build_part(rowptr, col, parts: torch.Tensor, rank: int, num_parts: int, pid: str,
               node_data: dict | None = None) -> Part:
    """Rank ``rank``'s part of the global CSR ``(rowptr, col)`` (rows = targets)."""
    n = parts.numel()
    nodes = interior_first(rowptr, col, parts, rank)
    deg = rowptr[nodes + 1] - rowptr[nodes]
    lptr = torch.zeros(nodes.numel() + 1, dtype=torch.int64)
    torch.cumsum(deg, 0, out=lptr[1:])
    pos = torch.repeat_interleave(rowptr[nodes] - lptr[:-1], deg) + torch.arange(int(lptr[-1]))
    gcol = col[pos].long()
    del pos
    g2l = torch.full((n,), -1, dtype=torch.int64)
    g2l[nodes] = torch.arange(nodes.numel())
    halo = torch.unique(gcol[g2l[gcol] < 0])
    halo = halo[torch.argsort(parts[halo], stable=True)]
    g2l[halo] = torch.arange(nodes.numel(), nodes.numel() + halo.numel())
    width = nodes.numel() + halo.numel()
    keys = (torch.repeat_interleave(torch.arange(nodes.numel()), deg) * width + g2l[gcol]).numpy()
    del gcol
    keys.sort()                                             # rows sorted by local column
    unique = bool(np.all(np.diff(keys) > 0)) if keys.size else True
    idx = torch.int32 if max(width, keys.size) < 2 ** 31 else torch.int64
    lcol = torch.from_numpy(keys % width if width else keys).to(idx)
    data = {k: as_tensor(v)[nodes] for k, v in (node_data or {}).items()}
    return Part(rank, num_parts, n, pid, nodes, lptr.to(idx), lcol, halo,
                torch.bincount(parts[halo], minlength=num_parts), unique, data)


def interior_first(rowptr, col, parts: torch.Tensor, rank: int) -> torch.Tensor:
    """The global ids of part ``rank``'s nodes, those whose sources all lie in the part first (so that
    their rows, which need no halo, are one row range), then the others; each group ascending."""
    nodes = (parts == rank).nonzero().view(-1)
    boundary = torch.zeros(nodes.numel(), dtype=torch.bool)
    start, deg = rowptr[nodes].long(), (rowptr[nodes + 1] - rowptr[nodes]).long()
    step = max(1, nodes.numel() * CHUNK // max(int(deg.sum()), 1))
    for r0 in range(0, nodes.numel(), step):                 # chunked: no part-sized int64 temporaries
        d = deg[r0:r0 + step]
        rows = torch.repeat_interleave(torch.arange(d.numel()), d)
        pos = torch.repeat_interleave(start[r0:r0 + step] - torch.cumsum(d, 0) + d, d) + torch.arange(rows.numel())
        boundary[r0 + rows[parts[col[pos].long()] != rank]] = True
    return torch.cat([nodes[~boundary], nodes[boundary]])


def save_partition(directory, graph, num_nodes: int, parts, *, node_data: dict | None = None,
                   info: dict | None = None) -> Path:
    """Write one file per part and ``manifest.json`` (last: its presence marks a complete partition).

    ``graph``: ``edge_index`` or CSR (see ``as_csr``); ``parts``: the part of every node (e.g. from
    ``partition``); ``node_data``: per-node tensors/arrays [num_nodes, ...] split along with the nodes,
    so that a rank never reads the global features. Returns the directory."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rowptr, col = as_csr(graph, num_nodes)
    parts, num_parts = check_parts(parts, num_nodes)
    for k, v in (node_data or {}).items():
        if len(v) != num_nodes:
            raise PartitionError(f"save_partition: node_data[{k!r}] has {len(v)} rows (expected {num_nodes})")
    (d / "manifest.json").unlink(missing_ok=True)
    pid = partition_id(rowptr, col, parts, num_parts)
    entries = []
    for r in range(num_parts):
        part = build_part(rowptr, col, parts, r, num_parts, pid, node_data)
        name = f"part-{r:05d}.pt"
        torch.save(part.to_dict(), d / name)
        entries.append({"file": name, "bytes": (d / name).stat().st_size, "sha256": _sha256(d / name),
                        "nodes": part.num_local, "interior": part.num_interior,
                        "halo": part.num_halo, "nonzeros": int(part.col.numel())})
        del part
    manifest = {"format": FORMAT, "version": VERSION, "num_parts": num_parts, "num_nodes": num_nodes,
                "nonzeros": int(col.numel()), "partition_id": pid, "parts": entries, "info": info or {}}
    tmp = d / f"manifest.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, d / "manifest.json")
    return d


def read_manifest(directory) -> dict:
    path = Path(directory) / "manifest.json"
    if not path.exists():
        raise PartitionError(f"no partition in {path.parent}: manifest.json is missing (save_partition "
                             f"writes it after the part files)")
    try:
        m = json.loads(path.read_text())
        ok = m.get("format") == FORMAT and len(m["parts"]) == int(m["num_parts"])
    except (ValueError, KeyError, TypeError) as e:
        raise PartitionError(f"{path}: not a valid partition manifest ({type(e).__name__}: {e})") from e
    if not ok or m.get("version") not in VERSIONS:
        raise PartitionError(f"{path}: not an {FORMAT} manifest of version {' or '.join(map(str, VERSIONS))}")
    return m


def load_partition(directory, rank: int, *, verify: bool = True, mmap: bool = False) -> Part:
    """Rank ``rank``'s part, read from its own file only (checked against the manifest's size and, with
    ``verify``, its sha256). ``mmap=True`` maps the file instead of reading it (its pages then stay
    resident while any of its tensors lives; read, a tensor's memory goes back when it is freed)."""
    m = read_manifest(directory)
    if not 0 <= rank < int(m["num_parts"]):
        raise PartitionError(f"{directory}: has {m['num_parts']} parts, no part for rank {rank}")
    e = m["parts"][rank]
    path = Path(directory) / e["file"]
    if not path.exists():
        raise PartitionError(f"{path}: part file of rank {rank} is missing")
    if path.stat().st_size != e["bytes"] or (verify and _sha256(path) != e["sha256"]):
        raise PartitionError(f"{path}: part file of rank {rank} is corrupted (size or sha256 differs from "
                             f"the manifest); save the partition again")
    try:
        d = torch.load(path, weights_only=True, mmap=mmap)
    except Exception as err:
        raise PartitionError(f"{path}: cannot read the part file of rank {rank}: {err}") from err
    if d.get("partition_id") != m["partition_id"] or d.get("rank") != rank:
        raise PartitionError(f"{path}: belongs to partition {d.get('partition_id')} rank {d.get('rank')}, "
                             f"the manifest to {m['partition_id']} (files of two partitionings mixed)")
    return Part(**{k: d[k] for k in ("rank", "num_parts", "num_nodes", "partition_id", "unique",
                                      "node_data", *TENSORS)})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()
