// The AVX2 kernels (compiled with AVX2, FMA and F16C; run only where the CPU
// reports them): a chunk's 64 bytes as two halves of 8 rows, each widened
// to int16 in two vectors of 4 rows by 4 columns; vpmaddwd multiplies them
// by the 4 int16 activations of those columns, broadcast, and adds each
// row's column pairs into int32 lanes, folded into one sum per row at the
// end of a sub-block; tiles of 4 activation rows share each unpacked chunk
// (then 2, then 1). 8-bit weights are kept signed (s = u - 128), so the
// 128 * sum(x) they leave out goes into the m term.
#include <immintrin.h>

#include <cstring>

#include "kernels/quant_kernels.h"

namespace modelbench::quant {
namespace {

// 8 scales, fp16 or fp32.
template <bool F32>
inline __m256 load_scales(const uint8_t* p) {
  if constexpr (F32) return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline __m256i broadcast4(const int16_t* p) {
  int64_t v;
  std::memcpy(&v, p, 8);
  return _mm256_set1_epi64x(v);
}

// 32 bits -> 32 bytes of 0xFF where the bit is set (llama.cpp's bytes_from_bits_32).
inline __m256i bytes_from_bits(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  const __m256i shuffle = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
  __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), shuffle);
  bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

// Chunk c's weights of rows 8h .. 8h + 3 (a) and 8h + 4 .. 8h + 7 (b) as
// int16: u for bits 4 and 5, u - 128 for bits 8.
template <int Bits>
inline void chunk_weights(const uint8_t* quants, int c, int h, __m256i& a, __m256i& b) {
  if constexpr (Bits == 8) {
    const uint8_t* p = quants + 64 * c + 32 * h;
    a = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    b = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)));
  } else {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants + 64 * (c / 2) + 32 * h));
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m256i w = (c % 2 == 0) ? _mm256_and_si256(v, low) : _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    if constexpr (Bits == 5)
      w = _mm256_or_si256(w, _mm256_and_si256(bytes_from_bits(quants + 256 + 8 * c + 4 * h), _mm256_set1_epi8(0x10)));
    a = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(w));
    b = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(w, 1));
  }
}

template <int Bits, int Group, bool F32, int R>
void tile(const QuantLayout& w, const QuantizedRows& x, int64_t i0, float* out, int64_t ld_out, int64_t g, int h) {
  constexpr int kSubs = 32 / Group;
  constexpr int kChunks = Group / 4;
  constexpr int kSubBytes = F32 ? 128 : 64;
  constexpr int kScale = F32 ? 4 : 2;
  __m256 accf[R];
  for (int r = 0; r < R; ++r) accf[r] = _mm256_setzero_ps();
  const int64_t sums_per_row = x.cols / 16;
  for (int64_t b = 0; b < w.blocks; ++b) {
    const uint8_t* block = w.data + (g * w.blocks + b) * w.block_bytes;
    const uint8_t* quants = block + kSubBytes * kSubs;
    for (int s = 0; s < kSubs; ++s) {
      __m256i acc_a[R], acc_b[R];
      for (int r = 0; r < R; ++r) acc_a[r] = acc_b[r] = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int k = 0; k < kChunks; ++k) {
        const int c = s * kChunks + k;
        __m256i wa, wb;
        chunk_weights<Bits>(quants, c, h, wa, wb);
        for (int r = 0; r < R; ++r) {
          const __m256i xv = broadcast4(x.q + (i0 + r) * x.cols + 32 * b + 4 * c);
          acc_a[r] = _mm256_add_epi32(acc_a[r], _mm256_madd_epi16(wa, xv));
          acc_b[r] = _mm256_add_epi32(acc_b[r], _mm256_madd_epi16(wb, xv));
        }
      }
      const __m256 d = load_scales<F32>(block + kSubBytes * s + 8 * kScale * h);
      __m256 m = load_scales<F32>(block + kSubBytes * s + kSubBytes / 2 + 8 * kScale * h);
      if constexpr (Bits == 8) m = _mm256_fmadd_ps(d, _mm256_set1_ps(128.0f), m);  // the signed bytes' offset
      for (int r = 0; r < R; ++r) {
        // pairs -> rows 0 1 4 5 | 2 3 6 7 -> rows 0 .. 7
        const __m256i sum = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc_a[r], acc_b[r]), 0xD8);
        const float dx = x.scale[(i0 + r) * w.blocks + b];
        const int32_t* sums = x.sums + (i0 + r) * sums_per_row + 2 * b + s * (Group / 16);
        const int32_t xsum = Group == 32 ? sums[0] + sums[1] : sums[0];
        accf[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(d, _mm256_set1_ps(dx)), accf[r]);
        accf[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(dx * static_cast<float>(xsum)), accf[r]);
      }
    }
  }
  const int64_t first = 16 * g + 8 * h;
  const int64_t valid = w.rows - first;
  for (int r = 0; r < R; ++r) {
    float* dst = out + (i0 + r) * ld_out + first;
    if (valid >= 8) {
      _mm256_storeu_ps(dst, accf[r]);
    } else {
      float tmp[8];
      _mm256_storeu_ps(tmp, accf[r]);
      for (int64_t n = 0; n < valid; ++n) dst[n] = tmp[n];
    }
  }
}

template <int Bits, int Group, bool F32>
void run(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
         int64_t group_end) {
  for (int64_t g = group_begin; g < group_end; ++g) {
    for (int h = 0; h < 2 && 16 * g + 8 * h < w.rows; ++h) {
      int64_t i = 0;  // tiles of 4 rows, then 2
      for (; i + 4 <= x.num_rows; i += 4) tile<Bits, Group, F32, 4>(w, x, i, out, ld_out, g, h);
      for (; i + 2 <= x.num_rows; i += 2) tile<Bits, Group, F32, 2>(w, x, i, out, ld_out, g, h);
      if (i < x.num_rows) tile<Bits, Group, F32, 1>(w, x, i, out, ld_out, g, h);
    }
  }
}

}  // namespace

void qgemm_avx2(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
           int64_t group_end) {
  const bool f32 = w.scale_bytes == 4;
  if (w.bits == 4)
    return f32 ? run<4, 32, true>(w, x, out, ld_out, group_begin, group_end)
               : run<4, 32, false>(w, x, out, ld_out, group_begin, group_end);
  if (w.bits == 5)
    return f32 ? run<5, 32, true>(w, x, out, ld_out, group_begin, group_end)
               : run<5, 32, false>(w, x, out, ld_out, group_begin, group_end);
  if (w.group == 16) return run<8, 16, true>(w, x, out, ld_out, group_begin, group_end);  // Q6_K
  return run<8, 32, false>(w, x, out, ld_out, group_begin, group_end);                  // Q8_0
}

}  // namespace modelbench::quant
