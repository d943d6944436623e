#include "sgnn_runtime.h"
typedef float T;
static constexpr int64_t TILE = 256;
extern "C" void sgnn_compute(int64_t N_i, int64_t N_j, int64_t N_k, const int32_t* a_t0_pos1, const int32_t* a_t0_crd1, const T* a_t0_val, const T* a_t1, T* SG_RESTRICT out, const int64_t* bounds, int64_t nparts, int32_t nthreads) {
  #pragma omp parallel num_threads(nthreads)
  {
    #pragma omp for schedule(dynamic, 1)
    for (int64_t part = 0; part < nparts; part++) {
      for (int64_t v_i = bounds[part]; v_i < bounds[part + 1]; v_i++) {
        const int64_t p0_0 = v_i;
        for (int64_t t0 = 0; t0 < N_j; t0 += TILE) {
          const int64_t tn = sg::min<int64_t>(TILE, N_j - t0);
          if (tn == TILE) {
            sg::Tile<T, TILE> ws0_r;
            sg::tile_zero(ws0_r);
            for (int64_t p0_1 = a_t0_pos1[p0_0], p0_1_hi = a_t0_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
              const int64_t v_k = a_t0_crd1[p0_1];
              const int64_t p0_1_ahead0 = sg::prefetch_ahead((int64_t)(sg::min<int64_t>((TILE) * sizeof(T), 1024)), 256);  // invariant
              if (p0_1 + p0_1_ahead0 < a_t0_pos1[N_i]) {
                const char* pf = (const char*)(a_t1 + (int64_t)a_t0_crd1[p0_1 + p0_1_ahead0] * (N_j) + (t0));
                for (int64_t q = 0; q < (int64_t)(sg::min<int64_t>((TILE) * sizeof(T), 1024)); q += 64) __builtin_prefetch(pf + q, 0, 2);
              }
              const int64_t v_j = t0;
              sg::tile_axpy(ws0_r, a_t0_val[p0_1], &a_t1[(v_k) * N_j + v_j]);
            }
            T ws0[TILE];
            sg::tile_spill(ws0_r, ws0);
            #pragma omp simd
            for (int64_t cc = 0; cc < TILE; cc++) {
              const int64_t v_j = t0 + cc;
              out[(v_i) * N_j + v_j] = ws0[cc];
            }
          } else {
            if (2 * tn > TILE) {
              sg::Tile<T, TILE> ws1_r;
              sg::tile_zero(ws1_r);
              for (int64_t p0_1 = a_t0_pos1[p0_0], p0_1_hi = a_t0_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
                const int64_t v_k = a_t0_crd1[p0_1];
                const int64_t p0_1_ahead0 = sg::prefetch_ahead((int64_t)(sg::min<int64_t>((tn) * sizeof(T), 1024)), 256);  // invariant
                if (p0_1 + p0_1_ahead0 < a_t0_pos1[N_i]) {
                  const char* pf = (const char*)(a_t1 + (int64_t)a_t0_crd1[p0_1 + p0_1_ahead0] * (N_j) + (t0));
                  for (int64_t q = 0; q < (int64_t)(sg::min<int64_t>((tn) * sizeof(T), 1024)); q += 64) __builtin_prefetch(pf + q, 0, 2);
                }
                const int64_t v_j = t0;
                sg::tile_axpy_bounded(ws1_r, a_t0_val[p0_1], &a_t1[(v_k) * N_j + v_j], a_t1 + N_k * N_j);
              }
              T ws1[TILE];
              sg::tile_spill(ws1_r, ws1);
              #pragma omp simd
              for (int64_t cc = 0; cc < tn; cc++) {
                const int64_t v_j = t0 + cc;
                out[(v_i) * N_j + v_j] = ws1[cc];
              }
            } else {
              T ws2[TILE];
              #pragma omp simd
              for (int64_t cc = 0; cc < tn; cc++) {
                const int64_t v_j = t0 + cc;
                ws2[cc] = T(0);
              }
              for (int64_t p0_1 = a_t0_pos1[p0_0], p0_1_hi = a_t0_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
                const int64_t v_k = a_t0_crd1[p0_1];
                const int64_t p0_1_ahead0 = sg::prefetch_ahead((int64_t)(sg::min<int64_t>((tn) * sizeof(T), 1024)), 256);  // invariant
                if (p0_1 + p0_1_ahead0 < a_t0_pos1[N_i]) {
                  const char* pf = (const char*)(a_t1 + (int64_t)a_t0_crd1[p0_1 + p0_1_ahead0] * (N_j) + (t0));
                  for (int64_t q = 0; q < (int64_t)(sg::min<int64_t>((tn) * sizeof(T), 1024)); q += 64) __builtin_prefetch(pf + q, 0, 2);
                }
                const T h3 = a_t0_val[p0_1];
                #pragma omp simd
                for (int64_t cc = 0; cc < tn; cc++) {
                  const int64_t v_j = t0 + cc;
                  ws2[cc] += (h3 * a_t1[(v_k) * N_j + v_j]);
                }
              }
              #pragma omp simd
              for (int64_t cc = 0; cc < tn; cc++) {
                const int64_t v_j = t0 + cc;
                out[(v_i) * N_j + v_j] = ws2[cc];
              }
            }
          }
        }
      }
    }
  }
}
