"""The layer planner: a layer's whole statement in, a plan of torch GEMMs and sgnn kernels out.

A layer (``sgnn.layers``) writes its formula as one ``Statement``, feature transform, bias and
activation included, and hands it over with its operands, e.g. GCN::

    act(r_i * sum_j A_ij d_j (XW)_jk + e_i (XW)_ik + b_k),   (XW)_nk = sum_f X_nf W_kf

A **feature transform** is ``sum_f P[n, f] * W[..., f]``: ``W`` dense in torch ``Linear`` layout
(contracted index last; a view for several output indices), ``P`` a feature operand ``X[n, f]``
(this process's nodes: what derives from it is extended to every source column by
``graph.sources``) or an aggregation. Other operands are given as the kernels read them. Every
decision is a ``Decision`` with its reason; plans are memoised on the statement itself plus the
operands' signatures. Plan shapes:

- ``kernel``: GEMMs first (their products become kernel operands), then one kernel writing the
  layer's output with bias and activation in its epilogue (``Â(XW)``);
- ``gemm``: a kernel aggregates raw features, then a GEMM writes the output with the bias
  (``addmm``), other transforms join with ``addmm_``, the activation runs in place (``(ÂX)W``,
  row-blocked above ``BLOCK_MIN_BYTES``: no N×F intermediate);
- ``torch``: one kernel, then torch ops for what a kernel cannot end with (a mean over heads).

Only inference runs here: the layers' differentiable formulations use torch and ``ops.spmm``.
Precision (mixed bf16 for float32 layers, float16 GEMMs in float32) is one decision: ``precision.decide``.
"""
from __future__ import annotations

import math
import types
from dataclasses import dataclass, field

import torch

from . import memory, operands, precision as prec
from .operands import SPARSE_FEATURE_DENSITY, dense_features, row_slice, sparse_features
from .caches import LRU
from .explain import active, note, record, record_layer
from .expr import (Access, BinOp, Call, Const, Expr, Reduce, Softmax, Statement, accesses, children, compute,
                   indices, sum_, tensors)
from .runtime import evaluate, result_spec
from .schedule import Decision
from .tensor import SparseTensor
from ..config import precision
from ..errors import InternalError

BLOCK_MIN_BYTES = 256 << 20  # (ÂX)W aggregating more than this runs in row blocks ...
BLOCK_BYTES = 32 << 20  # ... of this many bytes of aggregated features
ACTS = ("relu", "elu", "leaky_relu", "sigmoid", "tanh")
_plans = LRU(256)
_canon = LRU(1024)  # structure -> the first equal Statement seen (its id is the fast key)
_by_id = LRU(1024)  # id(stmt) -> (stmt, canonical)
STATS = {"built": 0}  # plans built (a warm call builds none)
_n, _f, _k = indices("n f k")
_X, _Wt = tensors("X Wt")
SPARSE_XW = compute((_n, _k), sum_(_f, _X[_n, _f] * _Wt[_f, _k]))  # X·W with X sparse: a generated loop


class _Key:
    """A Statement's memo key: hashed and compared by identity (C-level), it holds the statement."""
    __slots__ = ("stmt",)

    def __init__(self, stmt):
        self.stmt = stmt


def canonical(stmt: Statement) -> _Key:
    """The key of ``stmt``: equal statements share one (hashed once per new object)."""
    hit = _by_id.recent.get(id(stmt)) or _by_id.get(id(stmt))
    if hit is not None and hit[0] is stmt:
        return hit[1]
    key = _canon.get(stmt) or _canon.put(stmt, _Key(stmt))
    _by_id.put(id(stmt), (stmt, key))
    return key


_SPARSE_KEY = canonical(SPARSE_XW)


# ---------------------------------------------------------------- reading a statement
@dataclass(frozen=True)
class Transform:
    """``sum_f P[node, f] * W[out..., f]`` found in a statement."""

    node_expr: Reduce
    x: Expr  # P: an Access X[node, f] (a feature operand) or an aggregation
    w: str
    f: str
    node: str
    out: tuple


def as_transform(e, ops: dict) -> Transform | None:
    if not (isinstance(e, Reduce) and e.op == "sum" and len(e.idx) == 1 and isinstance(e.body, BinOp)
            and e.body.op == "*" and isinstance(e.body.b, Access)):
        return None
    (f,), p, w = e.idx, e.body.a, e.body.b
    if not isinstance(ops.get(w.name), torch.Tensor) or w.idx[-1] != f or f in w.idx[:-1] or len(p.free - {f}) != 1:
        return None
    if isinstance(p, Access) and (len(p.idx) != 2 or p.idx[1] != f):
        return None
    return Transform(e, p, w.name, f, next(iter(p.free - {f})), w.idx[:-1])


