// bf16 <-> fp32 in AVX-512 registers, shared by the kernels that read or
// write bf16 (decode attention, the fused ops, the bf16 linear): a bf16 is
// the high half of an fp32, so widening is a zero-extend and a shift.
#pragma once

#include <c10/util/BFloat16.h>

#if defined(__AVX512F__)
#include <immintrin.h>

namespace modelbench {

// 16 bf16 values, their bits in 16-bit lanes, as fp32.
inline __m512 bf16x16_to_fp32(__m256i bits) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

inline __m512 load_bf16x16(const c10::BFloat16* p) {
  return bf16x16_to_fp32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

}  // namespace modelbench

#endif
