"""A read-only gather probe, independent of sgnn's code generator: ``Y[i] = Σ_{k ∈ row i} X[crd[k]]``
over a CSR pattern (int32 ``pos`` / ``crd``), the memory traffic of an SpMM without its values and
multiplies. X in float32, bfloat16, float16 or float64; sums in float (double for float64) held in
registers (AVX-512 vectors of up to 256 floats / 128 doubles per pass over a row); Y written once in
X's dtype. Rows are split between OpenMP threads by nonzeros (equal shares of ``crd``), and gathered
rows can be prefetched ``ahead`` nonzeros in advance (0: none). The C++ below is compiled through
``sgnn.engine.compiler.build`` (same flags and cache as every kernel) but shares no code with sgnn's
kernels or headers, so a fast SpMM cannot make its own yardstick fast.
"""
from __future__ import annotations

import ctypes
import functools

import torch

CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2, torch.float64: 3}

SOURCE = r"""
// gather probe (sgnn/harness/gather_probe.py)
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include <omp.h>
#include <immintrin.h>

typedef float fv __attribute__((vector_size(64)));
typedef float fu __attribute__((vector_size(64), aligned(4)));
typedef double dv __attribute__((vector_size(64)));
typedef double du __attribute__((vector_size(64), aligned(8)));
typedef uint16_t hv __attribute__((vector_size(32), aligned(2)));  // 16 halves, unaligned
typedef uint32_t wv __attribute__((vector_size(64)));
struct bf { uint16_t b; };
struct hf { uint16_t b; };

// Acc: the sum type; L lanes per 64-byte vector; load / store one vector of L elements.
template <class S> struct Op;
template <> struct Op<float> {
  typedef float A; typedef fv V; static const int L = 16;
  static V load(const float* p) { return *(const fu*)p; }
  static void store(float* p, V v) { *(fu*)p = v; }
  static float one(float s) { return s; }
  static void put(float* p, float a) { *p = a; }
};
template <> struct Op<double> {
  typedef double A; typedef dv V; static const int L = 8;
  static V load(const double* p) { return *(const du*)p; }
  static void store(double* p, V v) { *(du*)p = v; }
  static double one(double s) { return s; }
  static void put(double* p, double a) { *p = a; }
};
template <> struct Op<bf> {  // widen: a 16-bit shift; narrow: truncation (a probe, not a result)
  typedef float A; typedef fv V; static const int L = 16;
  static V load(const bf* p) {
    return (V)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16);
  }
  static void store(bf* p, V v) { *(hv*)p = __builtin_convertvector((wv)v >> 16, hv); }
  static float one(bf s) { uint32_t u = uint32_t(s.b) << 16; float f; memcpy(&f, &u, 4); return f; }
  static void put(bf* p, float a) { uint32_t u; memcpy(&u, &a, 4); p->b = uint16_t(u >> 16); }
};
template <> struct Op<hf> {
  typedef float A; typedef fv V; static const int L = 16;
  static V load(const hf* p) { return (V)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
  static void store(hf* p, V v) { _mm256_storeu_si256((__m256i*)p, _mm512_cvtps_ph((__m512)v, 0)); }
  static float one(hf s) { return _cvtsh_ss(s.b); }
  static void put(hf* p, float a) { p->b = _cvtss_sh(a, 0); }
};

// Columns [c, c + NV*L) of rows [r0, r1): sums in NV registers, prefetching `ahead` nonzeros ahead.
template <class S, int NV>
static void tile(int64_t r0, int64_t r1, const int32_t* pos, const int32_t* crd, const S* x, S* y,
                 int64_t f, int64_t c, int64_t ahead, int64_t kend) {
  typedef Op<S> O;
  const int64_t lines = (int64_t(NV) * O::L * sizeof(S) + 63) / 64;
  for (int64_t i = r0; i < r1; i++) {
    typename O::V acc[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) acc[v] = typename O::V{};
    for (int64_t k = pos[i]; k < pos[i + 1]; k++) {
      if (ahead > 0 && k + ahead < kend) {
        const char* p = (const char*)(x + int64_t(crd[k + ahead]) * f + c);
        for (int64_t l = 0; l < lines; l++) __builtin_prefetch(p + 64 * l, 0, 2);
      }
      const S* row = x + int64_t(crd[k]) * f + c;
#pragma GCC unroll 16
      for (int v = 0; v < NV; v++) acc[v] += O::load(row + v * O::L);
    }
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) O::store(y + i * f + c + v * O::L, acc[v]);
  }
}

// Columns [c, f) one at a time (the tail narrower than a vector).
template <class S>
static void tail(int64_t r0, int64_t r1, const int32_t* pos, const int32_t* crd, const S* x, S* y,
                 int64_t f, int64_t c) {
  for (int64_t i = r0; i < r1; i++)
    for (int64_t j = c; j < f; j++) {
      typename Op<S>::A a = 0;
      for (int64_t k = pos[i]; k < pos[i + 1]; k++) a += Op<S>::one(x[int64_t(crd[k]) * f + j]);
      Op<S>::put(y + i * f + j, a);
    }
}

template <class S>
static void rows(int64_t r0, int64_t r1, const int32_t* pos, const int32_t* crd, const S* x, S* y,
                 int64_t f, int64_t ahead, int64_t kend) {
  const int64_t L = Op<S>::L, W = 16 * L;
  int64_t c = 0;
  for (; c + W <= f; c += W) tile<S, 16>(r0, r1, pos, crd, x, y, f, c, ahead, kend);
  if (c + 8 * L <= f) { tile<S, 8>(r0, r1, pos, crd, x, y, f, c, ahead, kend); c += 8 * L; }
  if (c + 4 * L <= f) { tile<S, 4>(r0, r1, pos, crd, x, y, f, c, ahead, kend); c += 4 * L; }
  if (c + 2 * L <= f) { tile<S, 2>(r0, r1, pos, crd, x, y, f, c, ahead, kend); c += 2 * L; }
  if (c + L <= f) { tile<S, 1>(r0, r1, pos, crd, x, y, f, c, ahead, kend); c += L; }
  if (c < f) tail<S>(r0, r1, pos, crd, x, y, f, c);
}

template <class S>
static void run(int64_t n, int64_t f, const int32_t* pos, const int32_t* crd, const void* x, void* y,
                int64_t ahead, int threads) {
  const int64_t nnz = pos[n];
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    // rows [r0, r1): those whose first nonzero is in this thread's equal share of crd
    const int64_t r0 = t == 0 ? 0 : std::lower_bound(pos, pos + n, int32_t(nnz * t / T)) - pos;
    const int64_t r1 = t == T - 1 ? n : std::lower_bound(pos, pos + n, int32_t(nnz * (t + 1) / T)) - pos;
    if (r0 < r1) rows<S>(r0, r1, pos, crd, (const S*)x, (S*)y, f, ahead, pos[r1]);
  }
}

extern "C" int sgnn_gather_probe(int code, int64_t n, int64_t f, const int32_t* pos, const int32_t* crd,
                                 const void* x, void* y, int64_t ahead, int threads) {
  switch (code) {
    case 0: run<float>(n, f, pos, crd, x, y, ahead, threads); return 0;
    case 1: run<bf>(n, f, pos, crd, x, y, ahead, threads); return 0;
    case 2: run<hf>(n, f, pos, crd, x, y, ahead, threads); return 0;
    case 3: run<double>(n, f, pos, crd, x, y, ahead, threads); return 0;
  }
  return -1;
}
"""


