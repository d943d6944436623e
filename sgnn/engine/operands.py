"""Values derived from a caller's tensors, cached in one place under one invalidation rule.

The layer planner derives values from the tensors a layer hands it: the CSR of an ``edge_index``
(``layers.graph``), contiguous transposes of weights, the CSR of mostly-zero features (by sampled
density, ``sparse_features``), folded weights (GAT's ``Θ·att``). Each is cached here, on the
tensor it derives from, and found again by **identity**: the entry belongs to that tensor
*object* (a view is filed under its base tensor, its strides and offset in the signature) and
dies with it (a weak reference).

**The rule**: an entry is current while every tensor it derives from still has the version
counter, data pointer, shape, strides and dtype it had when the entry was made. Every in-place
torch edit bumps the version counter; an edit that bypasses torch (through ``t.numpy()``) is not
seen: edit through torch. **Inference tensors** (made under ``torch.inference_mode``) have no
version counter, so by default nothing derived from one is cached (``cached`` recomputes it on
each call). A caller for whom recomputing is dearer than a look at the data passes
``by_content=True``: the entry then also keeps the tensor's content (a copy when small, else a
fingerprint of 2^16 evenly spaced entries and the sum) and is current while that matches (the
graph cache does this for ``edge_index``es).

Values derived from an immutable object (a ``Graph``'s degrees, a ``SparseTensor``'s conversions)
live on that object instead (``Graph.derived``, ``SparseTensor.derived``): no invalidation needed.
"""
from __future__ import annotations

import threading
import weakref

import torch

from ..errors import UserError
from .formats import Format
from .tensor import SparseTensor

# Below this fraction of nonzeros X·W runs sparse×dense. Measured on PubMed's 19717 x 500 features at
# 10% density (2 threads): sparse 0.44 / 1.09 / 5.3 ms vs dense GEMM 5.8 / 10.3 / 30 ms for 16 / 64 /
# 256 outputs, i.e. sparse wins up to ~60% density; 0.3 leaves a margin.
SPARSE_FEATURE_DENSITY = 0.3
SPARSE_MIN_NUMEL = 65536  # smaller feature matrices are not sampled: their GEMM is cheap anyway
_SAMPLE = 4096
SMALL = 1 << 22  # inference tensors up to this many entries are compared by a full copy
MAX_PER_TENSOR = 8  # entries kept per tensor (e.g. one graph per size it was read with)

_tables: dict[int, tuple] = {}  # id(root tensor) -> (weakref, {key: (signature, content, value)})
_lock = threading.Lock()


def _root(t: torch.Tensor) -> torch.Tensor:
    base = t._base
    return t if base is None else base


def _storage_ptr(t: torch.Tensor):
    """Where a tensor's data lives (sparse tensors: their index and value arrays)."""
    if t.layout == torch.strided:
        return t.data_ptr()
    if t.layout not in (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc):
        return id(t)
    return tuple(p.data_ptr() for p in _parts(t))


def signature(t: torch.Tensor) -> tuple:
    """What an entry derived from ``t`` depends on (``None`` for the version of an inference tensor;
    a view adds its strides and offset)."""
    version = None if t.is_inference() else t._version
    if t._base is None:
        return (version, _storage_ptr(t), t.shape, t.dtype)
    return (version, t.data_ptr(), t.shape, t.dtype, t.stride(), t.storage_offset())


def _table(root: torch.Tensor) -> dict | None:
    key = id(root)
    hit = _tables.get(key)
    if hit is not None and hit[0]() is root:
        return hit[1]
    try:
        ref = weakref.ref(root, lambda _r, key=key: _tables.pop(key, None))
    except TypeError:
        return None
    with _lock:
        entries: dict = {}
        _tables[key] = (ref, entries)
    return entries


def cached(deps: tuple, key, make, by_content: bool = False):
    """``make()``, cached on ``deps[0]`` under ``key`` while every tensor in ``deps`` is unchanged
    (see the module's rule); ``by_content`` also caches for inference tensors, compared by content."""
    t = deps[0]
    if len(deps) == 1 and t._base is None and t.layout == torch.strided and not t.is_inference():
        hit = _tables.get(id(t))  # the hot path: one plain tensor, unchanged since
        entry = hit[1].get(key) if hit is not None and hit[0]() is t else None
        if entry is not None and entry[0] == (t._version, t.data_ptr(), t.shape, t.dtype):
            return entry[3]
    return _cached(deps, key, make, by_content)


