"""Differentiable graph primitives for the layers' autograd paths.

``spmm`` runs forward *and* backward through sgnn's compiled kernels: its backward is what
``engine.derive`` derives from the SpMM statement (``Aᵀ·G``, a transposed access whose CSC the
engine builds once per graph). The
edge-wise primitives (``gather``, ``scatter``, ``edge_softmax``) are plain torch ops with
PyG's semantics, used where no kernel has a derivative yet (max/min aggregation, attention):
their gradients are torch's, so they are correct by construction.
"""
from __future__ import annotations

import torch

from ..engine import SparseTensor, autodiff
from ..engine.operands import sparse_features
from ..engine.expr import compute, indices, sum_, tensors
from ..engine.runtime import evaluate
from ..errors import NotSupported


_i, _j, _k = indices("i j k")
_A, _Z = tensors("A Z")
SPMM = compute((_i, _k), sum_(_j, _A[_i, _j] * _Z[_j, _k]))


def _run(stmt, ops):
    return evaluate(stmt, ops)


def spmm(adj: SparseTensor, z: torch.Tensor) -> torch.Tensor:
    """``adj @ z`` through sgnn kernels, differentiable w.r.t. ``z`` (and ``adj``'s values): the
    backward runs the statements ``engine.derive`` derives (``Aᵀ·G``; an SDDMM for the values)."""
    if adj.values is not None and adj.values.dtype != z.dtype:
        adj = adj.with_values(adj.values.to(z.dtype))
    if adj.values is None and "u" in adj.format.codes:  # repeated edges: keep their multiplicity
        adj = adj.derived(("ones", z.dtype), lambda: adj.with_values(torch.ones(adj.nnz, dtype=z.dtype)))
    ops = {"A": adj, "Z": z.contiguous()}
    return autodiff.evaluate(SPMM, ops, _run) if autodiff.needs_grad(ops) else _run(SPMM, ops)



def scatter(msg: torch.Tensor, rows: torch.Tensor, n: int, reduce: str) -> torch.Tensor:
    """Per-target reduction of edge messages ``msg`` [E, ...] (PyG's rules: empty targets give 0)."""
    shape = (n,) + tuple(msg.shape[1:])
    if reduce in ("sum", "add", "mean"):
        out = msg.new_zeros(shape).index_add_(0, rows, msg)
        if reduce == "mean":
            cnt = torch.bincount(rows, minlength=n).clamp_(min=1).to(msg.dtype)
            out = out / cnt.view((-1,) + (1,) * (msg.dim() - 1))
        return out
    op = {"max": "amax", "min": "amin", "mul": "prod"}.get(reduce)
    if op is None:
        raise NotSupported(f"aggregation {reduce!r} is not supported here")
    idx = rows.view((-1,) + (1,) * (msg.dim() - 1)).expand_as(msg)
    return msg.new_zeros(shape).scatter_reduce(0, idx, msg, op, include_self=False)


def edge_softmax(logits: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of per-edge logits [E, H] over each target's incoming edges (PyG's ``softmax``)."""
    idx = rows.view(-1, 1).expand_as(logits)
    top = logits.new_full((n, logits.shape[1]), float("-inf"))
    top = top.scatter_reduce(0, idx, logits.detach(), "amax", include_self=True)
    ex = (logits - top.index_select(0, rows)).exp()
    den = ex.new_zeros((n, logits.shape[1])).index_add_(0, rows, ex) + 1e-16
    return ex / den.index_select(0, rows)


def linear(x, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T (+ bias)``, differentiable; sparse ``x`` (sgnn or torch sparse, or a dense one that is
    mostly zeros and needs no gradient) through ``spmm``: ``Xᵀ G`` then gives the weight's gradient."""
    sparse = x if isinstance(x, SparseTensor) else \
        SparseTensor.from_torch(x.detach()) if x.layout != torch.strided else \
        sparse_features(x) if x.dim() == 2 and not x.requires_grad else None  # e.g. bag-of-words
    if sparse is not None:
        out = spmm(sparse, weight.t())
    else:
        out = torch.matmul(x.to(weight.dtype), weight.t())
    return out if bias is None else out + bias
