"""The one gate between torch tensors and native code: every pointer handed to C++ comes from here.

``plain(t, what, where)`` turns a user tensor into a plain ``torch.Tensor`` with real CPU memory: a
subclass with real storage (``nn.Parameter``, a simple subclass) becomes a zero-copy plain view; a
wrapper subclass that keeps its data in one inner tensor (PyG's ``EdgeIndex`` / ``Index``) is
unwrapped to it. Meta tensors, ``FakeTensor``s, functional tensors and any tensor without readable
storage raise :class:`~sgnn.errors.UserError` naming the problem.

``pointer(t, dtype, what)`` is the last check before a ``data_ptr`` is passed through ``ctypes``:
plain, CPU, strided, contiguous, of the expected dtype, with a nonzero address when not empty.
(On the kernel-call hot path a dense operand's type, device, layout and contiguity were vetted by
``runtime.as_operand``; the call checks its address and dtype and asks ``pointer`` otherwise.)
``real_mode(where)`` refuses to run under FakeTensorMode / functionalisation / proxy tracing, where
every tensor torch allocates for the call (outputs, conversions) would have no data.
"""
from __future__ import annotations

import warnings

import torch

from ..errors import UserError


def _kind(t: torch.Tensor) -> str | None:
    """Why ``t`` has no memory native code can read (None: it may have)."""
    if t.device.type == "meta":
        return "a meta tensor (it has a shape but no data)"
    name = type(t).__name__
    if name == "FakeTensor":
        return "a FakeTensor (created under torch._subclasses.fake_tensor.FakeTensorMode: no data)"
    if torch._is_functional_tensor(t):
        return "a functional tensor (torch.func.functionalize / torch.compile tracing: no data)"
    return None


def _address(t: torch.Tensor) -> int:
    """``t.data_ptr()``, 0 when the tensor has no storage (wrapper subclasses, lazy tensors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return t.data_ptr()
        except (RuntimeError, NotImplementedError):
            return 0


def _inner(t: torch.Tensor) -> torch.Tensor | None:
    """The single inner tensor of a wrapper subclass holding the same data (``__tensor_flatten__``)."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is None:
        return None
    try:
        names, _ = flatten()
    except Exception:  # noqa: BLE001 - a foreign subclass: treat as not unwrappable
        return None
    inner = [getattr(t, n, None) for n in names]
    inner = [x for x in inner if isinstance(x, torch.Tensor) and x.shape == t.shape and x.dtype == t.dtype]
    return inner[0] if len(inner) == 1 else None


def plain(t: torch.Tensor, what: str, where: str, depth: int = 0) -> torch.Tensor:
    """``t`` as a plain ``torch.Tensor`` with real CPU storage (a view, never a copy)."""
    problem = _kind(t)
    if problem is None and t.device.type != "cpu":
        raise UserError(f"{where}: expected {what} on the CPU (got device {t.device}); call .cpu() first")
    if problem is None and type(t) is not torch.Tensor:
        with torch._C.DisableTorchFunctionSubclass():
            view = torch.Tensor.as_subclass(t, torch.Tensor)
        if type(view) is torch.Tensor and (_address(view) or view.numel() == 0) and _kind(view) is None:
            return view
        inner = _inner(t) if depth < 4 else None
        if inner is not None:
            return plain(inner, what, where, depth + 1)
        problem = f"a {type(t).__name__} (a tensor subclass without readable storage)"
    if problem is None and t.layout != torch.strided:
        return t  # sparse layouts are taken apart by the caller
    if problem is None and t.numel() and not _address(t):
        problem = "a tensor without readable storage (data pointer 0)"
    if problem is not None:
        raise UserError(f"{where}: expected {what} to be a CPU tensor with data (got {problem}); "
                        "pass a plain CPU tensor that holds its data")
    return t


_STRIDED = torch.strided
_MODES = tuple(getattr(torch._C._TorchDispatchModeKey, k) for k in ("FAKE", "FUNCTIONAL", "PROXY")
               if hasattr(torch._C._TorchDispatchModeKey, k))


def real_mode(where: str) -> None:
    """Refuse to run under a mode whose tensors have no data (FakeTensorMode, functionalisation, tracing):
    every buffer torch allocated for the call would be fake."""
    if not torch._C._len_torch_dispatch_stack():  # the common case: no mode at all
        return
    for key in _MODES:
        mode = torch._C._get_dispatch_mode(key)
        if mode is not None:
            raise UserError(f"{where}: sgnn runs compiled kernels on real memory and cannot run under "
                            f"{type(mode).__name__} (its tensors have no data); call it outside the mode")


def pointer(t: torch.Tensor, dtype: torch.dtype | None, what: str) -> int:
    """The address of ``t``'s memory for native code, after checking it is safe to read.

    The address of an empty tensor may be 0 (native code reads no element of it)."""
    if type(t) is torch.Tensor and t.dtype is dtype and t.is_cpu and t.layout is _STRIDED and t.is_contiguous():
        p = t.data_ptr()
        if p or not t.numel():
            return p  # the common case, decided with the cheapest checks
    if type(t) is not torch.Tensor or not t.is_cpu or t.layout != torch.strided:
        t = plain(t, what, "native call")
        if t.layout != torch.strided:
            raise UserError(f"native call: expected {what} to be strided (got layout {t.layout})")
    if dtype is not None and t.dtype != dtype:
        raise UserError(f"native call: expected {what} of dtype {dtype} (got {t.dtype})")
    if not t.is_contiguous():
        raise UserError(f"native call: expected {what} to be contiguous")
    p = t.data_ptr()
    if p == 0 and t.numel():
        problem = _kind(t) or "a tensor without readable storage (data pointer 0)"
        raise UserError(f"native call: expected {what} to be a CPU tensor with data (got {problem})")
    return p


__all__ = ["plain", "pointer", "real_mode"]