@functools.lru_cache(maxsize=1)
def _native():
    from ..engine.compiler import build
    lib, _ = build(SOURCE, name="gather_probe")
    fn = lib.sgnn_gather_probe
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
    fn.restype = ctypes.c_int
    return lib, fn


def check(pos: torch.Tensor, crd: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """Everything the C++ trusts, checked in Python: int32 CSR with pos[0] = 0, non-decreasing pos,
    0 <= crd < x rows; x, y contiguous CPU tensors of one supported dtype with y of shape (n, F)."""
    for name, t in (("pos", pos), ("crd", crd), ("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"gather probe: {name} must be a contiguous CPU tensor")
    if pos.dtype != torch.int32 or crd.dtype != torch.int32 or pos.dim() != 1 or crd.dim() != 1:
        raise ValueError("gather probe: pos and crd must be 1-d int32 tensors")
    if x.dtype not in CODES or y.dtype != x.dtype or x.dim() != 2:
        raise ValueError(f"gather probe: x must be 2-d {sorted(map(str, CODES))} and y of its dtype")
    n = pos.numel() - 1
    if n < 0 or tuple(y.shape) != (n, x.size(1)):
        raise ValueError(f"gather probe: y must be ({n}, {x.size(1)}) (got {tuple(y.shape)})")
    if int(pos[0]) != 0 or int(pos[-1]) != crd.numel() or (n > 0 and bool((pos[1:] < pos[:-1]).any())):
        raise ValueError("gather probe: pos must rise from 0 to len(crd)")
    if crd.numel() and (int(crd.min()) < 0 or int(crd.max()) >= x.size(0)):
        raise ValueError(f"gather probe: crd must lie in [0, {x.size(0)})")


def gather_sum(pos: torch.Tensor, crd: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None,
               ahead: int = 0, threads: int | None = None, checked: bool = False) -> torch.Tensor:
    """``y[i] = Σ_{k ∈ [pos[i], pos[i+1])} x[crd[k]]`` by the probe kernel (into ``y`` when given);
    ``checked=True`` skips the argument checks (the timed loop checked them once)."""
    if y is None:
        y = torch.empty(pos.numel() - 1, x.size(1), dtype=x.dtype)
    if not checked:
        check(pos, crd, x, y)
        if ahead < 0:
            raise ValueError(f"gather probe: ahead must be >= 0 (got {ahead})")
    if x.size(1) == 0 or y.numel() == 0:
        return y
    threads = torch.get_num_threads() if threads is None else int(threads)
    _, fn = _native()
    fn(CODES[x.dtype], pos.numel() - 1, x.size(1), pos.data_ptr(), crd.data_ptr() if crd.numel() else None,
       x.data_ptr(), y.data_ptr(), int(ahead), max(1, threads))
    return y
