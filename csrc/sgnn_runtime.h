// sgnn_runtime.h: the small hand-written runtime every generated kernel includes.
// Kept to C headers so a kernel compiles in a fraction of a second; scalar functions are
// templates on the value type so one expression renders for float and double.
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <math.h>

#define SG_INF (T(__builtin_inf()))
#define SG_RESTRICT __restrict__

namespace sg {

#ifdef SG_LIBM_EXP
inline float exp_(float x) { return expf(x); }
#else
// exp in float, inline so that `omp simd` loops vectorise it (a libm call does not): x = k ln2 + r
// (Cody-Waite, |r| <= ln2/2), a degree-6 polynomial (Cephes' expf coefficients) for e^r, 2^k in two
// factors so that k = 128 and gradual underflow are exact. Max relative error 8.5e-8 (< 1.5 ulp) over
// every float in [-104, 89]; inf, -inf (-> 0) and NaN as libm. -DSG_LIBM_EXP restores expf.
inline float exp_(float x) {
  const float xc = x < -104.0f ? -104.0f : (x > 88.72283f ? 88.72283f : x);
  const float k = __builtin_rintf(xc * 1.44269504088896341f);
  const float r = (xc - k * 0.693359375f) - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t ki = int32_t(k), k1 = ki >> 1;
  union { uint32_t u; float f; } s1, s2;
  s1.u = uint32_t(k1 + 127) << 23;
  s2.u = uint32_t(ki - k1 + 127) << 23;
  return x > 88.72283f ? __builtin_inff() : p * s1.f * s2.f;
}
#endif
inline double exp_(double x) { return ::exp(x); }
inline float log_(float x) { return logf(x); }
inline double log_(double x) { return ::log(x); }
inline float sqrt_(float x) { return sqrtf(x); }
inline double sqrt_(double x) { return ::sqrt(x); }
inline float tanh_(float x) { return tanhf(x); }
inline double tanh_(double x) { return ::tanh(x); }

template <class T> inline T exp(T x) { return exp_(x); }
template <class T> inline T log(T x) { return log_(x); }
template <class T> inline T sqrt(T x) { return sqrt_(x); }
template <class T> inline T tanh(T x) { return tanh_(x); }
template <class T> inline T abs(T x) { return x < T(0) ? -x : x; }
template <class T> inline T neg(T x) { return -x; }
template <class T> inline T relu(T x) { return x > T(0) ? x : T(0); }
template <class T> inline T step(T x) { return x > T(0) ? T(1) : T(0); }
template <class T> inline T leaky_relu(T x, T slope) { return x > T(0) ? x : slope * x; }
template <class T> inline T elu(T x, T alpha = T(1)) { return x > T(0) ? x : alpha * (exp_(x) - T(1)); }
template <class T> inline T sigmoid(T x) { return T(1) / (T(1) + exp_(-x)); }
template <class T> inline T max(T a, T b) { return a < b ? b : a; }
template <class T> inline T min(T a, T b) { return b < a ? b : a; }
// Dropout keep-masks (expr.Keep): a counter-based hash, Philox4x32 (Salmon et al., SC'11) with 7
// rounds (the fewest the authors found Crush-resistant), key = the 64-bit seed, counter = the low
// 32 bits of up to four coordinates. Word 0 of the output >= thr (= round(p * 2^32)) keeps, with
// probability 1 - p; the value is then `scale` (1/(1-p)), else 0. A pure function of the
// coordinates: forward and backward kernels, in any loop order, recompute one mask.
static constexpr int PHILOX_ROUNDS = 7;
inline uint32_t philox(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int r = 0; r < PHILOX_ROUNDS; r++) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0, p1 = uint64_t(0xCD9E8D57u) * c2;
    c0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    c2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c1 = uint32_t(p1);
    c3 = uint32_t(p0);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}
