// The AVX2 kernels (compiled with AVX2, FMA and F16C; run only where the CPU
// reports them): a chunk's 64 bytes as two halves of 8 rows; vpmaddubsw
// multiplies unsigned weight bytes by signed activation bytes and adds
// pairs into int16, vpmaddwd adds those pairs into int32. 4- and 5-bit
// weights (u < 32) cannot overflow int16 there; 8-bit ones are kept signed
// (s = u - 128) and multiplied as |s| by the activation with s's sign, so
// the 128 * sum(x) they leave out goes into the m term.
#include <immintrin.h>

#include <cstring>

#include "kernels/quant_kernels.h"

namespace modelbench::quant {
namespace {

inline __m256 load_halves8(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline __m256i broadcast4(const int8_t* p) {
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

// Chunk c's weights of rows 8h .. 8h + 7: unsigned bytes (bits 4, 5) or u - 128 (bits 8).
template <int Bits>
inline __m256i chunk_weights(const uint8_t* quants, int c, int h) {
  if constexpr (Bits == 8) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants + 64 * c + 32 * h));
  } else {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants + 64 * (c / 2) + 32 * h));
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m256i w = (c % 2 == 0) ? _mm256_and_si256(v, low) : _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    if constexpr (Bits == 5)
      w = _mm256_or_si256(w, _mm256_and_si256(bytes_from_bits(quants + 256 + 8 * c + 4 * h), _mm256_set1_epi8(0x10)));
    return w;
  }
}

template <int Bits>
inline __m256i dot(__m256i w, __m256i x) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (Bits == 8) return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w)), ones);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones);
}

template <int Bits, int Group, int R>
void tile(const QuantLayout& w, const QuantizedRows& x, int64_t i0, float* out, int64_t ld_out, int64_t g, int h) {
  constexpr int kSubs = 32 / Group;
  constexpr int kChunks = Group / 4;
  __m256 accf[R];
  for (int r = 0; r < R; ++r) accf[r] = _mm256_setzero_ps();
  const int64_t sums_per_row = x.cols / 16;
  for (int64_t b = 0; b < w.blocks; ++b) {
    const uint8_t* block = w.data + (g * w.blocks + b) * w.block_bytes;
    const uint8_t* quants = block + 64 * kSubs;
    for (int s = 0; s < kSubs; ++s) {
      __m256i acc[R];
      for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int k = 0; k < kChunks; ++k) {
        const int c = s * kChunks + k;
        const __m256i wv = chunk_weights<Bits>(quants, c, h);
        for (int r = 0; r < R; ++r)
          acc[r] = _mm256_add_epi32(acc[r], dot<Bits>(wv, broadcast4(x.q + (i0 + r) * x.cols + 32 * b + 4 * c)));
      }
      const __m256 d = load_halves8(block + 64 * s + 16 * h);
      __m256 m = load_halves8(block + 64 * s + 32 + 16 * h);
      if constexpr (Bits == 8) m = _mm256_fmadd_ps(d, _mm256_set1_ps(128.0f), m);  // the signed bytes' offset
      for (int r = 0; r < R; ++r) {
        const float dx = x.scale[(i0 + r) * w.blocks + b];
        const int32_t* sums = x.sums + (i0 + r) * sums_per_row + 2 * b + s * (Group / 16);
        const int32_t xsum = Group == 32 ? sums[0] + sums[1] : sums[0];
        accf[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r]), _mm256_mul_ps(d, _mm256_set1_ps(dx)), accf[r]);
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

template <int Bits, int Group>
void run(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
         int64_t group_end) {
  for (int64_t g = group_begin; g < group_end; ++g) {
    for (int h = 0; h < 2 && 16 * g + 8 * h < w.rows; ++h) {
      int64_t i = 0;
      for (; i + 4 <= x.num_rows; i += 4) tile<Bits, Group, 4>(w, x, i, out, ld_out, g, h);
      switch (x.num_rows - i) {
        case 3: tile<Bits, Group, 3>(w, x, i, out, ld_out, g, h); break;
        case 2: tile<Bits, Group, 2>(w, x, i, out, ld_out, g, h); break;
        case 1: tile<Bits, Group, 1>(w, x, i, out, ld_out, g, h); break;
        default: break;
      }
    }
  }
}

}  // namespace

void qgemm_avx2(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
                int64_t group_end) {
  if (w.bits == 4) return run<4, 32>(w, x, out, ld_out, group_begin, group_end);
  if (w.bits == 5) return run<5, 32>(w, x, out, ld_out, group_begin, group_end);
  if (w.group == 16) return run<8, 16>(w, x, out, ld_out, group_begin, group_end);
  return run<8, 32>(w, x, out, ld_out, group_begin, group_end);
}

}  // namespace modelbench::quant
