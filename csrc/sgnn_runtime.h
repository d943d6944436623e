// sgnn_runtime.h: the small hand-written runtime every generated kernel includes.
// Scalar functions are templates on the value type so one expression renders for float and double.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <algorithm>
#include <omp.h>

#define SG_INF (std::numeric_limits<T>::infinity())
#define SG_RESTRICT __restrict__

namespace sg {

template <class T> inline T exp(T x) { return std::exp(x); }
template <class T> inline T log(T x) { return std::log(x); }
template <class T> inline T sqrt(T x) { return std::sqrt(x); }
template <class T> inline T tanh(T x) { return std::tanh(x); }
template <class T> inline T abs(T x) { return std::fabs(x); }
template <class T> inline T neg(T x) { return -x; }
template <class T> inline T relu(T x) { return x > T(0) ? x : T(0); }
template <class T> inline T leaky_relu(T x, T slope) { return x > T(0) ? x : slope * x; }
template <class T> inline T elu(T x, T alpha = T(1)) { return x > T(0) ? x : alpha * (std::exp(x) - T(1)); }
template <class T> inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// Per-thread scratch for workspaces whose size is only known at run time (64-byte aligned).
template <class T> inline T* scratch(int64_t n) {
  void* p = nullptr;
  size_t bytes = ((size_t(n > 0 ? n : 1) * sizeof(T)) + 63) / 64 * 64;
  if (posix_memalign(&p, 64, bytes) != 0) return nullptr;
  return static_cast<T*>(p);
}

}  // namespace sg
