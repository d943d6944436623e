"""Full-batch training of the PyG reference model, with a weight cache keyed by data + hyper-parameters.

The cache key hashes the dataset config and a fingerprint of its tensors, the model config, the seed
and the torch / torch_geometric versions; files are ``<cache_dir>/<dataset>-<model>-<key>.pt``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from .models import PygNet, build_pyg
from .report import progress

CACHE_VERSION = 1


def fingerprint(data) -> str:
    """Hash of x, edge_index, y and the masks (a changed dataset never hits stale weights)."""
    h = hashlib.blake2b(digest_size=16)
    for k in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask"):
        h.update(data[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_key(cfg, data) -> str:
    """Cache key of the trained weights for ``cfg.dataset`` x ``cfg.model`` x ``cfg.seed``."""
    import torch_geometric
    spec = {"v": CACHE_VERSION, "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
            "model": OmegaConf.to_container(cfg.model, resolve=True), "seed": int(cfg.seed),
            "trainer": str(cfg.train.get("framework", "pyg")),
            "data": fingerprint(data), "torch": torch.__version__, "pyg": torch_geometric.__version__}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


def train(net, data, m, show: bool = True) -> dict:
    """Adam on the train mask for ``m.epochs`` epochs; keeps the weights with the best val accuracy."""
    opt = torch.optim.Adam(net.parameters(), lr=m.lr, weight_decay=m.weight_decay)
    best, best_state, best_epoch = -1.0, None, 0
    t0 = time.perf_counter()
    with progress(f"training {m.name}", int(m.epochs), show) as advance:
        for epoch in range(1, int(m.epochs) + 1):
            net.train()
            opt.zero_grad()
            loss = F.cross_entropy(net(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask])
            loss.backward()
            opt.step()
            net.eval()
            with torch.no_grad():
                val = accuracy(net(data.x, data.edge_index), data.y, data.val_mask)
            if val > best:
                best, best_state, best_epoch = val, copy.deepcopy(net.state_dict()), epoch
            advance(info=f"loss {loss.item():.3f}  val {val:.1%}  best {best:.1%}")
    net.load_state_dict(best_state)
    return {"epochs": int(m.epochs), "best_epoch": best_epoch, "val_accuracy": best,
            "train_seconds": round(time.perf_counter() - t0, 2)}


def load_or_train(cfg, data, num_classes: int, show: bool = True) -> tuple[PygNet, dict]:
    """The trained reference model: from the cache when ``cfg.train.use_cache`` and present, else trained
    (and stored). The info dict says ``weights: hit|trained`` and where the file is."""
    torch.manual_seed(int(cfg.seed))
    net = build_pyg(cfg.model, data.num_features, num_classes)
    trainer = str(cfg.train.get("framework", "pyg"))
    if trainer not in ("pyg", "sgnn"):
        raise ValueError(f"train.framework: expected pyg or sgnn (got {trainer!r})")
    key = weights_key(cfg, data)
    path = Path(str(cfg.train.cache_dir)).expanduser() / f"{cfg.dataset.name}-{cfg.model.name}-{key}.pt"
    if cfg.train.use_cache and path.exists():
        saved = torch.load(path, weights_only=True)
        net.load_state_dict(saved["state_dict"])
        return net.eval(), {**saved["info"], "weights": "hit", "weights_key": key, "weights_path": str(path)}
    if trainer == "sgnn":  # train sgnn's twin (same parameters names), then hand its weights back
        from sgnn.layers import from_pyg
        twin = from_pyg(net)
        info = train(twin, data, cfg.model, show)
        net.load_state_dict(twin.state_dict())
    else:
        info = train(net, data, cfg.model, show)
    info["trainer"] = trainer
    if cfg.train.use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"state_dict": net.state_dict(), "info": info}, tmp)
        os.replace(tmp, path)                     # atomic: parallel runs never read half a file
    return net.eval(), {**info, "weights": "trained", "weights_key": key, "weights_path": str(path)}
