// The AVX2 kernels (compiled with AVX2, FMA and F16C; run only where the CPU
// reports them). A chunk's 32 bytes for 8 rows (4 bytes a row: its columns
// 0-3) are split with shifts and masks, in place in each 16-bit lane, into
// two vectors of int16: the even bytes (columns 0 and 2 of each row) and the
// odd bytes (columns 1 and 3), so each 32-bit lane holds one row's pair and
// vpmaddwd with the activations' pairs (x0, x2) and (x1, x3), broadcast,
// adds that row's products into its own lane: the accumulator's 8 lanes are
// the 8 rows, with no horizontal add and no lane-crossing shuffle (the
// widening shuffles this replaced took the shuffle port the multiplies
// wait on). The activations come in that pair order (quantize_rows_avx2).
// Tiles of 8 activation rows share each split chunk (then 4, 2, 1); every
// row's integer sums are exact and its float fold per sub-block the same
// in every tile, so a row's result does not depend on the batch. 8-bit
// weights are kept signed (s = u - 128), so the 128 * sum(x) they leave out
// goes into the m term.
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

inline __m256i broadcast2(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
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

// Chunk c's weights of rows 8h .. 8h + 7 as int16, split into columns
// (0, 2) (`even`) and (1, 3) (`odd`) of each row: u for bits 4 and 5,
// u - 128 for bits 8.
template <int Bits>
inline void chunk_weights(const uint8_t* quants, int c, int h, __m256i& even, __m256i& odd) {
  if constexpr (Bits == 8) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants + 64 * c + 32 * h));
    even = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
    odd = _mm256_srai_epi16(v, 8);
  } else {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants + 64 * (c / 2) + 32 * h));
    const __m256i nibble = _mm256_set1_epi16(0x000F);
    if (c % 2 == 0) {  // the low nibbles
      even = _mm256_and_si256(v, nibble);
      odd = _mm256_and_si256(_mm256_srli_epi16(v, 8), nibble);
    } else {  // the high nibbles
      even = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
      odd = _mm256_srli_epi16(v, 12);
    }
    if constexpr (Bits == 5) {  // bit 4 of each weight: a byte 0x10 where it is set
      const __m256i high = _mm256_and_si256(bytes_from_bits(quants + 256 + 8 * c + 4 * h), _mm256_set1_epi8(0x10));
      even = _mm256_or_si256(even, _mm256_and_si256(high, _mm256_set1_epi16(0x00FF)));
      odd = _mm256_or_si256(odd, _mm256_srli_epi16(high, 8));
    }
  }
}

// Rows [i0, i0 + R) of x against rows 16g + 8h .. of the weights for each
// h in [h0, h0 + H): H = 1 (one half of the group, 8-row tiles of a large
// batch) or H = 2 (the whole group, small batches: each 64-byte line of
// the weights is read once, in order, and a broadcast serves both halves).
// With `next`, the next group's bytes are prefetched along the way (a
// batch of a few rows streams the weights and computes little per byte).
template <int Bits, int Group, bool F32, int R, int H>
__attribute__((noinline)) void tile(const QuantLayout& w, const QuantizedRows& x, int64_t i0, float* out, int64_t ld_out, int64_t g, int h0,
          const uint8_t* next) {
  constexpr int kSubs = 32 / Group;
  constexpr int kChunks = Group / 4;
  constexpr int kSubBytes = F32 ? 128 : 64;
  constexpr int kScale = F32 ? 4 : 2;
  // The float sums stay in memory, touched once a sub-block: in registers
  // they would crowd out the R * H integer accumulators (16 registers in all).
  alignas(32) float accf[H][R][8] = {};
  asm volatile("" : : "r"(&accf[0][0][0]) : "memory");
  const int64_t sums_per_row = x.cols / 16;
  const int16_t* xq[R];
  for (int r = 0; r < R; ++r) xq[r] = x.q + (i0 + r) * x.cols;
  const int64_t lines_per_block = (w.block_bytes + 63) / 64;
  for (int64_t b = 0; b < w.blocks; ++b) {
    const uint8_t* block = w.data + (g * w.blocks + b) * w.block_bytes;
    const uint8_t* quants = block + kSubBytes * kSubs;
    if (next != nullptr)
      for (int64_t l = 0; l < lines_per_block; ++l) _mm_prefetch(reinterpret_cast<const char*>(next + b * w.block_bytes + 64 * l), _MM_HINT_T0);
    for (int s = 0; s < kSubs; ++s) {
      __m256i acc[H][R];
      for (int j = 0; j < H; ++j)
        for (int r = 0; r < R; ++r) acc[j][r] = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int k = 0; k < kChunks; ++k) {
        const int c = s * kChunks + k;
        for (int j = 0; j < H; ++j) {
          __m256i even, odd;
          chunk_weights<Bits>(quants, c, h0 + j, even, odd);
          for (int r = 0; r < R; ++r) {
            const int16_t* xc = xq[r] + 32 * b + 4 * c;
            acc[j][r] = _mm256_add_epi32(acc[j][r], _mm256_madd_epi16(even, broadcast2(xc)));
            acc[j][r] = _mm256_add_epi32(acc[j][r], _mm256_madd_epi16(odd, broadcast2(xc + 2)));
            // Integer adds reassociate: without this GCC sums a sub-block's
            // products as a tree, each product stored to the stack first.
            asm("" : "+x"(acc[j][r]));
          }
        }
      }
      for (int j = 0; j < H; ++j) {
        const int h = h0 + j;
        const __m256 d = load_scales<F32>(block + kSubBytes * s + 8 * kScale * h);
        __m256 m = load_scales<F32>(block + kSubBytes * s + kSubBytes / 2 + 8 * kScale * h);
        if constexpr (Bits == 8) m = _mm256_fmadd_ps(d, _mm256_set1_ps(128.0f), m);  // the signed bytes' offset
        for (int r = 0; r < R; ++r) {
          const float dx = x.scale[(i0 + r) * w.blocks + b];
          const int32_t* sums = x.sums + (i0 + r) * sums_per_row + 2 * b + s * (Group / 16);
          const int32_t xsum = Group == 32 ? sums[0] + sums[1] : sums[0];
          __m256 f = _mm256_load_ps(accf[j][r]);
          f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[j][r]), _mm256_mul_ps(d, _mm256_set1_ps(dx)), f);
          f = _mm256_fmadd_ps(m, _mm256_set1_ps(dx * static_cast<float>(xsum)), f);
          _mm256_store_ps(accf[j][r], f);
        }
      }
      asm volatile("" : : : "memory");
    }
  }
  for (int j = 0; j < H; ++j) {
    const int64_t first = 16 * g + 8 * (h0 + j);
    const int64_t valid = w.rows - first < 8 ? w.rows - first : 8;
    if (valid <= 0) continue;
    for (int r = 0; r < R; ++r) std::memcpy(out + (i0 + r) * ld_out + first, accf[j][r], sizeof(float) * valid);
  }
}

