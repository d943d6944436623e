"""The layer planner's precision decision: one per plan, taken after its shape (``layerplan.run``).

- **Mixed bf16** (``sgnn.config(precision="bf16")`` / ``SGNN_PRECISION=bf16``, float32 layers, inference
  only): what the kernel gathers (X·W products read at the source, at least ``NARROW_MIN_WIDTH`` wide,
  and raw features) is stored bfloat16; the kernel reads it narrow, its other operands (graph values,
  degree scales, bias) in float32, accumulates in float32 and writes the float32 output with the
  epilogue (a mixed kernel: ``validate.mixed_dtypes``). Each X·W converts once, on its narrower side:
  X before a bfloat16 GEMM when ``in <= out`` and the CPU has AVX512-BF16, else the float32 GEMM's
  output. Parameters stay float32; their bfloat16 copies are cached (``operands.cached``). Under
  autograd the layers run their float32 differentiable formulation: the mode does not apply.
- **float16 GEMMs in float32**: a float16 layer on a CPU without AVX512-FP16 (where torch's float16
  GEMM is 2-12x slower than float32) upcasts X exactly, multiplies by W's cached float32 copy and
  rounds each product to float16 once; a ``(ÂX)W`` kernel then writes float32 aggregates for it.
"""
from __future__ import annotations

import functools

import torch

from . import memory, operands
from ..config import precision_of
from .schedule import Decision

NARROW_MIN_WIDTH = 16  # narrower products stay float32: a gathered row is within one cache line either way


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags (/proc/cpuinfo; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), ()))
    except OSError:
        return frozenset()


def decide(plan, ops: dict, setting):
    """The ``LayerPlan``'s precision decision under ``setting`` (``config.precision``): casts, reasons."""
    precision = precision_of(setting, "precision (SGNN_PRECISION or sgnn.config)")
    ws = {ops[w].dtype for _, w, _, _ in plan.products} | ({ops[plan.w].dtype} if plan.w else set())
    if precision == "bf16" and ws == {torch.float32}:
        _mixed(plan, ops, "avx512_bf16" in cpu_flags())
    elif precision == "bf16":
        plan.decisions.append(Decision("precision: as the layer's dtype (mixed bf16 not applied)",
                                       f"the layer's parameters are {sorted(str(d)[6:] for d in ws)}, not float32"))
    if ws == {torch.float16} and "avx512_fp16" not in cpu_flags():
        plan.upcast = True
        plan.casts.update({(x, w): (torch.float32, torch.float16) for x, w, _, _ in plan.products})
        then = "; the kernel writes float32 aggregates for the final GEMM" if plan.shape == "gemm" else ""
        plan.decisions.append(Decision(
            f"float16 GEMMs: in float32 (X upcast exactly, W's float32 copy cached), each product rounded to "
            f"float16 once{then}", "the CPU has no AVX512-FP16: torch's float16 GEMM is 2-12x slower than "
                                   "float32 here"))
    return plan


def _mixed(plan, ops: dict, bf16_gemm: bool) -> None:
    plan.narrow = torch.bfloat16
    wide = [(x, w) for x, w, at_src, _ in plan.products if at_src and _width(ops[w]) >= NARROW_MIN_WIDTH]
    stored = [name for name, _ in plan.features] + [f"{x}·{w}" for x, w in wide]
    epilogue = " (bias, activation in its epilogue)" if plan.shape == "kernel" else ""
    plan.decisions.append(Decision(
        f"precision: mixed bf16: {', '.join(stored) or 'nothing'} stored bfloat16, the kernel accumulates "
        f"float32 and writes the float32 output{epilogue}",
        "sgnn.config(precision='bf16') on a float32 layer: the kernel's gathers move half the bytes; "
        "parameters stay float32 (bfloat16 copies cached); inference only (autograd runs float32)"))
    for x, w in wide:
        f_in, f_out = ops[w].shape[-1], _width(ops[w])
        before = bf16_gemm and f_in <= f_out
        plan.casts[(x, w)] = (torch.bfloat16 if before else torch.float32, torch.bfloat16)
        plan.decisions.append(Decision(
            f"{x}·{w}: " + ("X converted to bfloat16 before the GEMM (a bf16 GEMM)" if before else
                            "a float32 GEMM, its output rounded to bfloat16 once"),
            f"in={f_in}, out={f_out}: the conversion passes over N x min(in, out) values" if bf16_gemm else
            "the CPU has no AVX512-BF16: torch's bfloat16 GEMM is no faster than float32"))


def _width(w: torch.Tensor) -> int:
    return w.numel() // max(w.shape[-1], 1)


def as_dtype(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A parameter in ``dtype``: itself, or its copy cached under the one rule (``operands.cached``)."""
    w = w.detach()
    return w if w.dtype == dtype else operands.cached((w,), ("as", dtype), lambda: w.to(dtype))


def cast_product(x, w2: torch.Tensor, buffer, gemm: torch.dtype, dtype: torch.dtype) -> torch.Tensor:
    """Dense X·W computed in ``gemm`` (X converted once, W's copy cached), stored as ``dtype`` (a
    huge-page buffer, or ``buffer(shape, dtype)`` when given)."""
    wg = as_dtype(w2, gemm)
    shape = (x.shape[0], w2.shape[0])
    out = buffer(shape, dtype) if buffer is not None else None
    if out is None or out.shape != shape or out.dtype != dtype:
        out = memory.empty(shape, dtype)
    xg = x if x.dtype == gemm else x.to(gemm)
    if gemm == dtype:
        return torch.mm(xg, wg.t(), out=out)
    return out.copy_(torch.mm(xg, wg.t()))  # rounded once, from float32


def gemm_into(rows: torch.Tensor, agg: torch.Tensor, w: torch.Tensor, b, extra: list, upcast: bool):
    """``rows = agg W^T + b + Σ X' W'^T``: one GEMM pass with beta = 1 per extra term, or (``upcast``)
    computed in float32 (exact upcasts) and rounded once into ``rows``."""
    if not upcast:
        torch.mm(agg, w.t(), out=rows) if b is None else torch.addmm(b, agg, w.t(), out=rows)
        for x, wx in extra:
            rows.addmm_(x, wx.t())
        return
    f32 = torch.float32
    z = torch.mm(agg.to(f32), as_dtype(w, f32).t()) if b is None else \
        torch.addmm(as_dtype(b, f32), agg.to(f32), as_dtype(w, f32).t())
    for x, wx in extra:
        z.addmm_(x.to(f32), as_dtype(wx, f32).t())
    rows.copy_(z)
