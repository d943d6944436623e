#include "sgnn_runtime.h"
typedef float T;
extern "C" void sgnn_compute(int64_t N_i, int64_t N_j, int64_t N_k, const int32_t* a_t0_pos1, const int32_t* a_t0_crd1, const T* a_t0_val, const T* a_t1, const T* a_t2, T* SG_RESTRICT out_val, const int64_t* bounds, int64_t nparts, int32_t nthreads) {
  #pragma omp parallel num_threads(nthreads)
  {
    #pragma omp for schedule(dynamic, 1)
    for (int64_t part = 0; part < nparts; part++) {
      for (int64_t v_i = bounds[part]; v_i < bounds[part + 1]; v_i++) {
        const int64_t p0_0 = v_i;
        for (int64_t p0_1 = a_t0_pos1[p0_0], p0_1_hi = a_t0_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
          const int64_t v_j = a_t0_crd1[p0_1];
          T ws0[1];
          ws0[0] = T(0);
          T ws0_acc = ws0[0];
          #pragma omp simd reduction(+:ws0_acc)
          for (int64_t v_k = 0; v_k < N_k; v_k++) {
            ws0_acc += (a_t1[(v_i) * N_k + v_k] * a_t2[(v_j) * N_k + v_k]);
          }
          ws0[0] = ws0_acc;
          out_val[p0_1] = (a_t0_val[p0_1] * ws0[0]);
        }
      }
    }
  }
}