template <int Bits, int Group, bool F32>
void run(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
         int64_t group_end) {
  for (int64_t g = group_begin; g < group_end; ++g) {
    const bool both = 16 * g + 8 < w.rows;  // the group's second half has rows
    int64_t i = 0;  // 8-row tiles over one half at a time, then 4, 2 and 1 over both halves
    for (int h = 0; h < (both ? 2 : 1) && x.num_rows >= 8; ++h)
      for (i = 0; i + 8 <= x.num_rows; i += 8) tile<Bits, Group, F32, 8, 1>(w, x, i, out, ld_out, g, h, nullptr);
    const uint8_t* next = x.num_rows < 8 && g + 1 < group_end ? w.data + (g + 1) * w.blocks * w.block_bytes : nullptr;
    if (i + 4 <= x.num_rows) tile<Bits, Group, F32, 4, 2>(w, x, i, out, ld_out, g, 0, next), i += 4, next = nullptr;
    if (i + 2 <= x.num_rows) tile<Bits, Group, F32, 2, 2>(w, x, i, out, ld_out, g, 0, next), i += 2, next = nullptr;
    if (i < x.num_rows) tile<Bits, Group, F32, 1, 2>(w, x, i, out, ld_out, g, 0, next);
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

void quantize_rows_avx2(const float* x, int64_t num_rows, int64_t cols, int16_t* q, float* scale, int32_t* sums) {
  // The portable quantizer's numbers (quantize_rows_generic: the same
  // scale, and vcvtps2dq rounds to nearest even as its nearbyint does),
  // vectorized: that one calls libm for every value, about 80 us for 32
  // rows of 576, more than the kernel takes for a small matrix.
  const __m256 sign = _mm256_set1_ps(-0.0f);
  // Each 4 columns (x0, x1, x2, x3) -> (x0, x2, x1, x3): the pairs qgemm_avx2 broadcasts.
  const __m256i order = _mm256_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15,  //
                                         0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15);
  for (int64_t i = 0; i < num_rows; ++i) {
    for (int64_t b = 0; b < cols / 32; ++b) {
      const float* v = x + i * cols + 32 * b;
      __m256 part[4];
      __m256 amax = _mm256_setzero_ps();
      for (int j = 0; j < 4; ++j) {
        part[j] = _mm256_loadu_ps(v + 8 * j);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, part[j]));
      }
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float d = _mm_cvtss_f32(m4) / 32767.0f;
      const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
      scale[i * (cols / 32) + b] = d;
      for (int h = 0; h < 2; ++h) {
        const __m256i lo = _mm256_cvtps_epi32(_mm256_mul_ps(part[2 * h], id));
        const __m256i hi = _mm256_cvtps_epi32(_mm256_mul_ps(part[2 * h + 1], id));
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i * cols + 32 * b + 16 * h),
                            _mm256_shuffle_epi8(packed, order));
        const __m256i s8 = _mm256_add_epi32(lo, hi);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        sums[i * (cols / 16) + 2 * b + h] = _mm_cvtsi128_si32(s4);
      }
    }
  }
}

}  // namespace modelbench::quant