template <class T>
inline T keep(int64_t seed, int64_t c0, int64_t c1, int64_t c2, int64_t c3, int64_t thr, T scale) {
  return int64_t(philox(uint64_t(seed), uint32_t(c0), uint32_t(c1), uint32_t(c2), uint32_t(c3))) >= thr
             ? scale : T(0);
}
// How many nonzeros ahead to prefetch gathered rows of `bytes` bytes so that about `lines` cache
// lines are in flight (into L2: prefetcht1), between 8 and 64 nonzeros. Measured at arXiv size
// (rows of 1-8 lines): 1.3-2x faster than 8 nonzeros ahead into L1.
inline int64_t prefetch_ahead(int64_t bytes, int64_t lines) {
  const int64_t row_lines = bytes > 64 ? (bytes + 63) / 64 : 1;
  const int64_t d = lines / row_lines;
  return d < 8 ? 8 : (d > 64 ? 64 : d);
}

// Per-thread scratch for workspaces whose size is only known at run time (64-byte aligned).
template <class T> inline T* scratch(int64_t n) {
  void* p = nullptr;
  size_t bytes = ((size_t(n > 0 ? n : 1) * sizeof(T)) + 63) / 64 * 64;
  if (posix_memalign(&p, 64, bytes) != 0) return nullptr;
  return static_cast<T*>(p);
}

}  // namespace sg

// Register accumulator tiles: N values held in whole 64-byte vectors, so g++ keeps them in
// registers across a loop over nonzeros (a plain T[N] array is kept in memory, and every
// accumulation then waits on a store-to-load round trip).
namespace sg {
template <class T> struct vec;
template <> struct vec<float> {
  typedef float v __attribute__((vector_size(64)));
  typedef float u __attribute__((vector_size(64), aligned(4)));  // unaligned load/store
};
template <> struct vec<double> {
  typedef double v __attribute__((vector_size(64)));
  typedef double u __attribute__((vector_size(64), aligned(8)));
};
// One vector of VL values from (unaligned) memory.
inline vec<float>::v load(const float* p) { return *(const vec<float>::u*)p; }
inline vec<double>::v load(const double* p) { return *(const vec<double>::u*)p; }
template <class T, int64_t N> struct Tile {
  static constexpr int64_t VL = 64 / sizeof(T);
  static constexpr int64_t NV = N / VL;
  static_assert(N % VL == 0, "a register tile is a whole number of vectors");
  typename vec<T>::v r[NV];
};
template <class T, int64_t N> inline void tile_zero(Tile<T, N>& t) {
#pragma GCC unroll 16
  for (int64_t k = 0; k < Tile<T, N>::NV; k++) t.r[k] = typename vec<T>::v{};
}
// t += h * x[0 .. N); x may be stored narrow (bf16 / f16: converted on load, see load below)
template <class T, int64_t N, class X, class H> inline void tile_axpy(Tile<T, N>& t, H h_, const X* x) {
  const T h = T(h_);
#pragma GCC unroll 16
  for (int64_t k = 0; k < Tile<T, N>::NV; k++) t.r[k] += h * load(x + k * Tile<T, N>::VL);
}
// t += h * x[0 .. N) for a partial tile (the generic kernel of a bucketed width): whole-vector loads
// while they stay below `end` (one past the gathered operand's last element; lanes past the row's
// width hold values of the next row, which the epilogue never stores), scalar lanes at the very end.
template <class T, int64_t N, class X, class H>
inline void tile_axpy_bounded(Tile<T, N>& t, H h, const X* x, const X* end) {
  if (x + N <= end) { tile_axpy(t, h, x); return; }
  for (int64_t l = 0; l < N && x + l < end; l++) t.r[l / Tile<T, N>::VL][l % Tile<T, N>::VL] += T(h) * T(x[l]);
}
template <class T, int64_t N> inline void tile_spill(const Tile<T, N>& t, T* out) {
#pragma GCC unroll 16
  for (int64_t k = 0; k < Tile<T, N>::NV; k++)
    *(typename vec<T>::u*)(out + k * Tile<T, N>::VL) = t.r[k];
}
}  // namespace sg

#ifdef SG_NARROW  // bfloat16 / float16 operands (the kernel's S), only for kernels that read them
#include "sgnn_narrow.h"
#endif
