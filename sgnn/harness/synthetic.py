"""Community graphs at products scale: a degree-corrected stochastic block model built straight into CSR.

``build(params)`` returns a ``CommunityGraph``: a symmetric, self-loop-free, duplicate-free int32 CSR
(rowptr int64 only past 2^31 nonzeros), community and label per node, float32 features and a
train/val/test split. ``load(params, cache_dir)`` caches it as ``.npy`` files keyed by the parameters
(memory-mapped on the next load). The same parameters and seed give the same graph on any machine
(numpy ``PCG64``, fixed chunk sizes).

The model: node weights ``theta_i ~ (i+1)^(-1/(gamma-1))`` (power-law expected degrees, ids shuffled);
power-law community sizes; a node joins a community big enough to hold its intra edges (so hubs
keep their degree); every community belongs to a category (= class, Zipf sizes, as products'
product categories). Each edge picks ``u ~ theta`` and ``v ~ theta`` inside u's community (probability
``intra``), else inside u's category (``category_locality``), else anywhere. Labels are the category
(``label_noise`` of the nodes relabelled); features are a community centroid times ``signal`` plus
unit noise, so neighbour averaging helps a GNN.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

VERSION = 2                     # bump when the generator's output changes (it is part of the cache key)
CHUNK = 1 << 23                 # edges sampled per chunk (fixed: part of the determinism)
ARRAYS = ("rowptr", "col", "community", "y", "split", "x")


@dataclass(frozen=True)
class Params:
    """Generator parameters (all of them form the cache key)."""

    num_nodes: int
    num_edges: int                      # undirected, distinct, no self loops (2x as CSR nonzeros)
    num_communities: int
    num_classes: int = 47
    num_features: int = 100
    degree_exponent: float = 3.0        # gamma of the expected-degree power law
    community_exponent: float = 0.8     # community sizes ~ rank^(-this)
    intra: float = 0.85                 # probability that an edge stays inside its community
    category_locality: float = 0.8      # of the other edges: probability to stay inside the category
    label_noise: float = 0.2
    signal: float = 0.5                 # centroid scale of the features (noise std 1)
    split: tuple = (0.0803, 0.0161)     # train, val fractions (ogbn-products: 196615, 39323 of 2449029)
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CommunityGraph:
    """CSR of a symmetric graph (row = target, col = source) plus node data; arrays may be memmaps."""

    params: Params
    rowptr: np.ndarray
    col: np.ndarray
    community: np.ndarray                # int32 [N]
    y: np.ndarray                        # int16 [N]
    split: np.ndarray                    # int8 [N]: 0 train, 1 val, 2 test
    x: np.ndarray                        # float32 [N, F]
    info: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return self.rowptr.size - 1

    def degree(self) -> np.ndarray:
        return np.diff(self.rowptr)

    def intra_fraction(self) -> float:
        """Fraction of stored edges whose endpoints share a community."""
        rows = np.repeat(self.community, self.degree())
        return float(np.mean(rows == self.community[self.col])) if self.col.size else 0.0


def build(p: Params) -> CommunityGraph:
    """A fresh graph (vectorised; peak memory about 3 int64 arrays of ``num_edges`` plus the features)."""
    if p.num_edges > p.num_nodes * (p.num_nodes - 1) // 4:
        raise ValueError(f"synthetic: expected num_edges <= n(n-1)/4 = {p.num_nodes * (p.num_nodes - 1) // 4} "
                         f"for a sparse graph (got {p.num_edges})")
    rngs = [np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(p.seed).spawn(6)]
    theta = _weights(p, rngs[0])
    community = _communities(p, theta, rngs[1])
    category = _prior_choice(p.num_classes, p.num_communities, rngs[5])      # the class of each community
    keys = _edge_keys(p, theta, community, category, rngs[2])
    rowptr, col = _csr_from_keys(keys, p.num_nodes)
    del keys
    y, split = _labels(p, category[community], rngs[3])
    x = _features(p, community, rngs[4])
    return CommunityGraph(p, rowptr, col, community, y, split, x)


def _weights(p: Params, rng) -> np.ndarray:
    """Expected degree per node id: a power law in rank, ranks shuffled over ids."""
    alpha = 1.0 / (p.degree_exponent - 1.0)
    w = np.arange(1, p.num_nodes + 1, dtype=np.float64) ** -alpha
    w *= 2.0 * p.num_edges / w.sum()
    return w[rng.permutation(p.num_nodes)]


def _communities(p: Params, theta: np.ndarray, rng) -> np.ndarray:
    """Community per node, drawn by size among the communities of at least twice its expected degree."""
    sizes = np.arange(1, p.num_communities + 1, dtype=np.float64) ** -p.community_exponent
    sizes *= p.num_nodes / sizes.sum()                       # descending target sizes
    cum = np.cumsum(sizes)
    eligible = np.searchsorted(-sizes, -2.0 * theta / p.intra, side="right").clip(1, None)
    r = rng.random(p.num_nodes) * cum[eligible - 1]
    return np.searchsorted(cum, r, side="right").clip(0, p.num_communities - 1).astype(np.int32)


def _edge_keys(p: Params, theta, community, category, rng) -> np.ndarray:
    """Sorted distinct keys ``u * N + v`` (u < v) of exactly ``num_edges`` edges."""
    c = p.num_communities
    block = category.astype(np.int64) * c + np.arange(c)      # position space: by category, then community
    order = np.argsort(block[community], kind="stable")
    cw = np.cumsum(theta[order])
    ranges = [_ranges(cw, np.bincount(community, minlength=c), np.argsort(block)),
              _ranges(cw, np.bincount(category[community], minlength=p.num_classes), None)]
    ctx = (order, cw, community[order], category, ranges)
    keys = _sample(p, ctx, int(p.num_edges * 1.03) + 1024, rng)
    while keys.size < p.num_edges:                          # top up (duplicates among hubs are dropped)
        keys = _merge(keys, _sample(p, ctx, int((p.num_edges - keys.size) * 1.5) + 1024, rng))
    if keys.size > p.num_edges:
        drop = rng.choice(keys.size, keys.size - p.num_edges, replace=False)
        keep = np.ones(keys.size, dtype=bool)
        keep[drop] = False
        keys = keys[keep]
    return keys


def _ranges(cw: np.ndarray, counts: np.ndarray, order):
    """(start, end, base weight, weight) of groups laid out contiguously in position space, in ``order``."""
    order = np.arange(counts.size) if order is None else order
    end = np.empty(counts.size, dtype=np.int64)
    end[order] = np.cumsum(counts[order])
    start = end - counts
    base = np.where(start > 0, cw[np.maximum(start - 1, 0)], 0.0)
    return start, end, base, np.where(counts > 0, cw[np.maximum(end - 1, 0)] - base, 0.0)


def _sample(p: Params, ctx, count: int, rng) -> np.ndarray:
    """``count`` sampled pairs as sorted distinct keys (self loops dropped)."""
    out = np.empty(count, dtype=np.int64)
    n, filled = p.num_nodes, 0
    for lo in range(0, count, CHUNK):
        k = min(CHUNK, count - lo)
        u, v = _pairs(ctx, k, p.intra, p.category_locality, rng)
        ok = u != v
        u, v = u[ok], v[ok]
        a, b = np.minimum(u, v).astype(np.int64), np.maximum(u, v).astype(np.int64)
        out[filled:filled + a.size] = a * n + b
        filled += a.size
    out = out[:filled]
    out.sort()
    return out[np.concatenate(([True], out[1:] != out[:-1]))] if out.size else out


def _pairs(ctx, k: int, intra: float, local: float, rng):
    """k endpoint pairs: u ~ theta (sorted queries: cache-friendly); v ~ theta inside u's community
    (``intra``), else inside its category (``local``), else anywhere."""
    order, cw, comm_sorted, category, ranges = ctx
    pu = _lookup(cw, np.sort(rng.random(k) * cw[-1]))
    c = comm_sorted[pu]
    level = np.where(rng.random(k) < intra, 0, np.where(rng.random(k) < local, 1, 2))
    group = np.where(level == 0, c, category[c])
    q, lo, hi = rng.random(k) * cw[-1], np.zeros(k, np.int64), np.full(k, cw.size - 1)
    for lv in (0, 1):
        m = level == lv
        start, end, base, weight = (a[group[m]] for a in ranges[lv])
        q[m] = base + q[m] / cw[-1] * weight
        lo[m], hi[m] = start, end - 1
    idx = np.argsort(q)
    pv = np.empty(k, dtype=np.int64)
    pv[idx] = _lookup(cw, q[idx])
    return order[pu], order[np.clip(pv, lo, hi)]


def _lookup(cw: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.searchsorted(cw, q, side="right").clip(0, cw.size - 1)


def _merge(keys: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Sorted union of two sorted distinct key arrays."""
    at = np.searchsorted(keys, new)
    seen = keys[np.minimum(at, keys.size - 1)] == new if keys.size else np.zeros(new.size, bool)
    return np.insert(keys, at[~seen], new[~seen])


