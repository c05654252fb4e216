// The int8 KV cache's decode scores (attention_decode.cpp includes this in
// every instruction-set build): pair-major keys (hadamard.h) against int16
// query heads, a block's keys per vector.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/hadamard.h"
#include "kernels/simd.h"

namespace modelbench {

// An int8 pool's scores, a block at a time. Its keys are pair-major
// (hadamard.h): one load gives pair p (dims 2p, 2p + 1) of every key of the
// block, so the products of a query head's int16 pair (q16[2p], q16[2p + 1],
// broadcast) with it sum into one vector whose lanes are the block's keys
// (vpdpwssd; vpmaddwd and an add on AVX2): no reduction across lanes, and a
// key's bytes widened once for all of its KV head's query heads. The query
// rows are int16 with a scale each (q = q16 * qs: 15 bits, where K has 8).
// scores[g * block_size + j] = qs[g] * ks[j] * (q16[g] . key j) for every
// j < block_size (the caller reads the valid ones). Integer sums: exact.
constexpr int64_t kMaxInt8QueryDim = 256;  // q16's room per query head, in decode_one
inline void int8_block_scores(const int16_t* q16, const float* qs, const int8_t* keys, const float* ks,
                              int64_t head_dim, int64_t group, int64_t block_size, float* scores,
                              const int8_t* ahead) {
  [[maybe_unused]] const int64_t pairs = head_dim / 2;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if (block_size == 16) {
    for (int64_t g0 = 0; g0 < group; g0 += 4) {
      const int64_t n = std::min<int64_t>(4, group - g0);
      __m512i sum[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                        _mm512_setzero_si512()};
      for (int64_t p = 0; p < pairs; ++p) {
        if (ahead != nullptr && g0 == 0 && p % 2 == 0) __builtin_prefetch(ahead + p * 32, 0, 2);  // a line per 2 pairs
        const __m512i k = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + p * 32)));
        for (int64_t i = 0; i < n; ++i) {
          int32_t pair;
          std::memcpy(&pair, q16 + (g0 + i) * head_dim + 2 * p, sizeof(pair));
#if defined(__AVX512VNNI__)
          sum[i] = _mm512_dpwssd_epi32(sum[i], _mm512_set1_epi32(pair), k);
#else
          sum[i] = _mm512_add_epi32(sum[i], _mm512_madd_epi16(_mm512_set1_epi32(pair), k));
#endif
        }
      }
      const __m512 key_scales = _mm512_loadu_ps(ks);
      for (int64_t i = 0; i < n; ++i)
        _mm512_storeu_ps(scores + (g0 + i) * block_size,
                         _mm512_mul_ps(_mm512_cvtepi32_ps(sum[i]), _mm512_mul_ps(key_scales, _mm512_set1_ps(qs[g0 + i]))));
    }
    return;
  }
#elif defined(__AVX2__)
  if (block_size % 8 == 0) {
    for (int64_t j0 = 0; j0 < block_size; j0 += 8) {  // 8 keys a vector
      for (int64_t g0 = 0; g0 < group; g0 += 4) {
        const int64_t n = std::min<int64_t>(4, group - g0);
        __m256i sum[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                          _mm256_setzero_si256()};
        for (int64_t p = 0; p < pairs; ++p) {
          if (ahead != nullptr && j0 == 0 && g0 == 0 && p % 2 == 0)
            __builtin_prefetch(ahead + p * 2 * block_size, 0, 2);
          const __m256i k = _mm256_cvtepi8_epi16(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(keys + p * 2 * block_size + 2 * j0)));
          for (int64_t i = 0; i < n; ++i) {
            int32_t pair;
            std::memcpy(&pair, q16 + (g0 + i) * head_dim + 2 * p, sizeof(pair));
            sum[i] = _mm256_add_epi32(sum[i], _mm256_madd_epi16(_mm256_set1_epi32(pair), k));
          }
        }
        const __m256 key_scales = _mm256_loadu_ps(ks + j0);
        for (int64_t i = 0; i < n; ++i)
          _mm256_storeu_ps(scores + (g0 + i) * block_size + j0,
                           _mm256_mul_ps(_mm256_cvtepi32_ps(sum[i]), _mm256_mul_ps(key_scales, _mm256_set1_ps(qs[g0 + i]))));
      }
    }
    return;
  }
#endif
  (void)ahead;
  for (int64_t g = 0; g < group; ++g)  // portable: the same integer sums
    for (int64_t j = 0; j < block_size; ++j) {
      int32_t sum = 0;
      for (int64_t d = 0; d < head_dim; ++d)
        sum += static_cast<int32_t>(q16[g * head_dim + d]) * keys[int8_key_offset(j, d, block_size)];
      scores[g * block_size + j] = static_cast<float>(sum) * (ks[j] * qs[g]);
    }
}

// Query rows as int16 with a scale each: qs = max |q| / 32767, q16 = round(q / qs).
inline void int16_queries(const float* q, int64_t rows, int64_t head_dim, int16_t* q16, float* qs) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = q + r * head_dim;
    float absmax = 0.0f;
    for (int64_t d = 0; d < head_dim; ++d) absmax = std::max(absmax, std::fabs(x[d]));
    const float inverse = absmax > 0.0f ? 32767.0f / absmax : 0.0f;
    for (int64_t d = 0; d < head_dim; ++d) {
      float v = std::nearbyint(x[d] * inverse);
      v = v > 32767.0f ? 32767.0f : v;
      v = v < -32767.0f ? -32767.0f : v;
      q16[r * head_dim + d] = static_cast<int16_t>(static_cast<int32_t>(v));
    }
    qs[r] = absmax / 32767.0f;
  }
}

}  // namespace modelbench