def transforms(e, ops: dict) -> list[Transform]:
    t = as_transform(e, ops)
    return [t] if t is not None else [x for c in children(e) for x in transforms(c, ops)]


def replace(e, f):
    """``e`` with every node ``n`` for which ``f(n)`` is not None replaced by it."""
    r = f(e)
    if r is not None:
        return r
    if isinstance(e, Call):
        return Call(e.fn, tuple(replace(a, f) for a in e.args), e.param)
    if isinstance(e, BinOp):
        return BinOp(e.op, replace(e.a, f), replace(e.b, f))
    if isinstance(e, Reduce):
        return Reduce(e.op, e.idx, replace(e.body, f))
    return Softmax(e.idx, replace(e.body, f), e.over) if isinstance(e, Softmax) else e


def graph_access(e, graph: set) -> Access | None:
    """The first access to a graph operand (a sparse one, not features) in ``e``: (target, source, ...)."""
    return next((a for a in accesses(e) if a.name in graph), None)


def terms_of(e) -> list:
    return terms_of(e.a) + terms_of(e.b) if isinstance(e, BinOp) and e.op == "+" else [e]


def linear_in(e, t: Transform) -> bool:
    """``e`` reaches ``t`` through products and sums only (so ``(ÂX)W = Â(XW)``)."""
    if e == t.node_expr:
        return True
    if isinstance(e, Reduce):
        return e.op == "sum" and linear_in(e.body, t)
    if isinstance(e, BinOp) and e.op == "*":
        return linear_in(e.a, t) != linear_in(e.b, t)
    return False


def unwrap(e, graph: set) -> tuple:
    """(core, wrapped): the aggregation under dense wrappers (a constant factor, a sum over heads)."""
    if isinstance(e, BinOp) and e.op == "*" and isinstance(e.a, Const):
        return unwrap(e.b, graph)[0], True
    a = graph_access(e, graph)
    if isinstance(e, Reduce) and e.op == "sum" and a is not None and not set(e.idx) & set(a.idx[:2]):
        return unwrap(e.body, graph)[0], True
    return e, False


def role(r, t: Transform, ops: dict, tgt: str) -> str | None:
    """How a term beside the aggregation joins ``(ÂX)W``: a bias, another transform, or a term
    linear in the same X·W at the target (GCN's self loop); None: it cannot."""
    if isinstance(r, Access) and tgt not in r.idx:
        return "bias"
    top = as_transform(r, ops)
    if top is not None and isinstance(top.x, Access) and top.node == tgt and (top.x, top.w) != (t.x, t.w):
        return "extra"
    found = transforms(r, ops)
    if len(found) == 1 and found[0].node == tgt and found[0].w == t.w and \
            found[0].x.name == t.x.name and linear_in(r, found[0]):
        return "pre"
    return None