def _cached(deps: tuple, key, make, by_content: bool):
    inference = False
    for t in deps:
        inference = inference or t.is_inference()
    if inference and not by_content:
        return make()
    entries = _table(_root(deps[0]))
    if entries is None:
        return make()
    sig = signature(deps[0]) if len(deps) == 1 else tuple(signature(t) for t in deps)
    hit = entries.get(key)
    if hit is not None and hit[0] == sig and (len(deps) == 1 or _same_tensors(hit[1], deps)) \
            and (not inference or _same_content(hit[2], deps)):
        return hit[3]
    value = make()
    refs = tuple(weakref.ref(_root(t)) for t in deps[1:])  # the other tensors, by identity
    if len(entries) >= MAX_PER_TENSOR and key not in entries:
        entries.clear()
    entries[key] = (sig, refs, tuple(_content(t) for t in deps) if inference else None, value)
    return value


def _same_tensors(refs: tuple, deps: tuple) -> bool:
    return all(r() is _root(t) for r, t in zip(refs, deps[1:]))


def peek(t: torch.Tensor, key):
    """The current value cached on ``t`` under ``key``, or None (no build; never for inference tensors)."""
    if t.is_inference():
        return None
    hit = _tables.get(id(_root(t)))
    if hit is None or hit[0]() is not _root(t):
        return None
    entry = hit[1].get(key)
    return entry[3] if entry is not None and entry[0] == signature(t) else None


def _parts(t: torch.Tensor) -> tuple:
    """The arrays holding a tensor's data (a sparse tensor's indices and values)."""
    if t.layout == torch.sparse_coo:
        return (t._indices(), t._values())
    if t.layout == torch.sparse_csr:
        return (t.crow_indices(), t.col_indices(), t.values())
    if t.layout == torch.sparse_csc:
        return (t.ccol_indices(), t.row_indices(), t.values())
    return (t,)


