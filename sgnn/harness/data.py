"""Datasets for the harness: Planetoid and OGB from a data root, labelled stand-ins, synthetic graphs.

``load(cfg)`` returns a ``GraphData``: a PyG ``Data`` (x, edge_index, y, train/val/test masks; edge_index
symmetric, no self loops, coalesced) plus the name to show and whether it is a stand-in.

Data root: ``data.root`` (``$SGNN_DATA``), else ``<repo>/../shared/datasets`` if it exists, else
``~/.cache/sgnn/data``. Layout: ``<root>/planetoid/<Name>/raw/ind.<name>.*``, ``<root>/ogbn_arxiv/`` and
``<root>/ogbn_products/`` (OGB's layout; without it, ``data.allow_stand_in=true`` builds a synthetic
community graph of products' size, cached under ``<data.cache>/synthetic/``, see ``synthetic.py``).
Nothing is ever written under the root: its raw files are symlinked into ``data.cache``, where PyG/OGB
write ``processed/`` (and download to, when the root holds no copy at all).
"""
from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import warnings
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

from ..errors import UserError
from . import synthetic as community_graphs

PLANETOID_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
OGB_ARXIV_FILES = ("raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/node-label.csv.gz",
                   "raw/node_year.csv.gz", "raw/num-node-list.csv.gz", "raw/num-edge-list.csv.gz",
                   "split/time/train.csv.gz", "split/time/valid.csv.gz", "split/time/test.csv.gz")
OGB_PRODUCTS_FILES = ("raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/node-label.csv.gz",
                      "raw/num-node-list.csv.gz", "raw/num-edge-list.csv.gz", "split/sales_ranking/train.csv.gz",
                      "split/sales_ranking/valid.csv.gz", "split/sales_ranking/test.csv.gz")
SPLITS = (("train", "train"), ("val", "valid"), ("test", "test"))    # mask name, OGB split name
REPO = Path(__file__).resolve().parents[2]


class DataMissing(UserError):
    """Dataset files are missing (and could not be downloaded); the message names them."""


@dataclass
class GraphData:
    """A loaded dataset: PyG ``data`` plus how to label it in tables, files and plots."""

    data: Data
    name: str                       # config name, e.g. "pubmed"
    label: str                      # shown everywhere, e.g. "pubmed (stand-in: synthetic features)"
    stand_in: bool = False
    accuracy_comparable: bool = True
    note: str = ""
    info: dict = field(default_factory=dict)

    @property
    def num_edges(self) -> int:
        return int(self.data.edge_index.size(1))


def resolve_root(root) -> Path:
    """The data root: ``root`` if given, else ``<repo>/../shared/datasets``, else ``~/.cache/sgnn/data``."""
    if root:
        return Path(str(root)).expanduser()
    shared = REPO.parent / "shared" / "datasets"
    return shared if shared.is_dir() else Path("~/.cache/sgnn/data").expanduser()


def load(cfg) -> GraphData:
    """Load ``cfg.dataset`` from ``cfg.data`` (root, cache, allow_stand_in)."""
    ds, d = cfg.dataset, cfg.data
    root, cache = resolve_root(d.root), Path(str(d.cache)).expanduser()
    loaders = {"synthetic": lambda: synthetic(ds),
               "planetoid": lambda: load_planetoid(ds, root, cache, bool(d.allow_stand_in)),
               "ogb": lambda: load_arxiv(ds, root, cache, bool(d.allow_stand_in)),
               "ogb_products": lambda: load_products(ds, root, cache, bool(d.allow_stand_in))}
    if ds.kind not in loaders:
        raise UserError(f"load: expected dataset.kind in {sorted(loaders)} (got {ds.kind!r})")
    g = loaders[ds.kind]()
    before = g.num_edges
    if not g.info.get("clean"):                   # the products stand-in is built symmetric and coalesced
        g.data.edge_index = symmetric_edges(g.data.edge_index, g.data.num_nodes)   # DGL == PyG needs symmetry
    if g.num_edges != before:
        g.info["edges_added_by_symmetrisation"] = g.num_edges - before
    if ds.get("normalize_features"):
        g.data.x = normalize_features(g.data.x)
    g.info.setdefault("root", str(root))
    return g