# ---------------------------------------------------------------- the plan
@dataclass
class LayerPlan:
    """What one layer call runs, decided once per statement and operand signatures."""

    stmt: Statement
    shape: str  # "kernel" | "gemm" | "torch"
    decisions: list
    kernel: Statement
    key: _Key = None
    tgt: str = "i"
    src: str = "j"
    adj: str = "A"
    products: list = field(default_factory=list)  # (X, W, name at source or None, name at target or None)
    features: list = field(default_factory=list)  # gemm: (operand, name at target or None) read raw
    w: str | None = None  # gemm: the weight of the last GEMM, its bias, further transforms, row step
    bias: str | None = None
    extra: list = field(default_factory=list)
    step: int = 0
    act: Call | None = None
    post: Expr | None = None  # torch: what follows the kernel (the kernel's result is "_core")
    narrow: torch.dtype | None = None  # mixed mode: gathered operands in this dtype, float32 kernel output
    casts: dict = field(default_factory=dict)  # (X, W) -> (GEMM dtype, product dtype); absent: W's dtype
    upcast: bool = False  # a float16 layer's GEMMs in float32, rounded once

    def __post_init__(self):
        self.key = canonical(self.kernel)

    def __call__(self, ops: dict, graph):
        if active():
            record_layer(self.stmt, self)
            for d in self.decisions:
                note(d)
        env, n_dst = dict(ops), ops[self.adj].shape[0]
        for x, w, at_src, at_tgt in self.products:
            z = product(ops[x], ops[w], graph.source_rows if at_src else None, self.casts.get((x, w)))
            full = graph.sources_async(z) if at_src else z  # halo rows: valid once row_ranges passed the interior
            env.update({at_src: full} if at_src else {})
            env.update({at_tgt: full[:n_dst] if at_src else full} if at_tgt else {})
        if self.shape == "gemm":
            return self._gemm(ops, env, graph, n_dst)
        ranges = graph.row_ranges(n_dst)  # partitioned: rows reading no halo row first, while it is in flight
        if ranges is None:
            out = self._kernel(env)
        else:  # each range's kernel writes its rows of one output (ranges: lazy, see Graph.row_ranges)
            out = memory.empty(*result_spec(self.kernel, {n: env[n] for n in self.kernel.inputs}, self.key, self._out_dtype()))
            for r0, r1 in ranges:
                self._kernel(self._rows(env, r0, r1), out[r0:r1])
        if self.shape == "torch":
            env["_core"] = out
            out, idx = torch_eval(self.post, env)
            out = out.permute([idx.index(v) for v in self.stmt.idx]).contiguous()
        return out if self.shape == "kernel" or self.act is None else act_(self.act, out)

    def _out_dtype(self):
        return torch.float32 if self.narrow or (self.upcast and self.shape == "gemm") else None  # mixed

    def _kernel(self, env: dict, out=None):
        env, out_dtype = {n: env[n] for n in self.kernel.inputs}, self._out_dtype()
        if active():
            record(self.kernel, env, self.key, out_dtype)
        return evaluate(self.kernel, env, memo_key=self.key, out_dtype=out_dtype, out=out)

    def _gemm(self, ops: dict, env: dict, graph, n: int):
        """``act(agg W^T + b + Σ X' W'^T)``, ``agg`` by the kernel, one row block at a time."""
        w, full = ops[self.w].detach(), {}
        dtype, up = w.dtype, (torch.float32, ops[self.w].dtype) if self.upcast else None
        for name, at_tgt in self.features:
            full[name] = graph.sources_async(dense_features(ops[name], self.narrow or dtype))
            if at_tgt:
                full[at_tgt] = full[name][:n]
        env.update(full)
        b = None if self.bias is None else ops[self.bias].detach()
        inplace, after = [], []
        for t in self.extra:
            x = ops[t.x.name]
            fits = isinstance(x, torch.Tensor) and x.layout == torch.strided and x.dtype == dtype
            (inplace if fits and sparse_features(x) is None else after).append((x, ops[t.w].detach()))
        out = graph.source_rows((n, w.shape[0]), dtype)  # partitioned: room for the halo of the next layer's input
        step, buf = self.step or max(n, 1), None
        for lo, hi in graph.row_ranges(n) or ((0, n),):
            for r0 in range(lo, hi, step):
                r1 = min(hi, r0 + step)  # one block buffer for all blocks: no fresh pages per block
                agg = self._kernel(env if (r0, r1) == (0, n) else self._rows(env, r0, r1),
                                   None if buf is None or r1 - r0 > buf.shape[0] else buf[:r1 - r0])
                buf = agg if buf is None or agg.shape[0] > buf.shape[0] else buf
                prec.gemm_into(out[r0:r1], agg, w, b, [(x[r0:r1], wx) for x, wx in inplace], self.upcast)
        for x, wx in after:
            out = out + product(x, wx, cast=up)
        return out if self.act is None else act_(self.act, out)

    def _rows(self, env: dict, r0: int, r1: int) -> dict:
        """The operands of target rows ``[r0, r1)``: the adjacency's rows, operands indexed by target."""
        part = dict(env)
        for a in accesses(self.kernel.expr):
            if a.name == self.adj:
                part[a.name] = row_slice(env[a.name], r0, r1)
            elif a.idx[0] == self.tgt:
                part[a.name] = env[a.name][r0:r1]
        return part


