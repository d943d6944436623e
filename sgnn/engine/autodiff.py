"""Autograd for compiled statements: the backward of ``evaluate`` runs the derived statements.

``evaluate(stmt, ops)`` records one ``torch.autograd`` node when a dense operand, or a sparse
operand's values, requires a gradient. Its backward evaluates ``derive.derivatives(stmt, ...)``
for the operands that need one, through the same pipeline (schedule, lower, codegen, compiled
cache): ``Aᵀ·G`` for SpMM, an SDDMM for sparse values, the chain rule for products, sums and
activations, max/min and attention rules; intermediate statements (row maxima, tie counts,
softmax normalisers) are evaluated once for all operands. The forward output is kept (activation
slopes, the maximum, attention's ``beta``); nothing else is stored. Double backward is refused
(``once_differentiable``); index arrays never carry gradients. A sparse operand whose values are
unchanged is handed to the pipeline as itself, so its cached conversions (the CSC of ``Aᵀ·G``) and
partitions serve every step. A statement that reads a 3-d sparse
operand by column (attention's edge logits in a transposed gradient) gets a column-ordered twin
of it (``_with_layouts``), since the scheduler converts matrices only. ``explain_backward``
shows every backward statement with its schedule and code.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..errors import NotSupported, UserError
from .derive import GRAD, OUT, Backward, derivatives
from .api import explain as _explain
from .expr import Statement
from .formats import CSC, Format
from .tensor import SparseTensor

_derived: dict = {}  # (statement, ((operand, sparse), ...)) -> Backward


def needs_grad(ops: dict) -> bool:
    """True when autograd records and some operand (or sparse operand's values) requires grad."""
    if not torch.is_grad_enabled():
        return False
    for t in ops.values():
        v = t.values if isinstance(t, SparseTensor) else t
        if isinstance(v, torch.Tensor) and v.requires_grad:
            return True
    return False


def evaluate(stmt: Statement, ops: dict, run):
    """``run(stmt, ops)`` as a differentiable op; ``run`` is the engine's plain evaluate."""
    names = tuple(ops)
    structs = tuple(t if isinstance(t, SparseTensor) else None for t in ops.values())
    flat = [(t.values if t.values is not None else _NONE) if isinstance(t, SparseTensor) else t
            for t in ops.values()]
    for n, t in zip(names, flat):
        if not isinstance(t, torch.Tensor):
            raise UserError(f"evaluate: operand {n!r} is not a tensor")
    holder: list = []  # the output's pattern when the statement is sampled (set by forward)
    out = _Evaluate.apply(stmt, names, structs, (run, holder), *flat)
    return holder[0].with_values(out) if holder and holder[0] is not None else out


_NONE = torch.empty(0)  # stands for a pattern-only operand's missing values


def _rebuild(names, structs, flat) -> dict:
    """The operands from their (detached or saved) tensors. A sparse operand whose values are still
    its own is passed as itself, so its cached conversions and partitions (the CSC of ``Aᵀ·G``)
    serve every call instead of being rebuilt on a fresh copy."""
    ops = {}
    for n, st, t in zip(names, structs, flat):
        ops[n] = t if st is None else (st if st.values is None or _same(st.values, t) else st.with_values(t))
    return ops


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.dtype == b.dtype and a.shape == b.shape and \
        a.stride() == b.stride()


class _Evaluate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, stmt, names, structs, run_holder, *flat):
        run, holder = run_holder
        ops = _rebuild(names, structs, [t.detach() for t in flat])
        out = run(stmt, ops)
        sparse_out = isinstance(out, SparseTensor)
        holder.append(out.with_values(None) if sparse_out else None)
        value = out.values if sparse_out else out
        ctx.stmt, ctx.names, ctx.structs, ctx.run = stmt, names, structs, run
        ctx.pattern = holder[0]
        ctx.save_for_backward(*flat, value)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        *flat, value = ctx.saved_tensors
        ops = _rebuild(ctx.names, ctx.structs, flat)
        grad = grad.contiguous()
        ops[GRAD] = ctx.pattern.with_values(grad) if ctx.pattern is not None else grad
        ops[OUT] = ctx.pattern.with_values(value) if ctx.pattern is not None else value
        targets = {name: st is not None for k, (name, st) in enumerate(zip(ctx.names, ctx.structs))
                   if ctx.needs_input_grad[4 + k]}
        got = backward_of(ctx.stmt, targets).evaluate(_with_layouts(ctx.run), ops)
        grads = []
        for name in ctx.names:
            g = got.get(name)
            grads.append(g.values if isinstance(g, SparseTensor) else g)
        return (None, None, None, None, *grads)