def _csr_from_keys(keys: np.ndarray, n: int):
    """Symmetric CSR (sorted rows) of the sorted upper-triangle keys ``u * n + v`` (u < v): row r holds
    its lower neighbours, then its upper ones. ``keys`` is reused in place (it holds garbage after)."""
    idx = np.int32 if 2 * keys.size < 2 ** 31 else np.int64
    up, low = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for lo in range(0, keys.size, CHUNK):
        k = keys[lo:lo + CHUNK]
        up += np.bincount(k // n, minlength=n)
        low += np.bincount(k % n, minlength=n)
    rowptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(up + low, out=rowptr[1:])
    col = np.empty(2 * keys.size, dtype=np.int32)
    _place(keys, rowptr[:-1] + low - (np.cumsum(up) - up), n, col)
    for lo in range(0, keys.size, CHUNK):                   # now the lower entries: v * n + u
        k = keys[lo:lo + CHUNK]
        k[:] = (k % n) * n + k // n
    keys.sort()
    _place(keys, rowptr[:-1] - (np.cumsum(low) - low), n, col)
    return rowptr.astype(idx), col


def _place(keys: np.ndarray, offset: np.ndarray, n: int, col: np.ndarray) -> None:
    """col[i + offset[row_i]] = col_i for the sorted keys ``row * n + col`` (chunked, no E-size temps)."""
    for lo in range(0, keys.size, CHUNK):
        k = keys[lo:lo + CHUNK]
        r = k // n
        col[np.arange(lo, lo + k.size) + offset[r]] = (k - r * n).astype(np.int32)


def _prior_choice(classes: int, size: int, rng) -> np.ndarray:
    """``size`` draws from Zipf class sizes (prior ~ 1/rank)."""
    prior = 1.0 / np.arange(1, classes + 1)
    return rng.choice(classes, size, p=prior / prior.sum())


def _labels(p: Params, y: np.ndarray, rng):
    """The community's class, ``label_noise`` of the nodes relabelled; a random split."""
    y = y.copy()
    noisy = rng.random(p.num_nodes) < p.label_noise
    y[noisy] = _prior_choice(p.num_classes, int(noisy.sum()), rng)
    split = np.full(p.num_nodes, 2, dtype=np.int8)
    perm = rng.permutation(p.num_nodes)
    a = round(p.split[0] * p.num_nodes)
    split[perm[:a]], split[perm[a:a + round(p.split[1] * p.num_nodes)]] = 0, 1
    return y.astype(np.int16), split


def _features(p: Params, community, rng, out=None) -> np.ndarray:
    """``signal * centroid[community] + N(0, 1)``, float32, in row chunks."""
    centroids = rng.standard_normal((p.num_communities, p.num_features), dtype=np.float32) * p.signal
    x = np.empty((p.num_nodes, p.num_features), dtype=np.float32) if out is None else out
    step = max(1, CHUNK // max(p.num_features, 1))
    for lo in range(0, p.num_nodes, step):
        hi = min(lo + step, p.num_nodes)
        rng.standard_normal((hi - lo, p.num_features), dtype=np.float32, out=x[lo:hi])
        x[lo:hi] += centroids[community[lo:hi]]
    return x


def load(p: Params, cache_dir, build_fn=build) -> CommunityGraph:
    """The graph of ``p`` from ``cache_dir/community-<key>/`` (memory-mapped), built and stored first if
    absent. A file lock serialises concurrent builders (e.g. the ranks of one torchrun)."""
    from filelock import FileLock
    folder = Path(cache_dir).expanduser() / f"community-{p.key()}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "meta.json").exists():
            _store(build_fn(p), folder)
    return _open(p, folder)


def _store(g: CommunityGraph, folder: Path) -> None:
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ARRAYS:
        np.save(tmp / f"{name}.npy", getattr(g, name))
    stats = {"intra_fraction": g.intra_fraction(), "max_degree": int(g.degree().max(initial=0)),
             "nonzeros": int(g.col.size)}
    (tmp / "meta.json").write_text(json.dumps({"version": VERSION, "params": asdict(g.params), "stats": stats},
                                              indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _open(p: Params, folder: Path) -> CommunityGraph:
    arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in ARRAYS}
    stats = json.loads((folder / "meta.json").read_text())["stats"]
    return CommunityGraph(p, **arrays, info={"cache": str(folder), **stats})


# --- the products stand-in in the harness ------------------------------------------------------------

def params_from_config(si, seed: int) -> Params:
    """``Params`` from a dataset config's ``stand_in`` block (configs/dataset/products.yaml)."""
    return Params(num_nodes=int(si.nodes), num_edges=int(si.edges), num_communities=int(si.communities),
                  num_classes=int(si.classes), num_features=int(si.features),
                  degree_exponent=float(si.degree_exponent), community_exponent=float(si.community_exponent),
                  intra=float(si.intra), category_locality=float(si.category_locality),
                  label_noise=float(si.label_noise), signal=float(si.signal),
                  split=tuple(float(v) for v in si.split), seed=int(seed))


def announced(ds, folder, missing: list, total: int, cache_dir) -> CommunityGraph:
    """``load`` of the stand-in configured by ``ds``, said loudly on stderr (the real files are missing)."""
    import sys
    p = params_from_config(ds.stand_in, int(ds.seed))
    print(f"\n*** {ds.name}: ogbn-products is not under {folder} (missing {len(missing)} of {total} OGB files, "
          f"e.g. {missing[0]}).\n*** Using a SYNTHETIC STAND-IN of its size ({p.num_nodes} nodes, {p.num_edges} "
          f"undirected edges, {p.num_communities} communities); accuracy is NOT comparable to ogbn-products.\n",
          file=sys.stderr, flush=True)
    return load(p, cache_dir)


def stand_in_label(name: str) -> str:
    return f"{name} (stand-in: synthetic graph, features and labels)"


def pyg_data(g: CommunityGraph):
    """(PyG ``Data`` with edge_index int64 [2, 2E] and masks, a note describing the stand-in)."""
    import torch
    from torch_geometric.data import Data
    p, n = g.params, g.num_nodes
    rows = torch.repeat_interleave(torch.arange(n), torch.from_numpy(g.degree().astype(np.int64)))
    ei = torch.stack([rows, torch.from_numpy(g.col.astype(np.int64))])
    split = torch.from_numpy(np.array(g.split))
    data = Data(x=torch.from_numpy(np.array(g.x)), edge_index=ei, y=torch.from_numpy(g.y.astype(np.int64)),
                train_mask=split == 0, val_mask=split == 1, test_mask=split == 2)
    note = (f"synthetic degree-corrected block model with ogbn-products' sizes: {n} nodes, {p.num_edges} "
            f"undirected edges ({ei.size(1)} stored), {p.num_communities} communities in {p.num_classes} "
            f"categories ({g.info['intra_fraction']:.0%} of edges inside a community), power-law degrees "
            f"(max {g.info['max_degree']}); features and labels follow the communities; accuracy not "
            f"comparable to ogbn-products")
    return data, note
