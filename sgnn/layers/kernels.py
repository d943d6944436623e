"""The message-passing expressions of the layers, in index notation (one place, one kernel each).

Index names: ``i`` target node, ``j`` source node, ``k`` feature, ``h`` head, ``c`` channel.
Each function returns a ``Statement`` for one combination of layer options; ``run`` evaluates
it with a short memo key so a warm call does not hash the expression tree.
"""
from __future__ import annotations

import functools

from ..engine.expr import (Statement, compute, indices, leaky_relu, max_, min_, pattern, softmax, sum_,
                           tensors)
from ..engine.explain import record
from ..engine.runtime import evaluate
from .activation import Act

i, j, k, h, c = indices("i j k h c")
A, d, e, Z, R, b, r, Y = tensors("A d e Z R b r Y")
ad, as_, ae, X = tensors("ad as_ ae X")


@functools.lru_cache(maxsize=None)
def gcn(normalize: bool, self_loops: bool, bias: bool, act: Act | None = None, scaled: bool = False) -> Statement:
    """``act(l_i * sum_j A_ij d_j Z_jk  +  e_i Z_ik  +  b_k)`` with ``d = deg^-1/2``, ``l = d`` (divided
    by the message count for a mean) and ``e`` the weight of an added self loop times ``d_i^2`` (over
    the count for a mean): no value array for the normalised adjacency."""
    agg = sum_(j, A[i, j] * d[j] * Z[j, k]) if normalize else sum_(j, A[i, j] * Z[j, k])
    out = r[i] * agg if normalize or scaled else agg
    if self_loops:  # Y: Z's target rows (Z itself, or its local rows on a partitioned graph)
        out = out + e[i] * Y[i, k]
    if bias:
        out = out + b[k]
    return compute((i, k), _act(act, out))


@functools.lru_cache(maxsize=None)
def extreme(op: str, weighted: bool, bias: bool) -> Statement:
    """``max_j A_ij Z_jk`` or ``min_j`` (``pattern(A)`` when unweighted) ``+ b_k``: 0 for no neighbours."""
    red = max_ if op == "max" else min_
    msg = (A[i, j] if weighted else pattern(A[i, j])) * Z[j, k]
    out = red(j, msg)
    return compute((i, k), out + b[k] if bias else out)


@functools.lru_cache(maxsize=None)
def sage(aggr: str, scale: bool, root: bool, bias: bool, act: Act | None = None) -> Statement:
    """``act(r_i * sum_j A_ij Z_jk (+ R_ik) (+ b_k))`` (mean: r = 1/deg)."""
    out = sum_(j, A[i, j] * Z[j, k])
    if scale:
        out = r[i] * out
    if root:
        out = out + R[i, k]
    if bias:
        out = out + b[k]
    return compute((i, k), _act(act, out))


@functools.lru_cache(maxsize=None)
def gat(has_dst: bool, has_edge: bool, bias: bool, slope: float, act: Act | None = None) -> Statement:
    """``sum_j softmax_j(leaky_relu(ad_ih + as_jh (+ ae_ijh))) X_jhc (+ b_hc)``: logits, softmax and
    aggregation in one loop nest over each target's edges; no per-edge tensor is stored."""
    score = as_[j, h]
    if has_dst:
        score = ad[i, h] + score
    if has_edge:
        score = score + ae[i, j, h]
        over = ae[i, j, h]
    else:
        over = A[i, j]
    out = sum_(j, softmax(j, leaky_relu(score, slope), over=over) * X[j, h, c])
    if bias:
        out = out + b[h, c]
    return compute((i, h, c), _act(act, out))


def _act(act: Act | None, out):
    return out if act is None else act.expr(out)


def run(stmt: Statement, key, **tensors):
    """Evaluate a layer statement; ``key`` (hashable, cheap) identifies it in the plan memo."""
    record(stmt, tensors, key)
    return evaluate(stmt, tensors, memo_key=key)
