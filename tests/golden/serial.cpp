#include "sgnn_runtime.h"
typedef float T;
extern "C" void sgnn_compute(int64_t N_i, int64_t N_j, const int32_t* a_t0_pos1, const int32_t* a_t0_crd1, const T* a_t0_val, T* SG_RESTRICT out, const int64_t* bounds, int64_t nparts, int32_t nthreads) {
  {
    T ws0[1];
    ws0[0] = T(0);
    for (int64_t v_i = 0; v_i < N_i; v_i++) {
      const int64_t p0_0 = v_i;
      for (int64_t p0_1 = a_t0_pos1[p0_0], p0_1_hi = a_t0_pos1[p0_0 + 1]; p0_1 < p0_1_hi; p0_1++) {
        const int64_t v_j = a_t0_crd1[p0_1];
        ws0[0] += a_t0_val[p0_1];
      }
    }
    out[0] = ws0[0];
  }
}
