"""Differentiable fused attention and max/min aggregation on sgnn kernels, for the layers.

``attention`` is GAT's nest ``out_ihc = sum_j softmax_j(leaky_relu(ad_ih + as_jh (+ ae_ijh)) over
A_ij) X_jhc (+ b_hc)``: forward is the fused kernel (logits, row softmax and aggregation in one pass
per row), backward the statements ``engine.derive`` derives from it (row maxima and normalisers
recomputed, attention recomputed inside each gradient kernel, no per-edge tensor stored except the
edge logits' own gradient). ``extreme`` is ``max_j A_ij Z_jk`` / ``min_j`` (0 for a row without
entries) with the gradient routed to the extreme entries, ties split evenly as torch's
``scatter_reduce`` amax/amin (PyG's max aggregation). Without autograd both are plain kernel calls.
"""
from __future__ import annotations

import functools

import torch

from ..engine import SparseTensor, autodiff
from ..engine.expr import Statement, compute, indices, keep, leaky_relu, max_, min_, pattern, softmax, sum_, tensors
from ..engine.formats import Format
from ..engine.runtime import evaluate
from ..errors import UserError

_i, _j, _k, _h, _c = indices("i j k h c")
_A, _Z, _AD, _AS, _AE, _X, _B = tensors("A Z ad as_ ae X b")


@functools.lru_cache(maxsize=None)
def attention_statement(has_dst: bool, has_edge: bool, bias: bool, slope: float, dropout: float = 0.0) -> Statement:
    """The fused attention statement for one combination of options; with ``dropout`` the weights
    are ``softmax * keep_ijh`` (PyG's dropout of alpha after the softmax), the mask seeded by the
    operand ``seed``. ``p`` is part of the statement (a model constant, like the slope: one kernel
    per value, the threshold and scale folded); the seed is a runtime scalar (one kernel for every
    step)."""
    score = _AS[_j, _h]
    if has_dst:
        score = _AD[_i, _h] + score
    over = _A[_i, _j]
    if has_edge:
        score, over = score + _AE[_i, _j, _h], _AE[_i, _j, _h]
    alpha = softmax(_j, leaky_relu(score, slope), over=over)
    if dropout > 0:
        alpha = alpha * keep("seed", (_i, _j, _h), dropout)
    out = sum_(_j, alpha * _X[_j, _h, _c])
    return compute((_i, _h, _c), out + _B[_h, _c] if bias else out)


@functools.lru_cache(maxsize=None)
def extreme_statement(op: str, weighted: bool) -> Statement:
    """``max_j A_ij Z_jk`` (``min_j``; ``pattern(A)`` when unweighted)."""
    red = max_ if op == "max" else min_
    return compute((_i, _k), red(_j, (_A[_i, _j] if weighted else pattern(_A[_i, _j])) * _Z[_j, _k]))


def _run(stmt, ops):
    return evaluate(stmt, ops)


def _call(stmt: Statement, ops: dict):
    return autodiff.evaluate(stmt, ops, _run) if autodiff.needs_grad(ops) else _run(stmt, ops)


def attention(adj: SparseTensor, a_src: torch.Tensor, a_dst: torch.Tensor | None, x: torch.Tensor,
              slope: float = 0.2, edge_logits: torch.Tensor | None = None,
              bias: torch.Tensor | None = None, dropout: float = 0.0, seed=None) -> torch.Tensor:
    """``out [N_dst, H, C]``: attention of targets (rows of ``adj`` [N_dst, N_src]) over their
    sources; ``a_src [N_src, H]``, ``a_dst [N_dst, H]`` or None, ``x [N_src, H, C]``,
    ``edge_logits [nnz, H]`` in ``adj``'s storage order or None, ``bias [H, C]`` (or [H*C]) or None.
    ``adj``'s values are not read (its pattern is the neighbourhood; a repeated edge is one more
    softmax term). A target without sources gets ``bias`` (0 without). Differentiable w.r.t. every
    tensor argument; double backward is refused.

    ``dropout`` p > 0 zeroes each weight ``alpha_ijh`` with probability p and scales the rest by
    1/(1-p), the mask a hash of (``seed``, i, j, h) recomputed in every kernel (no E×H tensor); a
    repeated edge's copies share their mask. ``seed``: an int (or one-element int64 tensor); None
    draws one from torch's default generator (``torch.manual_seed`` reproduces a run)."""
    _check_adj(adj, "attention")
    if x.dim() != 3:
        raise UserError(f"attention: x must be [N_src, H, C] (got shape {tuple(x.shape)})")
    n_dst, n_src = adj.shape
    _, heads, ch = x.shape
    _check(a_src, (n_src, heads), "a_src")
    ops = {"as_": a_src.contiguous(), "X": x.contiguous()}
    if a_dst is not None:
        ops["ad"] = _check(a_dst, (n_dst, heads), "a_dst").contiguous()
    if edge_logits is not None:
        ops["ae"] = _edge_tensor(adj, _check(edge_logits, (adj.nnz, heads), "edge_logits"))
    else:
        ops["A"] = adj.with_values(None) if adj.values is not None else adj
    if bias is not None:
        if bias.numel() != heads * ch:
            raise UserError(f"attention: bias must hold H*C = {heads * ch} values (got {bias.numel()})")
        ops["b"] = bias.reshape(heads, ch).contiguous()
    _same_dtype(ops, "attention")
    p = _dropout(dropout)
    if p > 0:
        ops["seed"] = draw_seed() if seed is None else _seed(seed)
    stmt = attention_statement(a_dst is not None, edge_logits is not None, bias is not None, float(slope), p)
    return _call(stmt, ops)


