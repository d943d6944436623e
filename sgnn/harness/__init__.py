"""The reproduction harness: ``python run.py dataset=cora model=gcn`` (Hydra app, configs/).

``cfg.bench.name`` (config group ``configs/bench/``) picks the entry; each is one module:

- ``e2e`` (default)  pipeline.py: load -> train (or cached weights) -> PyTorch, PyG, DGL, sgnn twins
                     (models.py) -> warm timing -> table, results.json / .csv, bar chart
- ``spmm``           bench_spmm.py (+ spmm_latency.py): SpMM vs torch.sparse.mm / DGL / scipy, memory
                     floor and gather roofline, compile and new-process latencies
- ``layers``         bench_layers.py (+ layers_report.py): layers and 2-layer models, peak ΔRSS
- ``train``          bench_train.py: ms per training epoch, GAT training peak memory
- ``scale``          bench_scale.py (+ scale_worker.py): large-graph inference, one subprocess per framework
                     under RLIMIT_AS and a timeout
- ``accuracy``       bench_accuracy.py: test accuracy after training through sgnn vs PyG, several seeds

An entry is ``configs/bench/<name>.yaml`` (``bench.name: <name>``) plus ``bench_<name>.py`` with
``run(cfg, out_dir)``; pipeline.ENTRIES lists the configs, so a new entry needs no other edit.
The second Hydra app, ``experiments/dist_inference.py`` (configs/dist_inference.yaml), runs
dist_inference.py under torchrun with the same data, dataset and model groups.

Shared, once: data.py (``GraphData``, loaders, stand-ins, the power-law generator; synthetic.py: the
products-scale graph), cases.py (config composition per dataset/model), timing.py (threads, timed
calls), machine.py (lscpu, load of other processes, copy/gather bandwidth), memory.py (RSS, peaks),
report.py (tables, JSON, plots).

``main(overrides, out_dir)`` runs any entry without Hydra's app wrapper (tests, notebooks).
"""
from .data import DataMissing, GraphData, load
from .pipeline import compose, main, run

__all__ = ["DataMissing", "GraphData", "compose", "load", "main", "run"]