def backward_of(stmt: Statement, targets: dict) -> Backward:
    """The derived statements for ``targets`` (``{operand: sparse}``), memoised (statements are
    immutable): intermediate statements shared by the targets, then one statement per target."""
    key = (stmt, tuple(targets.items()))
    b = _derived.get(key)
    if b is None:
        if len(_derived) > 1024:
            _derived.clear()
        b = _derived[key] = derivatives(stmt, targets)
    return b


def explain_backward(stmt: Statement, ops: dict, run, wrt=None, grad=None) -> list:
    """``[(name, statement, Explanation)]`` for every statement of ``stmt``'s backward on one call's
    operands, in evaluation order (intermediates first): what ``sgnn.explain`` shows for each.
    ``wrt``: the operands to differentiate (default: every dense one and every valued sparse one);
    ``grad``: the upstream gradient (default: ones)."""
    ops = {n: t.detach() if isinstance(t, torch.Tensor) else t for n, t in ops.items()}
    out = run(stmt, ops)
    names = wrt or [n for n, t in ops.items() if not isinstance(t, SparseTensor) or t.values is not None]
    b = backward_of(stmt, {n: isinstance(ops[n], SparseTensor) for n in names})
    sparse_out = isinstance(out, SparseTensor)
    g = grad if grad is not None else torch.ones_like(out.values if sparse_out else out)
    ops[GRAD] = out.with_values(g) if sparse_out else g
    ops[OUT] = out
    go, shown = _with_layouts(run), []
    for name, st in [*b.pre, *b.stmts.items()]:
        value = go(st, ops)
        used = _twins(st, ops) if _transposed.get(st) else ops
        shown.append((name, st, _explain(st, **{n: used[n] for n in st.inputs})))
        ops[name] = value
    return shown


# ---------------------------------------------------------------- column-ordered twins
_transposed: dict = {}  # derived statement -> True when it reads its 3-d sparse operands by column


def _with_layouts(run):
    """``run`` that serves a statement iterating a 3-d sparse operand (attention's per-edge logits
    ``ae[i,j,h]``) by column from a column-ordered twin of it: the scheduler converts matrices only."""
    def go(st: Statement, ops: dict):
        if _transposed.get(st):
            return run(st, _twins(st, ops))
        try:
            return run(st, ops)
        except NotSupported as e:
            if "only matrices can be converted" not in str(e) or st in _transposed:
                raise
        if len(_transposed) > 1024:
            _transposed.clear()
        _transposed[st] = True
        return run(st, _twins(st, ops))
    return go


def _twins(st: Statement, ops: dict) -> dict:
    out = dict(ops)
    for name in st.inputs:
        t = ops.get(name)
        if isinstance(t, SparseTensor) and t.ndim == 3 and t.format.order == (0, 1, 2):
            out[name] = t.derived("column-ordered twin", lambda t=t: _column_twin(t))
    return out


def _column_twin(t: SparseTensor) -> SparseTensor:
    """``t`` [N, M, H] (levels i, j, then dense h) with its levels in (j, i, h) order: the matrix's
    CSC over entry numbers gives the permutation; the values move with it (one gather)."""
    e = t.pos[1].numel() and int(t.pos[1][-1])
    mat = SparseTensor(t.shape[:2], Format(t.format.codes[:2]), list(t.pos[:2]), list(t.crd[:2]),
                       torch.arange(e, dtype=torch.float64), check=False)
    csc = mat.to(CSC if "u" not in t.format.codes else Format("du", order=(1, 0)))
    perm = csc.values.to(torch.int64)
    vals = None if t.values is None else t.values.view(e, -1).index_select(0, perm).reshape(-1)
    return SparseTensor(t.shape, Format(t.format.codes, order=(1, 0, 2)), list(csc.pos) + [None],
                        list(csc.crd) + [None], vals, check=False)
