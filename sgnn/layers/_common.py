"""Helpers shared by the layers: feature transforms (dense GEMM or sparse×dense by density)."""
from __future__ import annotations

import weakref

import torch

from ..engine import SparseTensor, einsum, memory
from ..engine.explain import note
from ..errors import UserError

# Below this fraction of nonzeros, X·W runs as a sparse×dense product. Measured on PubMed's 19717 x 500
# features at 10% density (2 threads): sparse 0.44 / 1.09 / 5.3 ms vs dense GEMM 5.8 / 10.3 / 30 ms for
# 16 / 64 / 256 outputs, i.e. sparse wins up to ~60% density; 0.3 leaves a margin.
SPARSE_FEATURE_DENSITY = 0.3
_SAMPLE = 4096


class TensorCache:
    """Values cached per tensor *object* (identity, not equality), dropped when the tensor dies."""

    def __init__(self):
        self._d: dict[int, tuple] = {}

    def get(self, t):
        hit = self._d.get(id(t))
        return hit[1] if hit is not None and hit[0]() is t else None

    def set(self, t, value) -> None:
        key = id(t)
        try:
            ref = weakref.ref(t, lambda _r, key=key, d=self._d: d.pop(key, None))
        except TypeError:
            return
        self._d[key] = (ref, value)


_sparse_x = TensorCache()


def check_x(x, name: str = "x", static: bool = False) -> None:
    """Node features: a [N, F] tensor (dense or sparse), an ``sgnn.SparseTensor``, or, where the layer
    supports static graphs (``static``), a dense [B, N, F] batch over one graph."""
    if isinstance(x, SparseTensor):
        return
    if not isinstance(x, torch.Tensor):
        raise UserError(f"Expected '{name}' to be a Tensor (got {type(x).__name__})")
    if x.dim() != 2 and not (static and x.dim() == 3 and x.layout == torch.strided):
        dims = "two-dimensional [num_nodes, channels] (or [batch, num_nodes, channels])" if static else \
            "two-dimensional [num_nodes, channels]"
        raise UserError(f"Expected '{name}' {dims} (got {x.dim()} dimensions)")
    if x.device.type != "cpu":
        raise UserError(f"Expected '{name}' on the CPU (got device {x.device})")
    if not x.is_floating_point():
        raise UserError(f"Expected '{name}' to hold floating point values (got {x.dtype})")


def _as_sparse_features(x: torch.Tensor) -> SparseTensor | None:
    """The CSR of a mostly-zero dense feature matrix (decided by sampling, cached per tensor version)."""
    if x.layout != torch.strided:
        return SparseTensor.from_torch(x)
    if (x.requires_grad and torch.is_grad_enabled()) or x.is_inference():
        return None  # inference tensors have no version counter: a cached conversion could go stale
    hit = _sparse_x.get(x)
    sig = (x._version, x.data_ptr(), tuple(x.shape), x.dtype)
    if hit is not None and hit[0] == sig:
        return hit[1]
    n = x.numel()
    if n < 65536:
        result = None
    else:
        flat = x.reshape(-1)
        idx = torch.randint(0, n, (_SAMPLE,), generator=torch.Generator().manual_seed(0))
        density = float((flat[idx] != 0).float().mean())
        result = SparseTensor.from_dense(x) if density < SPARSE_FEATURE_DENSITY else None
    _sparse_x.set(x, (sig, result))
    return result


def matmul_t(x, weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T`` (a torch Linear's product), sparse×dense when ``x`` is mostly zeros; a dense
    GEMM writes into ``out`` when given (e.g. the local rows of a partitioned graph's buffer)."""
    xs = x if isinstance(x, SparseTensor) else _as_sparse_features(x)
    if xs is None:
        note(lambda: f"X·W: dense GEMM (torch) into a huge-page buffer, {tuple(x.shape)} x "
             f"{tuple(weight.shape[::-1])}")
        return linear(x, weight, out=out)
    note(lambda: f"X·W: sparse x dense (sgnn kernel): X stores {xs.nnz} of {xs.shape[0] * xs.shape[1]} entries")
    w = weight.detach()
    if xs.dtype != w.dtype and xs.values is not None:  # features take the parameters' dtype
        xs = xs.with_values(xs.values.to(w.dtype))
    return einsum("ik,kj->ij", xs, transposed(weight))


_transposed = TensorCache()


def transposed(w: torch.Tensor) -> torch.Tensor:
    """``w.T`` as a contiguous tensor (unit-stride rows for the gather), cached per weight version."""
    if w.is_inference():
        return w.detach().t().contiguous()
    sig = (w._version, w.data_ptr(), tuple(w.shape))
    hit = _transposed.get(w)
    if hit is not None and hit[0] == sig:
        return hit[1]
    wt = w.detach().t().contiguous()
    _transposed.set(w, (sig, wt))
    return wt


def dense_features(x, dtype: torch.dtype) -> torch.Tensor:
    """``x`` as a dense tensor of ``dtype`` (for products that aggregate raw features)."""
    if isinstance(x, SparseTensor):
        return x.to_dense().to(dtype)
    if x.layout != torch.strided:
        return x.to_dense().to(dtype)
    return x.to(dtype)


def records_graph(*ts) -> bool:
    """True when autograd would record an operation on these tensors."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` written into a fresh buffer on huge pages (the GEMM's output is
    gathered at random next, and a fresh 4 KiB-paged buffer costs a page fault per page); plain
    ops when autograd records. Features take the parameters' dtype (as in ``ops.linear``)."""
    if x.dtype != weight.dtype:
        x = x.to(weight.dtype)
    if records_graph(x, weight, bias):
        out = x @ weight.t()
        return out if bias is None else out + bias
    if out is None or out.shape != (x.shape[0], weight.shape[0]) or out.dtype != weight.dtype:
        out = memory.empty((x.shape[0], weight.shape[0]), weight.dtype)
    if bias is None:
        return torch.mm(x, weight.t(), out=out)
    return torch.addmm(bias, x, weight.t(), out=out)


def add_linear_(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``out += x @ weight.T`` in place (one GEMM pass with beta = 1), ``out`` owned by the caller."""
    if records_graph(out, x, weight):
        return out + x @ weight.t()
    return out.addmm_(x, weight.t())