# ---------------------------------------------------------------- execution helpers
def product(x, w: torch.Tensor, buffer=None, cast: tuple | None = None) -> torch.Tensor:
    """``x @ w.reshape(-1, F).T`` viewed ``[N, *w.shape[:-1]]``: a torch GEMM into a huge-page buffer
    (``buffer(shape, dtype)`` when given), or an sgnn sparse×dense kernel when X is mostly zeros.
    ``cast``: (GEMM dtype, result dtype), X and W (a cached copy) taken to the first; default W's."""
    w2 = w if w.dim() == 2 else w.reshape(-1, w.shape[-1])
    xs = sparse_features(x)
    if xs is None:
        if active():
            note(Decision(f"X·W {tuple(x.shape)} x {tuple(w2.shape[::-1])}: torch GEMM (BLAS), not a generated "
                          f"loop", f"X is not sparse: sampled density >= {SPARSE_FEATURE_DENSITY:g}, or not sampled "
                          f"(small, an inference tensor, or under autograd)"))
        z = prec.cast_product(x, w2, buffer, *(cast or (w2.dtype, w2.dtype)))
    else:
        if active():
            note(Decision(f"X·W: sparse x dense, a generated sgnn loop: X stores {xs.nnz} of "
                          f"{xs.shape[0] * xs.shape[1]} entries", f"density below {SPARSE_FEATURE_DENSITY:g}"))
        if xs.dtype != w2.dtype and xs.values is not None:  # features take the parameters' dtype
            xs = xs.with_values(xs.values.to(w2.dtype))
        ops = {"X": xs, "Wt": operands.transposed(w2)}
        if active():
            record(SPARSE_XW, ops, _SPARSE_KEY)
        z = evaluate(SPARSE_XW, ops, memo_key=_SPARSE_KEY)  # accumulates in float32: cast after
        z = z if cast is None else z.to(cast[1])
    return z.view(z.shape[0], *w.shape[:-1]) if w.dim() > 2 else z


def act_(a: Call, t: torch.Tensor) -> torch.Tensor:
    """The activation ``a`` applied in place to ``t`` (a fresh tensor the plan owns)."""
    fn, p = a.fn, a.param
    if fn in ("elu", "leaky_relu"):
        return getattr(torch.nn.functional, fn + "_")(t, p)
    return getattr(t, fn + "_")()


def torch_eval(e, env: dict) -> tuple:
    """(tensor, its indices) of a dense expression over named tensors, by torch broadcasting."""
    if isinstance(e, Access):
        return env[e.name], e.idx
    if isinstance(e, Const):
        return e.value, ()
    if isinstance(e, Reduce) and e.op == "sum":
        t, idx = torch_eval(e.body, env)
        return t.sum([idx.index(v) for v in e.idx]), tuple(v for v in idx if v not in e.idx)
    if isinstance(e, BinOp) and e.op in ("+", "-", "*", "/"):
        if e.op == "*" and isinstance(e.a, Const) and isinstance(e.b, Reduce) and e.b.op == "sum":
            t, idx = torch_eval(e.b.body, env)  # c * sum over n values, c = 1/n: a mean
            dims = [idx.index(v) for v in e.b.idx]
            if abs(e.a.value * math.prod(t.shape[d] for d in dims) - 1.0) < 1e-12:
                return t.mean(dims), tuple(v for v in idx if v not in e.b.idx)
        (a, ia), (b, ib) = torch_eval(e.a, env), torch_eval(e.b, env)
        order = ia + tuple(v for v in ib if v not in ia)
        a, b = _aligned(a, ia, order), _aligned(b, ib, order)
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[e.op], order
    raise InternalError(f"layer planner: no torch rule for {e}")


def _aligned(t, idx: tuple, order: tuple):
    """``t`` (indexed by ``idx``) permuted and unsqueezed to broadcast over ``order``."""
    if not isinstance(t, torch.Tensor) or idx == order:
        return t
    t = t.permute([idx.index(v) for v in order if v in idx])
    return t.reshape([t.shape[[v for v in order if v in idx].index(v)] if v in idx else 1 for v in order])


