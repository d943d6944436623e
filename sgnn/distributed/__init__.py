"""Partitioned full-graph inference over ``torch.distributed`` (gloo, CPU; one part per rank).

Pipeline: ``partition`` (METIS or degree-balanced ranges) -> ``save_partition`` (one file per part
+ manifest) -> on each rank ``DistGraph.load`` (its own part only) -> the unchanged sgnn layers,
which run their kernels on the local rows and call ``DistGraph.exchange`` for the halo rows::

    # once, in one process
    parts = partition(edge_index, num_nodes, 4)                     # or method="range"
    save_partition("parts/", edge_index, num_nodes, parts, node_data={"x": x})
    # torchrun --nproc-per-node=4 script.py
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    g = DistGraph.load("parts/")
    with torch.inference_mode():
        out = g.gather(model(g.node_data["x"], g))                  # global order, on every rank

Errors on one rank (missing/corrupted part file, wrong world size, parts of another partitioning)
are raised on every rank as ``PartitionError``; a failed collective (a dead peer, a timeout) as
``PeerError``. See docs/distributed.md for the design and measurements.
"""
from .common import PartitionError, PeerError, as_csr
from .graph import DistGraph
from .partition import partition, range_parts
from .storage import Part, build_part, load_partition, read_manifest, save_partition

__all__ = ["DistGraph", "Part", "PartitionError", "PeerError", "as_csr", "build_part", "load_partition",
           "partition", "range_parts", "read_manifest", "save_partition"]
