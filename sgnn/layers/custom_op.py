"""The convs as one ``torch.library`` custom op each call: what ``torch.compile`` and ``torch.export`` see.

Under compilation a conv call becomes ``sgnn::conv(layer, x, x_dst, mode, edge_index, extra, size,
params)``: one opaque op with a fake (meta) implementation that only computes the output shape, so
fake tensors never reach native code, and an autograd formula. The real implementation is the
layer's eager forward (compiled kernels, caches and all). Its backward recomputes the layer's
differentiable formulation (``ops.spmm`` through sgnn kernels, or the edge-wise torch ops for
attention) on the saved inputs, replaying the forward's RNG state so dropout masks match, and
takes ``torch.autograd.grad`` of it. Eager calls do not go through the op and pay nothing for it.
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
import weakref

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake
from torch.func import functional_call

from ..errors import UserError

_layers: dict[int, weakref.ref] = {}
_ids = itertools.count()
SINGLE, PAIR, PAIR_NO_DST = 0, 1, 2
_RNG_BYTES = torch.get_rng_state().numel()  # the CPU generator's state
_K = torch._C.DispatchKey


def _layer(handle: int):
    layer = _layers.get(handle)
    layer = layer() if layer is not None else None
    if layer is None:
        raise UserError(f"sgnn::conv: layer {handle} no longer exists")
    return layer


def register(layer) -> int:
    """A fresh handle for ``layer`` (taken at construction, copy and unpickling: never while tracing)."""
    h = next(_ids)
    _layers[h] = weakref.ref(layer, lambda _r, h=h: _layers.pop(h, None))
    return h


@contextlib.contextmanager
def _autograd_inside_op():
    """Re-enable autograd dispatch inside a custom op's implementation (the dispatcher excludes it
    there), so the recomputation below records a graph; restored on exit."""
    keys = [k for k in (_K.Autograd, _K.AutogradFunctionality, _K.AutogradOther)
            if torch._C._dispatch_tls_is_dispatch_key_excluded(k)]
    for k in keys:
        torch._C._dispatch_tls_set_dispatch_key_excluded(k, False)
    try:
        yield
    finally:
        for k in keys:
            torch._C._dispatch_tls_set_dispatch_key_excluded(k, True)


def _call(layer, params, x, x_dst, mode, edge_index, extra, size):
    names = [n for n, _ in layer.named_parameters()]
    xin = x if mode == SINGLE else (x, x_dst if mode == PAIR else None)
    kw = {} if extra is None else {layer._extra_name: extra}
    if size:
        kw["size"] = tuple(size)
    return functional_call(layer, dict(zip(names, params)), (xin, edge_index), kw, strict=True)


@torch.library.custom_op("sgnn::conv", mutates_args=())
def conv(handle: int, x: Tensor, x_dst: Tensor | None, mode: int, edge_index: Tensor, extra: Tensor | None,
         size: list[int], params: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(output, the RNG state the call started from: the backward replays it)."""
    layer = _layer(handle)
    rng = torch.get_rng_state()
    with torch.no_grad():
        out = _call(layer, params, x, x_dst, mode, edge_index, extra, size)
    if any(out.data_ptr() == t.data_ptr() for t in (x, x_dst) if t is not None):
        out = out.clone()
    return out, rng


@conv.register_fake
def _(handle, x, x_dst, mode, edge_index, extra, size, params):
    layer = _layer(handle)
    n_dst = size[1] if size else (x_dst.shape[-2] if mode == PAIR else x.shape[-2])
    return x.new_empty(layer._out_shape(x, n_dst)), x.new_empty(_RNG_BYTES, dtype=torch.uint8)


