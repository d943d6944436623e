"""The reproduction harness: ``python run.py dataset=cora model=gcn`` (Hydra app, configs/).

One run, in order (each step one module):

- ``data.load``            dataset from the data root, or a labelled stand-in, or a synthetic graph
- ``train.load_or_train``  the PyG reference model: cached weights or full-batch training
- ``models.FRAMEWORKS``    the same weights in plain PyTorch, PyG, DGL and sgnn
- ``timing.bench``         warm in-process timing of the whole forward pass (one thread count)
- ``report``               rich table, results.json / results.csv, bar chart

``main(overrides, out_dir)`` runs it without Hydra's app wrapper (tests, notebooks).
"""
from .data import DataMissing, Graph, load
from .pipeline import compose, main, run

__all__ = ["DataMissing", "Graph", "compose", "load", "main", "run"]
