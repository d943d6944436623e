#include "sgnn_runtime.h"
typedef float T;
static constexpr int64_t TILE = 5;
extern "C" void sgnn_compute(int64_t N_i, int64_t N_h, int64_t N_c_arg, int64_t N_j, const int32_t* a_A_pos1, const int32_t* a_A_crd1, const T* a_A_val, const T* a_ad, const T* a_as_, const T* a_X, T* SG_RESTRICT out, const int64_t* bounds, int64_t nparts, int32_t nthreads) {
  constexpr int64_t N_c = TILE;  // the runtime passes N_c_arg == TILE
  (void)N_c_arg;
  #pragma omp parallel num_threads(nthreads)
  {
    T* ws0 = sg::scratch<T>(N_h);
    T* ws1 = sg::scratch<T>(N_h);
    T* ws2 = sg::scratch<T>(N_h * TILE);
    T* ws6 = sg::scratch<T>(N_h);
    T* ws7 = sg::scratch<T>(N_h);
    T* ws8 = sg::scratch<T>(N_h * TILE);
    #pragma omp for schedule(dynamic, 1)
    for (int64_t part = 0; part < nparts; part++) {
      for (int64_t v_i = bounds[part]; v_i < bounds[part + 1]; v_i++) {
        const int64_t p0_0 = v_i;
        for (int64_t t0 = 0; t0 < N_c; t0 += TILE) {
          const int64_t tn = sg::min<int64_t>(TILE, N_c - t0);
          if (tn == TILE) {
            #pragma omp simd
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              ws6[v_h] = -SG_INF;
              ws7[v_h] = T(0);
            }
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              #pragma omp simd
              for (int64_t cc = 0; cc < TILE; cc++) {
                const int64_t v_c = t0 + cc;
                ws8[(v_h) * TILE + cc] = T(0);
              }
            }
            for (int64_t p0_1 = a_A_pos1[p0_0], p0_1_hi = a_A_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
              const int64_t v_j = a_A_crd1[p0_1];
              for (int64_t v_h = 0; v_h < N_h; v_h++) {
                const T s9 = sg::leaky_relu<T>((a_ad[(v_i) * N_h + v_h] + a_as_[(v_j) * N_h + v_h]), T(0.2));
                if (s9 > ws6[v_h]) {
                  const T sc10 = sg::exp<T>(ws6[v_h] - s9);
                  ws7[v_h] *= sc10;
                  #pragma omp simd
                  for (int64_t cc = 0; cc < TILE; cc++) {
                    const int64_t v_c = t0 + cc;
                    ws8[(v_h) * TILE + cc] *= sc10;
                  }
                  ws6[v_h] = s9;
                }
                const T w11 = sg::exp<T>(s9 - ws6[v_h]);
                ws7[v_h] += w11;
                #pragma omp simd
                for (int64_t cc = 0; cc < TILE; cc++) {
                  const int64_t v_c = t0 + cc;
                  ws8[(v_h) * TILE + cc] += w11 * a_X[((v_j) * N_h + v_h) * N_c + v_c];
                }
              }
            }
            #pragma omp simd
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              ws6[v_h] = (ws6[v_h] == -SG_INF) ? T(0) : ws6[v_h];
            }
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              #pragma omp simd
              for (int64_t cc = 0; cc < TILE; cc++) {
                const int64_t v_c = t0 + cc;
                out[((v_i) * N_h + v_h) * N_c + v_c] = (ws7[v_h] > T(0) ? ws8[(v_h) * TILE + cc] / ws7[v_h] : T(0));
              }
            }
          } else {
            #pragma omp simd
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              ws0[v_h] = -SG_INF;
              ws1[v_h] = T(0);
            }
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              #pragma omp simd
              for (int64_t cc = 0; cc < tn; cc++) {
                const int64_t v_c = t0 + cc;
                ws2[(v_h) * TILE + cc] = T(0);
              }
            }
            for (int64_t p0_1 = a_A_pos1[p0_0], p0_1_hi = a_A_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
              const int64_t v_j = a_A_crd1[p0_1];
              for (int64_t v_h = 0; v_h < N_h; v_h++) {
                const T s3 = sg::leaky_relu<T>((a_ad[(v_i) * N_h + v_h] + a_as_[(v_j) * N_h + v_h]), T(0.2));
                if (s3 > ws0[v_h]) {
                  const T sc4 = sg::exp<T>(ws0[v_h] - s3);
                  ws1[v_h] *= sc4;
                  #pragma omp simd
                  for (int64_t cc = 0; cc < tn; cc++) {
                    const int64_t v_c = t0 + cc;
                    ws2[(v_h) * TILE + cc] *= sc4;
                  }
                  ws0[v_h] = s3;
                }
                const T w5 = sg::exp<T>(s3 - ws0[v_h]);
                ws1[v_h] += w5;
                #pragma omp simd
                for (int64_t cc = 0; cc < tn; cc++) {
                  const int64_t v_c = t0 + cc;
                  ws2[(v_h) * TILE + cc] += w5 * a_X[((v_j) * N_h + v_h) * N_c + v_c];
                }
              }
            }
            #pragma omp simd
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              ws0[v_h] = (ws0[v_h] == -SG_INF) ? T(0) : ws0[v_h];
            }
            for (int64_t v_h = 0; v_h < N_h; v_h++) {
              #pragma omp simd
              for (int64_t cc = 0; cc < tn; cc++) {
                const int64_t v_c = t0 + cc;
                out[((v_i) * N_h + v_h) * N_c + v_c] = (ws1[v_h] > T(0) ? ws2[(v_h) * TILE + cc] / ws1[v_h] : T(0));
              }
            }
          }
        }
      }
    }
    free(ws0);
    free(ws1);
    free(ws2);
    free(ws6);
    free(ws7);
    free(ws8);
  }
}
