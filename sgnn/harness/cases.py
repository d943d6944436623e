"""Config composition for the benchmark entries: one config tree (``configs/``), one loader.

An entry that sweeps datasets and models in one process (``bench.datasets``, ``bench.models``) builds
each case's config from the same config groups as ``python run.py dataset=D model=M`` (so the
dataset's seed, sizes, stand-in and ``dataset_model`` sizes are the ones every entry uses). The
dataset (and model) selected on the command line keeps its overrides: with
``dataset=synthetic dataset.nodes=300``, the case ``synthetic`` is that 300-node graph.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from . import data as datasets

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def compose(overrides: list[str] = ()) -> DictConfig:
    """The Hydra config of ``configs/config.yaml`` with ``overrides`` (as on the command line); inside a
    running Hydra app it composes from that app's (same) config tree."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name="config", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name="config", overrides=list(overrides))


def case(cfg: DictConfig, dataset: str, model: str | None = None, model_overrides=None) -> DictConfig:
    """``cfg`` with the ``dataset`` (and ``model``) config groups swapped for ``dataset``/``model``;
    ``model_overrides`` (a mapping) is merged into the model last."""
    same_ds = dataset == cfg.dataset.name
    same_model = same_ds and (model is None or model == cfg.model.name)
    composed = None
    if not (same_ds and same_model):
        composed = compose([f"dataset={dataset}"] + ([f"model={model}"] if model else []))
    out = cfg.copy()
    with open_dict(out):
        out.dataset = cfg.dataset if same_ds else composed.dataset
        out.model = cfg.model if same_model else composed.model
        if model_overrides:
            out.model = OmegaConf.merge(out.model, model_overrides)
    return out


def graphs(cfg: DictConfig, names) -> Iterator[tuple[DictConfig, datasets.GraphData]]:
    """(case config, loaded graph) per dataset name, one graph in memory at a time."""
    for name in names:
        c = case(cfg, str(name))
        yield c, datasets.load(c)


def num_classes(graph: datasets.GraphData) -> int:
    return int(graph.data.y.max()) + 1


def graph_info(graph: datasets.GraphData) -> dict:
    """What every benchmark records about its graph."""
    d = graph.data
    return {"name": graph.name, "label": graph.label, "nodes": int(d.num_nodes), "edges": graph.num_edges,
            "features": int(d.num_features), "classes": num_classes(graph), "stand_in": graph.stand_in,
            "note": graph.note}
