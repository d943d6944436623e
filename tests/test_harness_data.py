"""Harness data: synthetic graphs, the raw Planetoid reader, missing files and labelled stand-ins."""
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sgnn.harness import DataMissing, compose, load
from sgnn.harness.data import (
    PLANETOID_SUFFIXES,
    normalize_features,
    power_law_edges,
    read_planetoid_raw,
    resolve_root,
)

ROOT = resolve_root(os.environ.get("SGNN_DATA"))


def cfg_for(dataset: str, tmp_path: Path, *extra: str):
    return compose([f"dataset={dataset}", f"data.root={ROOT}", f"data.cache={tmp_path}", *extra])


def needs(*rel: str):
    missing = [r for r in rel if not (ROOT / r).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"not under the data root {ROOT}: {missing}")


def test_power_law_edges_exact_distinct_no_self_loops():
    ei = power_law_edges(500, 4000, torch.Generator().manual_seed(1))
    assert ei.shape == (2, 4000) and (ei[0] != ei[1]).all()
    assert torch.unique(ei[0] * 500 + ei[1]).numel() == 4000
    deg = torch.bincount(ei[1], minlength=500).float()
    assert deg.max() > 5 * deg.mean()                                   # heavy tail


def test_synthetic_is_deterministic_symmetric_and_sized(tmp_path):
    args = ["dataset.nodes=333", "dataset.edges=2000", "dataset.features=7", "dataset.classes=3"]
    a, b = load(cfg_for("synthetic", tmp_path, *args)), load(cfg_for("synthetic", tmp_path, *args))
    d = a.data
    assert torch.equal(d.edge_index, b.data.edge_index) and torch.equal(d.x, b.data.x)
    assert d.x.shape == (333, 7) and int(d.y.max()) == 2 and not a.stand_in
    ei = d.edge_index
    assert (ei[0] != ei[1]).all()
    keys = set((ei[0] * 333 + ei[1]).tolist())
    assert keys == set((ei[1] * 333 + ei[0]).tolist())                  # symmetric
    assert not (d.train_mask & d.test_mask).any() and (d.train_mask | d.val_mask | d.test_mask).all()
    c = load(cfg_for("synthetic", tmp_path, *args, "dataset.seed=1")).data
    assert not torch.equal(c.edge_index, d.edge_index)


@needs("planetoid/Cora/raw/ind.cora.allx", "planetoid/CiteSeer/raw/ind.citeseer.allx")
@pytest.mark.parametrize("name", ["Cora", "CiteSeer"])
def test_raw_planetoid_reader_equals_pyg(name, tmp_path):
    from torch_geometric.datasets import Planetoid
    raw = ROOT / "planetoid" / name / "raw"
    (tmp_path / name / "raw").mkdir(parents=True)
    for s in PLANETOID_SUFFIXES:
        (tmp_path / name / "raw" / f"ind.{name.lower()}.{s}").symlink_to(raw / f"ind.{name.lower()}.{s}")
    ref, mine = Planetoid(str(tmp_path), name)[0], read_planetoid_raw(raw, name)
    for key in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(mine[key], ref[key]), key


def test_missing_planetoid_file_names_it(tmp_path):
    raw = tmp_path / "root" / "planetoid" / "Cora" / "raw"
    raw.mkdir(parents=True)
    for s in ("x", "tx", "y", "ty", "graph", "test.index"):
        (raw / f"ind.cora.{s}").write_bytes(b"")
    cfg = compose(["dataset=cora", f"data.root={tmp_path / 'root'}", f"data.cache={tmp_path}"])
    with pytest.raises(DataMissing, match=r"missing ind\.cora\.allx, ind\.cora\.ally in .*Cora/raw"):
        load(cfg)


@needs("planetoid/PubMed/raw/ind.pubmed.graph")
def test_pubmed_without_allx_needs_the_flag(tmp_path):
    if (ROOT / "planetoid/PubMed/raw/ind.pubmed.allx").exists():
        pytest.skip("this data root has the real PubMed features")
    with pytest.raises(DataMissing, match=r"missing ind\.pubmed\.allx .*data\.allow_stand_in=true"):
        load(cfg_for("pubmed", tmp_path))


@needs("planetoid/PubMed/raw/ind.pubmed.graph")
def test_pubmed_stand_in_keeps_real_graph_labels_split_and_rows(tmp_path):
    if (ROOT / "planetoid/PubMed/raw/ind.pubmed.allx").exists():
        pytest.skip("this data root has the real PubMed features")
    g = load(cfg_for("pubmed", tmp_path, "data.allow_stand_in=true"))
    d = g.data
    assert g.stand_in and not g.accuracy_comparable and "stand-in" in g.label
    assert d.x.shape == (19717, 500) and d.edge_index.size(1) == 88648 and int(d.y.max()) == 2
    assert (int(d.train_mask.sum()), int(d.val_mask.sum()), int(d.test_mask.sum())) == (60, 500, 1000)
    real_x = read_planetoid_raw(ROOT / "planetoid/PubMed/raw", "PubMed", synth_seed=0).x
    assert torch.equal(d.x, normalize_features(real_x)) and g.info["synthetic_rows"] == 18657
    assert (d.x[60:18717] != 0).float().mean() < 0.2                   # sparse, TF-IDF-like rows


@needs("ogbn_arxiv/raw/node-label.csv.gz")
def test_arxiv_partial_needs_the_flag_then_stand_in(tmp_path):
    if (ROOT / "ogbn_arxiv/raw/edge.csv.gz").exists():
        pytest.skip("this data root has the real ogbn-arxiv edges")
    with pytest.raises(DataMissing, match=r"raw/edge\.csv\.gz.*raw/node-feat\.csv\.gz.*allow_stand_in"):
        load(cfg_for("arxiv", tmp_path))
    g = load(cfg_for("arxiv", tmp_path, "data.allow_stand_in=true"))
    d = g.data
    assert g.stand_in and "stand-in" in g.label and g.info["directed_edges"] == 1166243
    assert d.x.shape == (169343, 128) and int(d.y.max()) == 39
    assert (int(d.train_mask.sum()), int(d.val_mask.sum()), int(d.test_mask.sum())) == (90941, 29799, 48603)


def test_resolve_root_prefers_explicit_then_shared():
    assert resolve_root("/some/where") == Path("/some/where")
    shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    assert resolve_root(None) == (shared if shared.is_dir() else Path("~/.cache/sgnn/data").expanduser())


def test_unknown_dataset_kind_is_a_user_error(tmp_path):
    data = {"root": None, "cache": str(tmp_path), "allow_stand_in": False}
    cfg = OmegaConf.create({"dataset": {"kind": "zip", "name": "x"}, "data": data})
    with pytest.raises(ValueError, match=r"expected dataset\.kind"):
        load(cfg)


@needs("planetoid/Cora/raw/ind.cora.allx")
def test_data_root_is_never_written(tmp_path):
    root = tmp_path / "root"
    (root / "planetoid" / "Cora").mkdir(parents=True)
    (root / "planetoid" / "Cora" / "raw").symlink_to(ROOT / "planetoid" / "Cora" / "raw")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    g = load(compose(["dataset=cora", f"data.root={root}", f"data.cache={tmp_path / 'cache'}"]))
    assert g.data.num_nodes == 2708
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert (tmp_path / "cache" / "planetoid" / "Cora" / "processed").is_dir()