# ---------------------------------------------------------------- planning
def build(stmt: Statement, ops: dict) -> LayerPlan:
    """Read the statement, take the decisions, return the plan (memoised by ``run``)."""
    STATS["built"] += 1
    e = stmt.expr  # a layer's activation is its statement's outermost call
    act, body = (e, e.args[0]) if isinstance(e, Call) and e.fn in ACTS and len(e.args) == 1 else (None, e)
    terms = terms_of(body)
    feats = {t.x.name for t in transforms(body, ops) if isinstance(t.x, Access)}
    graph = {n for n, t in ops.items() if isinstance(t, SparseTensor) and n not in feats}
    aggs = [t for t in terms if graph_access(t, graph) is not None]
    if len(aggs) != 1:
        raise InternalError(f"layer planner: expected one term reading the graph in {stmt} (got {len(aggs)})")
    agg, a = aggs[0], graph_access(aggs[0], graph)
    rest = [t for t in terms if t is not agg]
    ctx = Ctx(stmt, act, a.idx[0], a.idx[1], a.name)
    top = as_transform(agg, ops)
    if top is not None and not isinstance(top.x, Access):
        d = Decision("association: (ÂX)W, as written", "the aggregation is not a sum: W does not commute with it")
        feats = [(x.name, None) for x in accesses(top.x) if x.idx[-1] == top.f]
        return _gemm_plan(ctx, top.w, compute((ctx.tgt, top.f), top.x), feats, rest, ops, [d])
    core, wrapped = unwrap(agg, graph)
    inner = [t for t in transforms(agg, ops) if t.node == ctx.src and isinstance(t.x, Access)]
    if not wrapped and len(inner) == 1 and linear_in(agg, inner[0]) and \
            all(role(r, inner[0], ops, ctx.tgt) for r in rest):
        w = ops[inner[0].w]
        f_in, f_out = w.shape[-1], w.numel() // max(w.shape[-1], 1)
        why = f"in={f_in}, out={f_out}: the sparse product moves min(in, out) values per edge"
        if f_in <= f_out:
            return _reassociated(ctx, inner[0], agg, rest, ops, Decision("association: (ÂX)W", why))
        decisions = [Decision("association: Â(XW)", why)]
    else:
        decisions = [Decision("association: Â(XW), as written", "the aggregation is not linear in one X·W "
                              "(a softmax, max or min reads it, or several transforms meet)")]
    if wrapped:
        return _torch_plan(ctx, core, body, ops, decisions)
    return _kernel_plan(ctx, body, ops, decisions)


@dataclass(frozen=True)
class Ctx:
    stmt: Statement
    act: Call | None
    tgt: str
    src: str
    adj: str


def substitute(e, ops: dict, ctx: Ctx) -> tuple:
    """(``e`` with each feature transform X·W read as its product's operand, the products)."""
    nodes: dict = {}
    for t in transforms(e, ops):
        if isinstance(t.x, Access):
            if t.node not in (ctx.src, ctx.tgt):
                raise InternalError(f"layer planner: {t.node_expr} is read at neither {ctx.tgt} nor {ctx.src}")
            nodes.setdefault((t.x.name, t.w), set()).add(t.node)
    names, products = {}, []
    for (x, w), at in nodes.items():
        src = x + w if ctx.src in at else None
        tgt = (x + w + "_t" if src else x + w) if ctx.tgt in at else None
        names[(x, w)] = (src, tgt)
        products.append((x, w, src, tgt))

    def sub(n):
        t = as_transform(n, ops)
        if t is None or not isinstance(t.x, Access):
            return None
        src, tgt = names[(t.x.name, t.w)]
        return Access(src if t.node == ctx.src else tgt, (t.node,) + t.out)
    return replace(e, sub), products


_BUFFERS = Decision("buffers: X·W outputs on huge pages (memory.empty)", "the kernel gathers their rows at random: a "
                    "fresh 4 KiB-paged buffer costs a page fault per page and misses the TLB")


def _kernel_plan(ctx: Ctx, body, ops: dict, decisions: list) -> LayerPlan:
    new, products = substitute(body, ops, ctx)
    decisions += [_BUFFERS] if products else []
    decisions.append(Decision("bias and activation: in the kernel's epilogue", "the kernel writes the layer's output"))
    new = new if ctx.act is None else Call(ctx.act.fn, (new,), ctx.act.param)
    return LayerPlan(ctx.stmt, "kernel", decisions, compute(ctx.stmt.idx, new), tgt=ctx.tgt, src=ctx.src, adj=ctx.adj,
                     products=products, act=ctx.act)


def _torch_plan(ctx: Ctx, core, body, ops: dict, decisions: list) -> LayerPlan:
    kcore, products = substitute(core, ops, ctx)
    free = tuple(dict.fromkeys([ctx.tgt] + [v for a in accesses(kcore) for v in a.idx if v in kcore.free]))
    post, more = substitute(replace(body, lambda n: Access("_core", free) if n == core else None), ops, ctx)
    products += [p for p in more if p not in products]
    decisions += [_BUFFERS] if products else []
    decisions.append(Decision("bias and activation: after the kernel (torch ops, activation in place)",
                              "the kernel's output is reduced further (a mean over heads)"))
    return LayerPlan(ctx.stmt, "torch", decisions, compute(free, kcore), tgt=ctx.tgt, src=ctx.src, adj=ctx.adj,
                     products=products, act=ctx.act, post=post)


