// sgnn_narrow.h: bfloat16 and float16 storage types for kernels whose operands are stored narrow.
// Values convert to float on every read (exact) and kernels accumulate in float; each output
// element is assigned once, rounded to nearest even (float16 overflow gives inf, like torch). Vector loads use AVX-512 BF16 / F16C conversions when the CPU
// has them, shifts and scalar conversions under SG_PORTABLE (sgnn.config(portable_math=True)).
#pragma once
#include <string.h>
#include <immintrin.h>

namespace sg {

// bfloat16: the high half of a float, so widening is a 16-bit shift.
struct bf16 {
  uint16_t bits;
  operator float() const {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  bf16& operator=(float f) {  // round to nearest even; NaN stays a (quiet) NaN
    uint32_t u;
    memcpy(&u, &f, 4);
    bits = (u & 0x7fffffffu) > 0x7f800000u ? uint16_t((u >> 16) | 0x40u)
                                          : uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return *this;
  }
};

// IEEE binary16.
struct f16 {
  uint16_t bits;
  operator float() const {
#if defined(__F16C__) && !defined(SG_PORTABLE)
    return _cvtsh_ss(bits);
#else
    _Float16 h;
    memcpy(&h, &bits, 2);
    return float(h);
#endif
  }
  f16& operator=(float f) {  // round to nearest even (g++ vectorises this with F16C's vcvtps2ph)
    const _Float16 h = (_Float16)f;
    memcpy(&bits, &h, 2);
    return *this;
  }
};

typedef uint16_t h16v __attribute__((vector_size(32), aligned(2)));  // 16 raw halves, unaligned
typedef uint32_t u32v __attribute__((vector_size(64)));

// 16 floats from 16 bfloat16 (one 256-bit load).
inline vec<float>::v load(const bf16* p) {
#if defined(__AVX512BF16__) && !defined(SG_PORTABLE)
  return (vec<float>::v)_mm512_cvtpbh_ps((__m256bh)_mm256_loadu_si256((const __m256i*)p));
#else
  const u32v w = __builtin_convertvector(*(const h16v*)p, u32v) << 16;
  return (vec<float>::v)w;
#endif
}

// 16 floats from 16 float16.
inline vec<float>::v load(const f16* p) {
#if defined(__AVX512F__) && !defined(SG_PORTABLE)
  return (vec<float>::v)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p));
#else
  vec<float>::v r;
  for (int l = 0; l < 16; l++) r[l] = float(p[l]);
  return r;
#endif
}

}  // namespace sg
