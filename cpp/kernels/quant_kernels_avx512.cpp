// The AVX-512 kernels (compiled with AVX512F/BW/VL/DQ, VNNI, F16C; run only
// where the CPU reports them). A chunk's 64 weights, 16 rows by 4 columns,
// widen to two vectors of int16 (rows 0-7, rows 8-15), each lane pair
// holding one row's two columns; vpdpwssd multiplies them by the 4 int16
// activations of those columns, broadcast, and adds each pair into an int32
// lane. Per sub-block the pairs are folded into one sum per row, scaled
// (d * dx) and the m terms (m * dx * sum of the quants) added in fp32. A
// register tile of up to 8 activation rows shares each unpacked chunk.
#include <immintrin.h>

#include <cstring>

#include "kernels/quant_kernels.h"

namespace modelbench::quant {
namespace {

// 16 scales, fp16 or fp32.
template <bool F32>
inline __m512 load_scales(const uint8_t* p) {
  if constexpr (F32) return _mm512_loadu_ps(reinterpret_cast<const float*>(p));
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

inline __m512i broadcast4(const int16_t* p) {
  int64_t v;
  std::memcpy(&v, p, 8);
  return _mm512_set1_epi64(v);
}

// Chunk c's 64 weights of a block as int16, rows 0-7 in `lo`, rows 8-15 in
// `hi`: u for bits 4 and 5, u - 128 for bits 8 (the caller adds 128 * d to m).
template <int Bits>
inline void chunk_weights(const uint8_t* quants, int c, __m512i& lo, __m512i& hi) {
  if constexpr (Bits == 8) {
    lo = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants + 64 * c)));
    hi = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants + 64 * c + 32)));
  } else {
    const __m512i v = _mm512_loadu_si512(quants + 64 * (c / 2));
    const __m512i low = _mm512_set1_epi8(0x0F);
    __m512i w = (c % 2 == 0) ? _mm512_and_si512(v, low) : _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    if constexpr (Bits == 5) {
      uint64_t high;
      std::memcpy(&high, quants + 256 + 8 * c, 8);
      w = _mm512_or_si512(w, _mm512_maskz_set1_epi8(high, 0x10));
    }
    lo = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(w));
    hi = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(w, 1));
  }
}

template <int Bits, int Group, bool F32, int R>
void tile(const QuantLayout& w, const QuantizedRows& x, int64_t i0, float* out, int64_t ld_out, int64_t g) {
  constexpr int kSubs = 32 / Group;
  constexpr int kChunks = Group / 4;  // chunks per sub-block
  constexpr int kSubBytes = F32 ? 128 : 64;
  // Lane pairs (2r, 2r + 1) of lo then hi -> rows 0 .. 15.
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __m512 accf[R];
  for (int r = 0; r < R; ++r) accf[r] = _mm512_setzero_ps();
  const int64_t sums_per_row = x.cols / 16;
  for (int64_t b = 0; b < w.blocks; ++b) {
    const uint8_t* block = w.data + (g * w.blocks + b) * w.block_bytes;
    const uint8_t* quants = block + kSubBytes * kSubs;
    if (b + 1 < w.blocks) _mm_prefetch(reinterpret_cast<const char*>(block + w.block_bytes + 256), _MM_HINT_T0);
    for (int s = 0; s < kSubs; ++s) {
      __m512i acc_lo[R], acc_hi[R];
      for (int r = 0; r < R; ++r) acc_lo[r] = acc_hi[r] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int k = 0; k < kChunks; ++k) {
        const int c = s * kChunks + k;
        __m512i lo, hi;
        chunk_weights<Bits>(quants, c, lo, hi);
        for (int r = 0; r < R; ++r) {
          const __m512i xv = broadcast4(x.q + (i0 + r) * x.cols + 32 * b + 4 * c);
          acc_lo[r] = _mm512_dpwssd_epi32(acc_lo[r], lo, xv);
          acc_hi[r] = _mm512_dpwssd_epi32(acc_hi[r], hi, xv);
        }
      }
      const __m512 d = load_scales<F32>(block + kSubBytes * s);
      __m512 m = load_scales<F32>(block + kSubBytes * s + kSubBytes / 2);
      if constexpr (Bits == 8) m = _mm512_fmadd_ps(d, _mm512_set1_ps(128.0f), m);  // the signed bytes' offset
      for (int r = 0; r < R; ++r) {
        const __m512i sum = _mm512_add_epi32(_mm512_permutex2var_epi32(acc_lo[r], even, acc_hi[r]),
                                             _mm512_permutex2var_epi32(acc_lo[r], odd, acc_hi[r]));
        const float dx = x.scale[(i0 + r) * w.blocks + b];
        const int32_t* sums = x.sums + (i0 + r) * sums_per_row + 2 * b + s * (Group / 16);
        const int32_t xsum = Group == 32 ? sums[0] + sums[1] : sums[0];
        accf[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(d, _mm512_set1_ps(dx)), accf[r]);
        accf[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(dx * static_cast<float>(xsum)), accf[r]);
      }
    }
  }
  const int64_t valid = w.rows - 16 * g;
  const __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out + (i0 + r) * ld_out + 16 * g, mask, accf[r]);
}

template <int Bits, int Group, bool F32>
void run(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
         int64_t group_end) {
  for (int64_t g = group_begin; g < group_end; ++g) {
    int64_t i = 0;
    // 8 rows a tile where there are as many (each unpacked chunk shared by
    // more rows; 16 int32 and 8 float accumulators fit the 32 registers),
    // then 4. A row's arithmetic is the same in a tile of any size.
    for (; i + 8 <= x.num_rows; i += 8) tile<Bits, Group, F32, 8>(w, x, i, out, ld_out, g);
    for (; i + 4 <= x.num_rows; i += 4) tile<Bits, Group, F32, 4>(w, x, i, out, ld_out, g);
    switch (x.num_rows - i) {
      case 3: tile<Bits, Group, F32, 3>(w, x, i, out, ld_out, g); break;
      case 2: tile<Bits, Group, F32, 2>(w, x, i, out, ld_out, g); break;
      case 1: tile<Bits, Group, F32, 1>(w, x, i, out, ld_out, g); break;
      default: break;
    }
  }
}

}  // namespace

void qgemm_avx512(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
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

void quantize_rows_avx512(const float* x, int64_t num_rows, int64_t cols, int16_t* q, float* scale, int32_t* sums) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t i = 0; i < num_rows; ++i) {
    for (int64_t b = 0; b < cols / 32; ++b) {
      const float* v = x + i * cols + 32 * b;
      const __m512 lo = _mm512_loadu_ps(v);
      const __m512 hi = _mm512_loadu_ps(v + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, lo), _mm512_andnot_ps(sign, hi)));
      const float d = amax / 32767.0f;
      const __m512 id = _mm512_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
      scale[i * (cols / 32) + b] = d;
      // vcvtps2dq rounds to nearest even, as nearbyint does in the portable kernel.
      const __m512i qlo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, id));
      const __m512i qhi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, id));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i * cols + 32 * b), _mm512_cvtsepi32_epi16(qlo));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i * cols + 32 * b + 16), _mm512_cvtsepi32_epi16(qhi));
      sums[i * (cols / 16) + 2 * b] = _mm512_reduce_add_epi32(qlo);
      sums[i * (cols / 16) + 2 * b + 1] = _mm512_reduce_add_epi32(qhi);
    }
  }
}

}  // namespace modelbench::quant
