// fp32 vectors of the widest ISA the build targets, and the handful of
// operations the register-tiled kernels (the packed linear, decode
// attention) are written in: AVX-512 (16 lanes, 32 registers) or AVX2 with
// FMA (8 lanes, 16 registers). A kernel written once over `vfloat` and
// `kLanes` picks its tile shapes from kRegisters. MODELBENCH_SIMD is
// defined when either is there; the kernels keep portable loops for the rest.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#define MODELBENCH_SIMD 1
#include <immintrin.h>

#include "kernels/simd_bf16.h"

namespace modelbench::simd {

#if defined(__AVX512F__)

using vfloat = __m512;
constexpr int kLanes = 16;
constexpr int kRegisters = 32;

inline vfloat zero() { return _mm512_setzero_ps(); }
inline vfloat set1(float v) { return _mm512_set1_ps(v); }
inline vfloat load(const float* p) { return _mm512_loadu_ps(p); }
inline vfloat load(const c10::BFloat16* p) { return load_bf16x16(p); }
inline vfloat load(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline vfloat load(const int8_t* p) {  // an int8 KV row's values, unscaled
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline void store(float* p, vfloat v) { _mm512_storeu_ps(p, v); }
inline vfloat add(vfloat a, vfloat b) { return _mm512_add_ps(a, b); }
inline vfloat sub(vfloat a, vfloat b) { return _mm512_sub_ps(a, b); }
inline vfloat max(vfloat a, vfloat b) { return _mm512_max_ps(a, b); }  // b where either is NaN
inline vfloat mul(vfloat a, vfloat b) { return _mm512_mul_ps(a, b); }
inline vfloat fmadd(vfloat a, vfloat b, vfloat c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
inline float reduce_add(vfloat v) { return _mm512_reduce_add_ps(v); }
inline float reduce_max(vfloat v) { return _mm512_reduce_max_ps(v); }
// The sums of four vectors, {sum(a), sum(b), sum(c), sum(d)}: one reduction
// for four dot products instead of four. Each sum takes the same tree of adds
// whichever argument it is (lanes 4i..4i+3 paired alike, then the four
// 128-bit quarters), so a dot product's value does not depend on its slot.
inline __m128 reduce_add4(vfloat a, vfloat b, vfloat c, vfloat d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // a0+a2 b0+b2 a1+a3 b1+b3
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 quarters = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                        _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));  // per quarter: a b c d
  const __m256 halves = _mm256_add_ps(_mm512_castps512_ps256(quarters), _mm512_extractf32x8_ps(quarters, 1));
  return _mm_add_ps(_mm256_castps256_ps128(halves), _mm256_extractf128_ps(halves, 1));
}
// Bit l set where lane l of a is NaN; where a == b (neither NaN).
inline unsigned nan_lanes(vfloat a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
inline unsigned equal_lanes(vfloat a, vfloat b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }

#else

using vfloat = __m256;
constexpr int kLanes = 8;
constexpr int kRegisters = 16;

inline vfloat zero() { return _mm256_setzero_ps(); }
inline vfloat set1(float v) { return _mm256_set1_ps(v); }
inline vfloat load(const float* p) { return _mm256_loadu_ps(p); }
inline vfloat load(const c10::BFloat16* p) {  // a bf16 is the high half of an fp32
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
inline vfloat load(const c10::Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline vfloat load(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline void store(float* p, vfloat v) { _mm256_storeu_ps(p, v); }
inline vfloat add(vfloat a, vfloat b) { return _mm256_add_ps(a, b); }
inline vfloat sub(vfloat a, vfloat b) { return _mm256_sub_ps(a, b); }
inline vfloat max(vfloat a, vfloat b) { return _mm256_max_ps(a, b); }  // b where either is NaN
inline vfloat mul(vfloat a, vfloat b) { return _mm256_mul_ps(a, b); }
inline vfloat fmadd(vfloat a, vfloat b, vfloat c) { return _mm256_fmadd_ps(a, b, c); }  // a * b + c
inline float reduce_add(vfloat v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float reduce_max(vfloat v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline unsigned nan_lanes(vfloat a) { return _mm256_movemask_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q)); }
inline unsigned equal_lanes(vfloat a, vfloat b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)); }
// The sums of four vectors, {sum(a), sum(b), sum(c), sum(d)}: one reduction
// for four dot products instead of four.
inline __m128 reduce_add4(vfloat a, vfloat b, vfloat c, vfloat d) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));  // per 128-bit half: a b c d
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

#endif

// The largest power of two <= n (n >= 1): tile widths in vectors divide a panel's.
constexpr int floor_pow2(int n) { return n >= 2 ? 2 * floor_pow2(n / 2) : 1; }

}  // namespace modelbench::simd

#endif
