#include "sgnn_runtime.h"
typedef float T;
static constexpr int64_t TILE = 16;
extern "C" void sgnn_compute(int64_t N_i, int64_t N_k_arg, int64_t N_j, const int32_t* a_A_pos1, const int32_t* a_A_crd1, const T* a_A_val, const T* a_X, T* SG_RESTRICT out, const int64_t* bounds, int64_t nparts, int32_t nthreads) {
  constexpr int64_t N_k = TILE;  // the runtime passes N_k_arg == TILE
  (void)N_k_arg;
  #pragma omp parallel num_threads(nthreads)
  {
    #pragma omp for schedule(dynamic, 1)
    for (int64_t part = 0; part < nparts; part++) {
      for (int64_t v_i = bounds[part]; v_i < bounds[part + 1]; v_i++) {
        const int64_t p0_0 = v_i;
        for (int64_t t0 = 0; t0 < N_k; t0 += TILE) {
          const int64_t tn = sg::min<int64_t>(TILE, N_k - t0);
          if (tn == TILE) {
            T ws0[TILE];
            #pragma omp simd
            for (int64_t cc = 0; cc < TILE; cc++) {
              const int64_t v_k = t0 + cc;
              ws0[cc] = -SG_INF;
            }
            for (int64_t p0_1 = a_A_pos1[p0_0], p0_1_hi = a_A_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
              const int64_t v_j = a_A_crd1[p0_1];
              const T h1 = a_A_val[p0_1];
              #pragma omp simd
              for (int64_t cc = 0; cc < TILE; cc++) {
                const int64_t v_k = t0 + cc;
                ws0[cc] = sg::max<T>(ws0[cc], (h1 * a_X[(v_j) * N_k + v_k]));
              }
            }
            #pragma omp simd
            for (int64_t cc = 0; cc < TILE; cc++) {
              const int64_t v_k = t0 + cc;
              ws0[cc] = (ws0[cc] == -SG_INF ? T(0) : ws0[cc]);
            }
            #pragma omp simd
            for (int64_t cc = 0; cc < TILE; cc++) {
              const int64_t v_k = t0 + cc;
              out[(v_i) * N_k + v_k] = ws0[cc];
            }
          } else {
            T ws2[TILE];
            #pragma omp simd
            for (int64_t cc = 0; cc < tn; cc++) {
              const int64_t v_k = t0 + cc;
              ws2[cc] = -SG_INF;
            }
            for (int64_t p0_1 = a_A_pos1[p0_0], p0_1_hi = a_A_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
              const int64_t v_j = a_A_crd1[p0_1];
              const T h3 = a_A_val[p0_1];
              #pragma omp simd
              for (int64_t cc = 0; cc < tn; cc++) {
                const int64_t v_k = t0 + cc;
                ws2[cc] = sg::max<T>(ws2[cc], (h3 * a_X[(v_j) * N_k + v_k]));
              }
            }
            #pragma omp simd
            for (int64_t cc = 0; cc < tn; cc++) {
              const int64_t v_k = t0 + cc;
              ws2[cc] = (ws2[cc] == -SG_INF ? T(0) : ws2[cc]);
            }
            #pragma omp simd
            for (int64_t cc = 0; cc < tn; cc++) {
              const int64_t v_k = t0 + cc;
              out[(v_i) * N_k + v_k] = ws2[cc];
            }
          }
        }
      }
    }
  }
}
