#include "sgnn_runtime.h"
typedef float T;
extern "C" void sgnn_count(int64_t N_i, int64_t N_j, const int32_t* a_A_pos1, const int32_t* a_A_crd1, const T* a_A_val, const int32_t* a_B_pos1, const int32_t* a_B_crd1, const T* a_B_val, int64_t* SG_RESTRICT out_pos, int64_t* SG_RESTRICT out_crd, T* SG_RESTRICT out_val, const int64_t* bounds, int64_t nparts, int32_t nthreads) {
  #pragma omp parallel num_threads(nthreads)
  {
    #pragma omp for schedule(dynamic, 1)
    for (int64_t part = 0; part < nparts; part++) {
      for (int64_t v_i = bounds[part]; v_i < bounds[part + 1]; v_i++) {
        const int64_t p0_0 = v_i;
        const int64_t p1_0 = v_i;
        int64_t cnt = 0;
        int64_t p0_1 = a_A_pos1[p0_0];
        const int64_t p0_1_end = a_A_pos1[p0_0 + 1];
        int64_t p1_1 = a_B_pos1[p1_0];
        const int64_t p1_1_end = a_B_pos1[p1_0 + 1];
        while ((p0_1 < p0_1_end) || (p1_1 < p1_1_end)) {
          const int64_t v_j = sg::min<int64_t>((p0_1 < p0_1_end ? (int64_t)a_A_crd1[p0_1] : INT64_MAX), (p1_1 < p1_1_end ? (int64_t)a_B_crd1[p1_1] : INT64_MAX));
          const bool in_p0_1 = p0_1 < p0_1_end && a_A_crd1[p0_1] == v_j;
          const bool in_p1_1 = p1_1 < p1_1_end && a_B_crd1[p1_1] == v_j;
          if (in_p0_1 || in_p1_1) {
            cnt += 1;
          }
          p0_1 += in_p0_1;
          p1_1 += in_p1_1;
        }
        out_pos[v_i + 1] = cnt;
      }
    }
  }
}
extern "C" void sgnn_compute(int64_t N_i, int64_t N_j, const int32_t* a_A_pos1, const int32_t* a_A_crd1, const T* a_A_val, const int32_t* a_B_pos1, const int32_t* a_B_crd1, const T* a_B_val, int64_t* SG_RESTRICT out_pos, int64_t* SG_RESTRICT out_crd, T* SG_RESTRICT out_val, const int64_t* bounds, int64_t nparts, int32_t nthreads) {
  #pragma omp parallel num_threads(nthreads)
  {
    #pragma omp for schedule(dynamic, 1)
    for (int64_t part = 0; part < nparts; part++) {
      for (int64_t v_i = bounds[part]; v_i < bounds[part + 1]; v_i++) {
        const int64_t p0_0 = v_i;
        const int64_t p1_0 = v_i;
        int64_t qn = out_pos[v_i];
        int64_t p0_1 = a_A_pos1[p0_0];
        const int64_t p0_1_end = a_A_pos1[p0_0 + 1];
        int64_t p1_1 = a_B_pos1[p1_0];
        const int64_t p1_1_end = a_B_pos1[p1_0 + 1];
        while ((p0_1 < p0_1_end) || (p1_1 < p1_1_end)) {
          const int64_t v_j = sg::min<int64_t>((p0_1 < p0_1_end ? (int64_t)a_A_crd1[p0_1] : INT64_MAX), (p1_1 < p1_1_end ? (int64_t)a_B_crd1[p1_1] : INT64_MAX));
          const bool in_p0_1 = p0_1 < p0_1_end && a_A_crd1[p0_1] == v_j;
          const bool in_p1_1 = p1_1 < p1_1_end && a_B_crd1[p1_1] == v_j;
          if (in_p0_1 || in_p1_1) {
            const int64_t q = qn++;
            out_crd[q] = v_j;
            out_val[q] = ((in_p0_1 ? a_A_val[p0_1] : T(0)) + (in_p1_1 ? a_B_val[p1_1] : T(0)));
          }
          p0_1 += in_p0_1;
          p1_1 += in_p1_1;
        }
      }
    }
  }
}
