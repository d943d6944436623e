#include "sgnn_runtime.h"
typedef float T;
static constexpr int64_t TILE = 16;
extern "C" void sgnn_compute(int64_t N_i, int64_t N_h, int64_t N_c, int64_t N_j, const int32_t* a_A_pos1, const int32_t* a_A_crd1, const T* a_A_val, const T* a_ad, const T* a_as_, const T* a_X, T* SG_RESTRICT out, const int64_t* bounds, int64_t nparts, int32_t nthreads) {
  #pragma omp parallel num_threads(nthreads)
  {
    T* ws0 = sg::scratch<T>(N_h);
    T* ws1 = sg::scratch<T>(N_h);
    T* ws2 = sg::scratch<T>(N_h * TILE);
    T* ws5 = sg::scratch<T>(N_h);
    T* ws6 = sg::scratch<T>(N_h);
    T* ws7 = sg::scratch<T>(N_h * TILE);
    #pragma omp for schedule(dynamic, 1)
    for (int64_t part = 0; part < nparts; part++) {
      for (int64_t v_i = bounds[part]; v_i < bounds[part + 1]; v_i++) {
        const int64_t p0_0 = v_i;
        for (int64_t t0 = 0; t0 < N_c; t0 += TILE) {
          const int64_t tn = sg::min<int64_t>(TILE, N_c - t0);
          if (tn == TILE) {
            #pragma omp simd
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              ws0[v_h] = -SG_INF;
              ws1[v_h] = T(0);
            }
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              #pragma omp simd
              for (int64_t cc = 0; cc < TILE; cc++) {
                const int64_t v_c = t0 + cc;
                ws2[(v_h) * TILE + cc] = T(0);
              }
            }
            for (int64_t p0_1 = a_A_pos1[p0_0], p0_1_hi = a_A_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
              const int64_t v_j = a_A_crd1[p0_1];
              #pragma omp simd
              for (int64_t v_h = 0; v_h < N_h; v_h++) {
                const T s3 = sg::leaky_relu<T>((a_ad[(v_i) * N_h + v_h] + a_as_[(v_j) * N_h + v_h]), T(0.2));
                ws0[v_h] = (s3 > ws0[v_h] ? s3 : ws0[v_h]);
              }
            }
            #pragma omp simd
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              ws0[v_h] = (ws0[v_h] == -SG_INF ? T(0) : ws0[v_h]);
            }
            for (int64_t p0_1 = a_A_pos1[p0_0], p0_1_hi = a_A_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
              const int64_t v_j = a_A_crd1[p0_1];
              for (int64_t v_h = 0; v_h < N_h; v_h++) {
                const T w4 = sg::exp<T>((sg::leaky_relu<T>((a_ad[(v_i) * N_h + v_h] + a_as_[(v_j) * N_h + v_h]), T(0.2)) - ws0[v_h]));
                ws1[v_h] += w4;
                #pragma omp simd
                for (int64_t cc = 0; cc < TILE; cc++) {
                  const int64_t v_c = t0 + cc;
                  ws2[(v_h) * TILE + cc] += (w4 * a_X[((v_j) * N_h + v_h) * N_c + v_c]);
                }
              }
            }
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              #pragma omp simd
              for (int64_t cc = 0; cc < TILE; cc++) {
                const int64_t v_c = t0 + cc;
                out[((v_i) * N_h + v_h) * N_c + v_c] = (ws1[v_h] > T(0) ? (ws2[(v_h) * TILE + cc] / ws1[v_h]) : T(0));
              }
            }
          } else {
            #pragma omp simd
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              ws5[v_h] = -SG_INF;
              ws6[v_h] = T(0);
            }
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              #pragma omp simd
              for (int64_t cc = 0; cc < tn; cc++) {
                const int64_t v_c = t0 + cc;
                ws7[(v_h) * TILE + cc] = T(0);
              }
            }
            for (int64_t p0_1 = a_A_pos1[p0_0], p0_1_hi = a_A_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
              const int64_t v_j = a_A_crd1[p0_1];
              #pragma omp simd
              for (int64_t v_h = 0; v_h < N_h; v_h++) {
                const T s8 = sg::leaky_relu<T>((a_ad[(v_i) * N_h + v_h] + a_as_[(v_j) * N_h + v_h]), T(0.2));
                ws5[v_h] = (s8 > ws5[v_h] ? s8 : ws5[v_h]);
              }
            }
            #pragma omp simd
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              ws5[v_h] = (ws5[v_h] == -SG_INF ? T(0) : ws5[v_h]);
            }
            for (int64_t p0_1 = a_A_pos1[p0_0], p0_1_hi = a_A_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
              const int64_t v_j = a_A_crd1[p0_1];
              for (int64_t v_h = 0; v_h < N_h; v_h++) {
                const T w9 = sg::exp<T>((sg::leaky_relu<T>((a_ad[(v_i) * N_h + v_h] + a_as_[(v_j) * N_h + v_h]), T(0.2)) - ws5[v_h]));
                ws6[v_h] += w9;
                #pragma omp simd
                for (int64_t cc = 0; cc < tn; cc++) {
                  const int64_t v_c = t0 + cc;
                  ws7[(v_h) * TILE + cc] += (w9 * a_X[((v_j) * N_h + v_h) * N_c + v_c]);
                }
              }
            }
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              #pragma omp simd
              for (int64_t cc = 0; cc < tn; cc++) {
                const int64_t v_c = t0 + cc;
                out[((v_i) * N_h + v_h) * N_c + v_c] = (ws6[v_h] > T(0) ? (ws7[(v_h) * TILE + cc] / ws6[v_h]) : T(0));
              }
            }
          }
        }
      }
    }
    free(ws0);
    free(ws1);
    free(ws2);
    free(ws5);
    free(ws6);
    free(ws7);
  }
}