def _content(t: torch.Tensor):
    """What an inference tensor is compared by: a copy when small (a sparse one: its arrays), else a
    fingerprint of 2^16 evenly spaced entries plus the sum (an edit keeping both is not seen)."""
    if t.layout != torch.strided:
        return tuple(p.clone() for p in _parts(t))
    if t.numel() <= SMALL:
        return t.clone()
    flat = t.reshape(-1)
    step = max(1, flat.numel() // (1 << 16))
    total = int(flat.sum()) if not t.is_floating_point() else float(flat.sum())
    return ("fingerprint", flat[::step].clone(), total)


def _same_content(kept: tuple, deps: tuple) -> bool:
    for k, t in zip(kept, deps):
        if isinstance(k, torch.Tensor):
            same = torch.equal(k, t)
        elif t.layout != torch.strided:
            same = all(torch.equal(a, b) for a, b in zip(k, _parts(t)))
        else:
            now = _content(t)
            same = now[2] == k[2] and torch.equal(now[1], k[1])
        if not same:
            return False
    return True


def transposed(w: torch.Tensor) -> torch.Tensor:
    """``w.T`` as a contiguous tensor (unit-stride rows for a kernel's gather)."""
    return cached((w,), "transposed", lambda: w.detach().t().contiguous())


def sparse_features(x) -> SparseTensor | None:
    """X as a SparseTensor when it is one, is torch sparse, or is dense and mostly zeros (sampled,
    cached per tensor version; never for a tensor autograd records or an inference tensor)."""
    if isinstance(x, SparseTensor):
        return x
    if x.layout != torch.strided:
        return SparseTensor.from_torch(x)
    if (x.requires_grad and torch.is_grad_enabled()) or x.is_inference() or x.numel() < SPARSE_MIN_NUMEL:
        return None
    return cached((x,), "sparse_features", lambda: _sampled(x))


def _sampled(x: torch.Tensor) -> SparseTensor | None:
    idx = torch.randint(0, x.numel(), (_SAMPLE,), generator=torch.Generator().manual_seed(0))
    density = float((x.reshape(-1)[idx] != 0).float().mean())
    return SparseTensor.from_dense(x) if density < SPARSE_FEATURE_DENSITY else None


def dense_features(x, dtype: torch.dtype) -> torch.Tensor:
    """``x`` as a dense tensor of ``dtype`` (a kernel aggregating raw features reads it)."""
    if isinstance(x, SparseTensor) or x.layout != torch.strided:
        return x.to_dense().to(dtype)
    return x.to(dtype)


# ---------------------------------------------------------------- one pattern, new values per call
def row_slice(a: SparseTensor, r0: int, r1: int) -> SparseTensor:
    """Rows ``[r0, r1)`` of a CSR (or non-unique CSR) matrix, sharing its coordinates and values."""
    pos = a.pos[1]
    p0, p1 = int(pos[r0]), int(pos[r1])
    vals = None if a.values is None else a.values[p0:p1]
    return SparseTensor((r1 - r0, a.shape[1]), a.format, [None, pos[r0:r1 + 1] - p0], [None, a.crd[1][p0:p1]],
                        vals, check=False)


def check_out(out, shape: tuple, dtype: torch.dtype, operands) -> torch.Tensor:
    """``out`` if a kernel may write a ``shape`` ``dtype`` result into it: a plain contiguous CPU
    tensor of that shape and dtype sharing no memory with a dense operand; else a UserError."""
    if type(out) is not torch.Tensor or not out.is_cpu or out.layout != torch.strided or not out.is_contiguous():
        raise UserError("out: expected a contiguous CPU torch.Tensor")
    if tuple(out.shape) != shape or out.dtype != dtype:
        raise UserError(f"out: expected shape {list(shape)} and dtype {dtype} (got {list(out.shape)}, {out.dtype})")
    lo, hi = out.data_ptr(), out.data_ptr() + out.numel() * out.element_size()
    for t in operands:
        if isinstance(t, torch.Tensor) and t.numel() and hi > lo:
            a = t.data_ptr()
            if a < hi and lo < a + t.numel() * t.element_size():
                raise UserError("out: shares memory with an operand (the kernel reads while it writes)")
    return out


def revalued(base: SparseTensor, values: torch.Tensor) -> SparseTensor:
    """``base.with_values(values)`` sharing what ``base``'s pattern alone determines: the row
    partitions the runtime caches, and the transposed twin a derived ``Aᵀ·G`` reads, rebuilt by one
    gather through a cached permutation instead of a sort (values that change every step, such as
    trained edge weights)."""
    out = base.with_values(values)
    out._derived = _Shared(base.derived("structure-cache", dict))
    if base.ndim == 2 and base.format.order == (0, 1):
        fmt = Format(base.format.codes, order=(1, 0))
        twin, perm, shared = base.derived(("transposed-perm", fmt), lambda: _transposed_perm(base, fmt))
        t = SparseTensor(twin.shape, twin.format, twin.pos, twin.crd, values.detach().index_select(0, perm),
                         check=False)
        t._derived = _Shared(shared)
        out._derived[("format", fmt)] = t
    return out


def _transposed_perm(base: SparseTensor, fmt: Format):
    ids = base.with_values(torch.arange(base.nnz, dtype=torch.float64)).to(fmt)
    return ids.with_values(None), ids.values.long(), {}


def _structural(key) -> bool:
    return isinstance(key, tuple) and bool(key) and key[0] in ("parts", "launch")


class _Shared(dict):
    """A tensor's derived-value cache whose pattern-only entries (``runtime``'s row partitions,
    keyed ``("parts", n)`` / ``("launch", threads)``) live in a dict shared by one pattern's tensors."""

    __slots__ = ("shared",)

    def __init__(self, shared: dict):
        super().__init__()
        self.shared = shared

    def get(self, key, default=None):
        return self.shared.get(key, default) if _structural(key) else super().get(key, default)

    def __setitem__(self, key, value):
        if _structural(key):
            self.shared[key] = value
        else:
            super().__setitem__(key, value)


__all__ = ["cached", "peek", "signature", "transposed", "sparse_features", "dense_features", "revalued"]