def draw_seed() -> torch.Tensor:
    """A 64-bit seed from torch's default generator, as the one-element int64 tensor kernels read."""
    return torch.randint(-2 ** 63, 2 ** 63 - 1, (), dtype=torch.int64)


def _seed(seed) -> torch.Tensor:
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64 or seed.numel() != 1:
            raise UserError(f"attention: seed must be an int or a one-element int64 tensor (got {seed!r:.60})")
        return seed.detach().reshape(())
    if isinstance(seed, bool) or not isinstance(seed, int) or not -2 ** 63 <= seed < 2 ** 64:
        raise UserError(f"attention: seed must be an int in [-2^63, 2^64) (got {seed!r:.60})")
    return torch.tensor(seed - 2 ** 64 if seed >= 2 ** 63 else seed, dtype=torch.int64)


def _dropout(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise UserError(f"attention: dropout must be a probability in [0, 1] (got {p!r})")
    return float(p)


def extreme(adj: SparseTensor, z: torch.Tensor, op: str = "max") -> torch.Tensor:
    """``out [N_dst, K]``: per row of ``adj`` the max (``op="max"``) or min of ``A_ij z_jk`` over
    its entries (``z_jk`` when ``adj`` has no values); 0 for a row without entries (PyG's value).
    Differentiable w.r.t. ``z`` and ``adj``'s values."""
    _check_adj(adj, "extreme")
    if op not in ("max", "min"):
        raise UserError(f"extreme: op must be 'max' or 'min' (got {op!r})")
    if z.dim() != 2 or z.shape[0] != adj.shape[1]:
        raise UserError(f"extreme: z must be [{adj.shape[1]}, K] for adj {tuple(adj.shape)} "
                        f"(got {tuple(z.shape)})")
    ops = {"A": adj, "Z": z.contiguous()}
    _same_dtype(ops, "extreme")
    return _call(extreme_statement(op, adj.values is not None), ops)


def _check_adj(adj, what: str) -> None:
    if not isinstance(adj, SparseTensor) or adj.ndim != 2:
        raise UserError(f"{what}: adj must be a 2-d sgnn.SparseTensor (got {type(adj).__name__})")
    if adj.values is not None and not adj.values.dtype.is_floating_point:
        raise UserError(f"{what}: adj's values must be floating point (got {adj.values.dtype})")


def _check(t, shape: tuple, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise UserError(f"attention: {name} must have shape {shape} (got {got})")
    return t


def _same_dtype(ops: dict, what: str) -> None:
    dts = {n: (t.values if isinstance(t, SparseTensor) else t).dtype for n, t in ops.items()
           if not isinstance(t, SparseTensor) or t.values is not None}
    if len(set(dts.values())) > 1:
        raise UserError(f"{what}: operands must share one dtype (got {dts})")


def _edge_tensor(adj: SparseTensor, logits: torch.Tensor) -> SparseTensor:
    """Edge logits as a 3-d sparse tensor [N_dst, N_src, H] over ``adj``'s pattern (CSR order)."""
    fmt = Format("dud") if "u" in adj.format.codes else Format("dsd")
    if adj.format.codes not in ("ds", "du") or adj.format.order != (0, 1):
        raise UserError(f"attention: edge_logits need adj in CSR order (got {adj.format.name})")
    return SparseTensor(adj.shape + (logits.shape[1],), fmt, list(adj.pos) + [None], list(adj.crd) + [None],
                        logits.contiguous().reshape(-1), check=False)