def _reassociated(ctx: Ctx, t: Transform, agg, rest: list, ops: dict, decision: Decision) -> LayerPlan:
    """``(ÂX)W``: the terms linear in ``t`` aggregate raw X; the GEMM follows."""
    pre = [agg] + [r for r in rest if role(r, t, ops, ctx.tgt) == "pre"]
    x = t.x.name

    def sub(n):
        u = as_transform(n, ops)
        if u is None or u.w != t.w or u.x.name != x:
            return None
        return Access(x, (ctx.src, t.f)) if u.node == ctx.src else Access(x + "_t", (ctx.tgt, t.f))
    body = replace(pre[0], sub)
    for p in pre[1:]:
        body = body + replace(p, sub)
    kernel = compute((ctx.tgt, t.f), body)
    feats = [(x, x + "_t" if x + "_t" in kernel.inputs else None)]
    return _gemm_plan(ctx, t.w, kernel, feats, [r for r in rest if r not in pre], ops, [decision])


def _gemm_plan(ctx: Ctx, w: str, kernel: Statement, feats: list, rest: list, ops: dict, decisions: list):
    bias = [r.name for r in rest if isinstance(r, Access) and ctx.tgt not in r.idx]
    extra = [as_transform(r, ops) for r in rest if not isinstance(r, Access)]
    if len(bias) > 1 or len(bias) + len(extra) != len(rest) or not all(extra):
        raise InternalError(f"layer planner: cannot add {rest} after the GEMM of {ctx.stmt}")
    wt = ops[w]
    n, f_in, size = ops[ctx.adj].shape[0], wt.shape[-1], wt.element_size()
    mib = n * f_in * size / 2**20
    step = 0
    if n * f_in * size < BLOCK_MIN_BYTES:
        decisions.append(Decision("rows: one pass", f"aggregated features take {mib:.0f} MiB "
                                  f"< {BLOCK_MIN_BYTES >> 20} MiB"))
    else:
        step = max(1024, BLOCK_BYTES // (f_in * size))
        decisions.append(Decision(f"row-blocked (ÂX)W: {-(-n // step)} blocks of {step} rows",
                                  f"no {n}x{f_in} intermediate ({mib:.0f} MiB >= {BLOCK_MIN_BYTES >> 20} MiB)"))
    decisions.append(Decision("bias: in the GEMM (addmm); other transforms: addmm_ (beta = 1); activation: in place",
                              "the GEMM writes the layer's output"))
    return LayerPlan(ctx.stmt, "gemm", decisions, kernel, tgt=ctx.tgt, src=ctx.src, adj=ctx.adj, features=feats,
                     w=w, bias=bias[0] if bias else None, extra=extra, step=step, act=ctx.act)


# ---------------------------------------------------------------- entry point
LOCAL = types.SimpleNamespace(sources=lambda t: t, sources_async=lambda t: t, source_rows=memory.empty,
                              row_ranges=lambda n: None)  # an unpartitioned graph


def _sig(t):
    if isinstance(t, torch.Tensor):  # the plan does not depend on a torch layout (X·W decides at run time)
        return (t.dtype, t.shape)
    if isinstance(t, SparseTensor):
        return t.derived("layerplan_sig", lambda: (t.format.codes, t.shape, t.index_dtype,
                                                   None if t.values is None else t.values.dtype))
    raise InternalError(f"layer planner: operand of type {type(t).__name__}")


def run(stmt: Statement, ops: dict, graph=None):
    """Plan (once per statement and operand signatures) and run a layer statement on ``ops``;
    ``graph`` gives ``sources(t)``, ``sources_async(t)``, ``row_ranges(n)`` and ``source_rows(shape, dtype)``."""
    mode = precision()
    key = (canonical(stmt), *ops, *[_sig(t) for t in ops.values()], mode)
    plan = _plans.recent.get(key) or _plans.get(key)
    if plan is None:
        plan = _plans.get_or_build(key, lambda: prec.decide(build(stmt, ops), ops, mode))
    return plan(ops, LOCAL if graph is None else graph)


def clear() -> None:
    """Forget every plan (after changing a threshold)."""
    _plans.clear()