def normalize_features(x: torch.Tensor) -> torch.Tensor:
    """Row-normalise (rows sum to 1), as PyG's ``T.NormalizeFeatures``."""
    x = x - x.min()
    return x / x.sum(dim=-1, keepdim=True).clamp(min=1.0)


# --- synthetic graphs ---------------------------------------------------------------------------

def power_law_edges(n: int, m: int, gen: torch.Generator, exponent: float = 2.5) -> torch.Tensor:
    """Exactly ``m`` distinct directed edges (no self loops) whose endpoints follow Chung-Lu power-law
    weights w_i ~ i^(-1/(exponent-1)); node ids are shuffled so hubs are spread out."""
    if m > n * (n - 1):
        raise UserError(f"power_law_edges: expected edges <= n(n-1) = {n * (n - 1)} (got {m})")
    w = torch.arange(1, n + 1, dtype=torch.float64).pow(-1.0 / (exponent - 1.0))
    keys = torch.empty(0, dtype=torch.long)
    while keys.numel() < m:                       # a few rounds: duplicates among hubs are dropped
        k = int((m - keys.numel()) * 1.3) + 16
        src, dst = torch.multinomial(w, k, True, generator=gen), torch.multinomial(w, k, True, generator=gen)
        new = (src * n + dst)[src != dst]
        keys = torch.cat([keys, new[~torch.isin(new, keys)].unique()])
    keys = keys[torch.randperm(keys.numel(), generator=gen)[:m]]
    perm = torch.randperm(n, generator=gen)
    return perm[torch.stack([keys // n, keys % n])]


def synthetic(ds) -> GraphData:
    """Power-law graph with class-informative features and homophilous extra edges (no files needed)."""
    gen = torch.Generator().manual_seed(int(ds.seed))
    n, c, f = int(ds.nodes), int(ds.classes), int(ds.features)
    y = torch.randint(0, c, (n,), generator=gen)
    ei = power_law_edges(n, int(ds.edges), gen, float(ds.exponent))
    same = torch.rand(ei.size(1), generator=gen) < float(ds.homophily)   # rewire to a same-class node
    by_class = torch.argsort(y, stable=True)
    start = torch.cumsum(torch.bincount(y, minlength=c), 0) - torch.bincount(y, minlength=c)
    count = torch.bincount(y, minlength=c)
    ys = y[ei[0, same]]
    pick = (torch.rand(ys.numel(), generator=gen) * count[ys]).long()
    ei[1, same] = by_class[start[ys] + pick]
    centers = torch.randn(c, f, generator=gen)
    x = float(ds.signal) * centers[y] + torch.randn(n, f, generator=gen)
    data = Data(x=x, edge_index=symmetric_edges(ei, n), y=y, **_random_masks(n, ds.split, gen))
    label = f"synthetic (n={n}, m={ds.edges}, seed={ds.seed})"
    return GraphData(data, "synthetic", label, accuracy_comparable=False,
                 note="synthetic power-law graph; accuracy not comparable to any benchmark")


def symmetric_edges(ei: torch.Tensor, n: int) -> torch.Tensor:
    """Symmetric, self-loop-free, coalesced edge_index."""
    ei, _ = remove_self_loops(ei)
    return coalesce(to_undirected(ei, num_nodes=n), num_nodes=n)


def _random_masks(n: int, split, gen: torch.Generator) -> dict:
    perm = torch.randperm(n, generator=gen)
    a, b = int(split[0] * n), int((split[0] + split[1]) * n)
    return {k: _mask(perm[s], n) for k, s in
            (("train_mask", slice(0, a)), ("val_mask", slice(a, b)), ("test_mask", slice(b, n)))}


def _mask(idx, n: int) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[torch.as_tensor(idx, dtype=torch.long)] = True
    return m


# --- Planetoid -----------------------------------------------------------------------------------

def load_planetoid(ds, root: Path, cache: Path, allow_stand_in: bool) -> GraphData:
    """Planetoid(name) from ``<root>/planetoid/<Name>/raw``; PubMed without allx needs the stand-in flag."""
    from torch_geometric.datasets import Planetoid
    name = str(ds.planetoid_name)
    raw = root / "planetoid" / name / "raw"
    files = [f"ind.{name.lower()}.{s}" for s in PLANETOID_SUFFIXES]
    missing = [f for f in files if not (raw / f).exists()]
    base = cache / "planetoid"
    if not missing:
        _mirror(raw, files, base / name / "raw")
        with _quiet():
            return GraphData(Planetoid(str(base), name)[0], ds.name, ds.name)
    if not raw.parent.exists():                     # no copy at all: PyG's standard download path
        try:
            with _quiet():
                return GraphData(Planetoid(str(base), name)[0], ds.name, ds.name)
        except Exception as e:                      # offline: URLError, OSError, ...
            raise DataMissing(f"{ds.name}: expected Planetoid files {files} in {raw} (none found, and "
                              f"the download to {base / name} failed: {type(e).__name__}: {e}); set "
                              f"data.root or $SGNN_DATA") from e
    if allow_stand_in and missing == [f"ind.{name.lower()}.allx"]:
        data = read_planetoid_raw(raw, name, synth_seed=int(ds.seed))
        rows = int(data.synthetic_rows)
        del data.synthetic_rows
        return GraphData(data, ds.name, f"{ds.name} (stand-in: synthetic features)", stand_in=True,
                     accuracy_comparable=False,
                     note=f"real graph, labels and split; {missing[0]} missing, so the features of "
                          f"{rows} nodes are synthetic (sparsity and values sampled "
                          f"from the real rows, no label information)", info={"synthetic_rows": rows})
    hint = " or set data.allow_stand_in=true for a labelled stand-in" if missing == files[2:3] else ""
    raise DataMissing(f"{ds.name}: missing {', '.join(missing)} in {raw} (the download path is not tried "
                      f"for a partial copy); add the files{hint}")


def read_planetoid_raw(raw: Path, name: str, synth_seed: int | None = None) -> Data:
    """PyG's read_planetoid_data, on the raw pickles (latin1); a missing allx becomes synthetic rows
    when ``synth_seed`` is given (the first len(x) rows of allx are x, as in Planetoid)."""
    low = name.lower()
    item = {s: _unpickle(raw / f"ind.{low}.{s}") for s in ("x", "tx", "y", "ty", "ally", "graph")}
    x, tx = _dense(item["x"]), _dense(item["tx"])
    allx_path = raw / f"ind.{low}.allx"
    synth = 0
    if allx_path.exists() or synth_seed is None:
        allx = _dense(_unpickle(allx_path))
    else:
        allx, synth = _synthetic_allx(x, tx, len(item["ally"]), synth_seed), len(item["ally"]) - len(x)
    ty, ally = torch.as_tensor(item["ty"]).float(), torch.as_tensor(item["ally"]).float()
    test_index = torch.from_numpy(np.loadtxt(raw / f"ind.{low}.test.index", dtype=np.int64))
    sorted_test = test_index.sort()[0]
    if low == "citeseer":          # isolated test nodes: zero rows for the gaps (as PyG does)
        span = int(test_index.max() - test_index.min()) + 1
        rows = sorted_test - test_index.min()
        tx, ty = _spread(tx, rows, span), _spread(ty, rows, span)
    feats, y = torch.cat([allx, tx]), torch.cat([ally, ty]).max(dim=1)[1]
    feats[test_index], y[test_index] = feats[sorted_test].clone(), y[sorted_test].clone()
    n = y.numel()
    ei = _edges_from_dict(item["graph"], n)
    data = Data(x=feats, edge_index=ei, y=y, train_mask=_mask(torch.arange(len(item["y"])), n),
                val_mask=_mask(torch.arange(len(item["y"]), len(item["y"]) + 500), n),
                test_mask=_mask(test_index, n))
    data.synthetic_rows = synth
    return data


def _unpickle(path: Path):
    with open(path, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # scipy.sparse.csr namespace
        return pickle.load(f, encoding="latin1")


def _dense(a) -> torch.Tensor:
    a = a.toarray() if hasattr(a, "toarray") else np.asarray(a)
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def _spread(t: torch.Tensor, rows: torch.Tensor, span: int) -> torch.Tensor:
    out = t.new_zeros(span, t.size(1))
    out[rows] = t
    return out


def _edges_from_dict(graph: dict, n: int) -> torch.Tensor:
    """Planetoid's adjacency dict as edge_index: self loops removed, coalesced by column (as PyG)."""
    lens = np.fromiter((len(v) for v in graph.values()), dtype=np.int64, count=len(graph))
    row = np.repeat(np.fromiter(graph.keys(), dtype=np.int64, count=len(graph)), lens)
    col = np.fromiter(chain.from_iterable(graph.values()), dtype=np.int64, count=int(lens.sum()))
    ei, _ = remove_self_loops(torch.from_numpy(np.stack([row, col])))
    return coalesce(ei, num_nodes=n, sort_by_row=False)


def _synthetic_allx(x: torch.Tensor, tx: torch.Tensor, rows: int, seed: int) -> torch.Tensor:
    """allx stand-in: rows [0, len(x)) are the real x; the rest are sampled column-wise with the real
    rows' nonzero rate and nonzero values (TF-IDF-like), independent of labels."""
    gen = torch.Generator().manual_seed(seed)
    real = torch.cat([x, tx])
    rate, values = (real != 0).float().mean(0), real[real != 0]
    k = rows - x.size(0)
    nz = torch.rand(k, real.size(1), generator=gen) < rate
    fake = torch.zeros(k, real.size(1))
    fake[nz] = values[torch.randint(0, values.numel(), (int(nz.sum()),), generator=gen)]
    return torch.cat([x, fake])


# --- OGB arXiv -----------------------------------------------------------------------------------

def load_arxiv(ds, root: Path, cache: Path, allow_stand_in: bool) -> GraphData:
    """ogbn-arxiv via OGB's PygNodePropPredDataset (symmetrised); a partial copy needs the stand-in flag."""
    folder = root / "ogbn_arxiv"
    missing = [f for f in OGB_ARXIV_FILES if not (folder / f).exists()]
    if not missing or not folder.exists():      # complete (mirrored), or absent: OGB's download path
        _mirror_tree(folder, cache / "ogbn_arxiv")
        return _ogb_arxiv(ds, cache)
    if allow_stand_in:
        return arxiv_stand_in(ds, folder)
    raise DataMissing(f"{ds.name}: missing {', '.join(missing)} in {folder}; add the files or set "
                      f"data.allow_stand_in=true for a labelled stand-in (synthetic graph and features)")


def _ogb_arxiv(ds, base: Path) -> GraphData:
    folder = base / "ogbn_arxiv"
    if folder.is_dir():                            # else OGB asks input() about a new release
        (folder / "processed").mkdir(exist_ok=True)
        (folder / "RELEASE_v1.txt").touch()
    try:
        with _quiet(), _env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"):
            from ogb.nodeproppred import PygNodePropPredDataset
            dataset = PygNodePropPredDataset("ogbn-arxiv", root=str(base))
            data, split = dataset[0], dataset.get_idx_split()
    except Exception as e:
        raise DataMissing(f"{ds.name}: expected OGB files {list(OGB_ARXIV_FILES)} in {base / 'ogbn_arxiv'} "
                          f"(and the download failed: {type(e).__name__}: {e}); set data.root or "
                          f"$SGNN_DATA") from e
    n = data.num_nodes
    masks = {f"{k}_mask": _mask(split[s], n) for k, s in SPLITS}
    out = Data(x=data.x, edge_index=data.edge_index, y=data.y.view(-1), **masks)
    return GraphData(out, ds.name, ds.name, note="ogbn-arxiv, symmetrised")


def arxiv_stand_in(ds, folder: Path) -> GraphData:
    """Synthetic power-law graph with arXiv's sizes (directed edge count as OGB's, then symmetrised) and
    synthetic features; real labels and time split from the partial OGB folder."""
    need = ["raw/node-label.csv.gz"]
    split_dir = next((folder / d for d in ("split/time", "derived/split/time")
                      if (folder / d / "train.csv.gz").exists()), None)
    if not (folder / need[0]).exists() or split_dir is None:
        raise DataMissing(f"{ds.name}: the stand-in needs {need[0]} and split/time/*.csv.gz (or "
                          f"derived/split/time/*.csv.gz) in {folder}")
    y = torch.from_numpy(_read_ints(folder / need[0]))
    n, m = y.numel(), int(ds.stand_in.edges)
    gen = torch.Generator().manual_seed(int(ds.seed))
    ei = power_law_edges(n, m, gen, float(ds.stand_in.exponent))
    x = torch.randn(n, int(ds.stand_in.features), generator=gen)
    masks = {f"{k}_mask": _mask(torch.from_numpy(_read_ints(split_dir / f"{s}.csv.gz")), n)
             for k, s in SPLITS}
    data = Data(x=x, edge_index=symmetric_edges(ei, n), y=y, **masks)
    return GraphData(data, ds.name, f"{ds.name} (stand-in: synthetic graph and features)", stand_in=True,
                 accuracy_comparable=False, info={"directed_edges": m},
                 note=f"synthetic power-law graph, {n} nodes, {m} directed edges (symmetrised to "
                      f"{data.edge_index.size(1)}), random features; real labels and split ({split_dir.name} "
                      f"from {split_dir.relative_to(folder)})")


def _read_ints(path: Path) -> np.ndarray:
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, dtype=np.int64, delimiter=",", ndmin=1)


# --- OGB products ----------------------------------------------------------------------------------

def load_products(ds, root: Path, cache: Path, allow_stand_in: bool) -> GraphData:
    """ogbn-products via OGB's PygNodePropPredDataset when ``<root>/ogbn_products`` is complete, else (with
    the stand-in flag) the synthetic community graph of its size; it is never downloaded implicitly."""
    folder = root / "ogbn_products"
    missing = products_missing(root)
    if not missing:
        _mirror_tree(folder, cache / "ogbn_products")
        return _ogb_products(ds, cache)
    if not allow_stand_in:
        raise DataMissing(f"{ds.name}: missing {', '.join(missing)} in {folder} (OGB's ogbn-products layout; "
                          f"not downloaded implicitly: 1.4 GB); add the files or set data.allow_stand_in=true "
                          f"for a labelled stand-in (synthetic graph, features and labels)")
    return stand_in_graph(ds, products_stand_in(ds, root, cache))


def stand_in_graph(ds, g: community_graphs.CommunityGraph) -> GraphData:
    """The products stand-in as a ``GraphData``: labelled, accuracy not comparable, already clean."""
    data, note = community_graphs.pyg_data(g)
    return GraphData(data, ds.name, community_graphs.stand_in_label(ds.name), stand_in=True,
                     accuracy_comparable=False, note=note,
                     info={"clean": True, "synthetic": True, "cache": g.info.get("cache"),
                           "communities": g.params.num_communities, "generator_key": g.params.key()})


def products_stand_in(ds, root: Path, cache: Path) -> community_graphs.CommunityGraph:
    """The stand-in's CSR and node data (memory-mapped, built once), announced on stderr."""
    return community_graphs.announced(ds, root / "ogbn_products", products_missing(root),
                                      len(OGB_PRODUCTS_FILES), cache / "synthetic")


def products_missing(root: Path) -> list[str]:
    """The OGB files of ogbn-products missing under ``root`` (all of them when the folder is absent)."""
    return [f for f in OGB_PRODUCTS_FILES if not (root / "ogbn_products" / f).exists()]


def _ogb_products(ds, base: Path) -> GraphData:
    folder = base / "ogbn_products"
    (folder / "processed").mkdir(parents=True, exist_ok=True)
    (folder / "RELEASE_v1.txt").touch()            # else OGB asks input() about a new release
    with _quiet(), _env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"):
        from ogb.nodeproppred import PygNodePropPredDataset
        dataset = PygNodePropPredDataset(name="ogbn-products", root=str(base))
        data, split = dataset[0], dataset.get_idx_split()
    n = data.num_nodes
    masks = {f"{k}_mask": _mask(split[s], n) for k, s in SPLITS}
    out = Data(x=data.x, edge_index=data.edge_index, y=data.y.view(-1), **masks)
    return GraphData(out, ds.name, ds.name, note="ogbn-products (sales-ranking split)")


# --- helpers -------------------------------------------------------------------------------------

def _mirror(src: Path, files, dest: Path) -> None:
    """Symlink ``src/f`` to ``dest/f`` for each file (nothing to do when ``src`` is ``dest``)."""
    for f in files:
        link = dest / f
        if link.resolve() == (src / f).resolve():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        elif link.exists():                         # a real file (e.g. an earlier download): keep it
            continue
        link.symlink_to((src / f).resolve())


def _mirror_tree(src: Path, dest: Path) -> None:
    """Symlink every file under ``src`` into the same place under ``dest``."""
    if src.is_dir():
        _mirror(src, [p.relative_to(src) for p in src.rglob("*") if p.is_file()], dest)


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
