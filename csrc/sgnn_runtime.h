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

inline float exp_(float x) { return expf(x); }
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
template <class T> inline T leaky_relu(T x, T slope) { return x > T(0) ? x : slope * x; }
template <class T> inline T elu(T x, T alpha = T(1)) { return x > T(0) ? x : alpha * (exp_(x) - T(1)); }
template <class T> inline T sigmoid(T x) { return T(1) / (T(1) + exp_(-x)); }
template <class T> inline T max(T a, T b) { return a < b ? b : a; }
template <class T> inline T min(T a, T b) { return b < a ? b : a; }

// Per-thread scratch for workspaces whose size is only known at run time (64-byte aligned).
template <class T> inline T* scratch(int64_t n) {
  void* p = nullptr;
  size_t bytes = ((size_t(n > 0 ? n : 1) * sizeof(T)) + 63) / 64 * 64;
  if (posix_memalign(&p, 64, bytes) != 0) return nullptr;
  return static_cast<T*>(p);
}

}  // namespace sg