@torch.library.custom_op("sgnn::conv_backward", mutates_args=())
def conv_backward(handle: int, grad: Tensor, x: Tensor, x_dst: Tensor | None, mode: int, edge_index: Tensor,
                  extra: Tensor | None, size: list[int], params: list[Tensor], rng: Tensor,
                  needs: list[bool]) -> list[Tensor]:
    """Gradients of the inputs flagged in ``needs`` (x, x_dst, extra, *params), by recomputing the
    layer's differentiable formulation from the forward's RNG state."""
    layer = _layer(handle)
    leaves = [x, x_dst, extra, *params]
    with _autograd_inside_op(), torch.enable_grad(), torch.random.fork_rng():
        torch.set_rng_state(rng)
        live = [t.detach().requires_grad_(True) if f else (None if t is None else t.detach())
                for t, f in zip(leaves, needs)]
        out = _call(layer, live[3:], live[0], live[1], mode, edge_index, live[2], size)
        wrt = [t for t, f in zip(live, needs) if f]
        got = torch.autograd.grad(out, wrt, grad, allow_unused=True) if wrt else ()
    return [torch.zeros_like(t) if g is None else g for g, t in zip(got, wrt)]


@conv_backward.register_fake
def _(handle, grad, x, x_dst, mode, edge_index, extra, size, params, rng, needs):
    return [torch.empty_like(t) for t, f in zip([x, x_dst, extra, *params], needs) if f]


def _setup(ctx, inputs, output):
    handle, x, x_dst, mode, edge_index, extra, size, params = inputs
    ctx.handle, ctx.mode, ctx.size, ctx.n_params = handle, mode, size, len(params)
    ctx.save_for_backward(x, x_dst, edge_index, extra, output[1], *params)


def _backward(ctx, grad, _grad_rng):
    x, x_dst, edge_index, extra, rng, *params = ctx.saved_tensors
    want = ctx.needs_input_grad
    floating = [t is not None and t.is_floating_point() for t in (x, x_dst, extra)]
    want_p = list(want[7]) if isinstance(want[7], (list, tuple)) else [want[7]] * len(params)
    needs = [bool(want[1] and floating[0]), bool(want[2] and floating[1]), bool(want[5] and floating[2])] \
        + [bool(w) for w in want_p]
    got = iter(conv_backward(ctx.handle, grad.contiguous(), x, x_dst, ctx.mode, edge_index, extra, ctx.size,
                             params, rng, needs))
    gx, gxd, gextra, *gparams = [next(got) if f else None for f in needs]
    return None, gx, gxd, None, None, gextra, [None] * len(ctx.size), gparams


conv.register_autograd(_backward, setup_context=_setup)


def _plain(t) -> bool:
    """A dense tensor the op can carry: a plain one, or the fake/functional stand-in tracing makes."""
    return isinstance(t, Tensor) and t.layout == torch.strided and (type(t) is Tensor or is_fake(t))


def compiled_call(layer, args: tuple, kwargs: dict):
    """``layer(*args, **kwargs)`` as one ``sgnn::conv`` op, or None when the call has inputs the op
    cannot carry (sparse adjacencies, graphs, attention weights): the eager forward runs then."""
    try:
        bound = inspect.signature(layer.forward).bind(*args, **kwargs)
    except TypeError:
        return None
    a = dict(bound.arguments)
    x, edge_index = a.pop("x"), a.pop("edge_index")
    extra = a.pop(layer._extra_name, None) if layer._extra_name else None
    size = a.pop("size", None)
    if a.pop("return_attention_weights", None) or any(v is not None for v in a.values()):
        return None
    if not _plain(edge_index) or (extra is not None and not _plain(extra)):
        return None
    if isinstance(x, (tuple, list)):
        x, x_dst = x
        mode = PAIR if x_dst is not None else PAIR_NO_DST
    else:
        x_dst, mode = None, SINGLE
    if not _plain(x) or (x_dst is not None and not _plain(x_dst)):
        return None
    params = list(layer.parameters())
    if any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in params):
        return None
    return conv(layer._sgnn_handle, x, x_dst, mode, edge_index, extra, [int(s) for s in size] if size else [],
                params)[0]
