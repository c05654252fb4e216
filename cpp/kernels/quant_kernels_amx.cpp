// The AMX kernel (compiled with AVX-512, VNNI, AMX-TILE and AMX-INT8; run
// only where the CPU reports them and the kernel grants the tiles). It
// computes the same integers as the AVX-512 kernel and scales them with
// the same fp32 operations in the same order, so its output is equal to
// that kernel's bit for bit and a row's result does not depend on which of
// the two ran (quant_linear picks by the number of rows).
//
// A chunk of the layout (quant_kernels.h: byte 4 * r + e is row r, column
// 4 * chunk + e) is one row of an AMX B tile (K/4 rows of 16 columns x 4
// bytes), so a block's 8 chunks are a B tile of K = 32: bits 8 are loaded
// straight from the weights, bits 4 and 5 after unpacking the nibbles. The
// int16 activations are split into a signed high byte and an unsigned low
// byte (q = 256 * hi + lo, split_rows_amx), two int8 tiles; per sub-block
//   C_hi = hi . u  (tdpbsud, or tdpbssd for the signed bytes of bits 8)
//   C_lo = lo . u  (tdpbuud, or tdpbusd)
// and 256 * C_hi + C_lo is exactly the int32 sum the AVX-512 kernel gets
// from vpdpwssd. Each sub-block's two 16 x 16 sums are stored and folded
// into fp32 accumulators (d * dx, m * dx * sum), 16 rows a tile.
#include <immintrin.h>

#include <cstdlib>
#include <cstring>

#include "kernels/amx_tiles.h"
#include "kernels/quant_kernels.h"

namespace modelbench::quant {
namespace {

using amx::TileConfig;

// Tiles: 0, 1 and 2, 3 two sub-blocks' C_hi, C_lo (16 rows x 16 int32);
// 4, 5 A_hi, A_lo (16 rows x K bytes); 6, 7 two sub-blocks' B (K / 4 rows
// x 64 bytes). K is the sub-block: 32 or 16 weights.
__attribute__((target("amx-tile"))) void configure(int k) {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 4; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  for (int t = 4; t < 6; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = static_cast<uint16_t>(k);
  }
  for (int t = 6; t < 8; ++t) {
    cfg.rows[t] = static_cast<uint8_t>(k / 4);
    cfg.colsb[t] = 64;
  }
  __asm__ __volatile__("" : : "r"(&cfg) : "memory");  // every byte written before ldtilecfg reads them
  _tile_loadconfig(&cfg);
}

template <bool F32>
inline __m512 load_scales(const uint8_t* p) {
  if constexpr (F32) return _mm512_loadu_ps(reinterpret_cast<const float*>(p));
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The block's 8 chunks as bytes u (bits 4 and 5) into b[512].
template <int Bits>
inline void unpack_block(const uint8_t* quants, uint8_t* b) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  for (int j = 0; j < 4; ++j) {
    const __m512i v = _mm512_loadu_si512(quants + 64 * j);
    __m512i even = _mm512_and_si512(v, low);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    if constexpr (Bits == 5) {
      uint64_t high_even, high_odd;
      std::memcpy(&high_even, quants + 256 + 8 * (2 * j), 8);
      std::memcpy(&high_odd, quants + 256 + 8 * (2 * j + 1), 8);
      even = _mm512_or_si512(even, _mm512_maskz_set1_epi8(high_even, 0x10));
      odd = _mm512_or_si512(odd, _mm512_maskz_set1_epi8(high_odd, 0x10));
    }
    _mm512_store_si512(b + 128 * j, even);
    _mm512_store_si512(b + 128 * j + 64, odd);
  }
}

// One sub-block's products into C tiles (CH, CL) with B tile BT (literal
// tile numbers: the intrinsics paste them into the instruction). Tiles 4
// and 5 take the high and low bytes of the 16 rows.
#define MB_AMX_ISSUE(SIGNED_B, CH, CL, BT, b, hi, lo, stride) \
  do {                                                        \
    _tile_zero(CH);                                           \
    _tile_zero(CL);                                           \
    _tile_loadd(BT, b, 64);                                   \
    _tile_loadd(4, hi, stride);                               \
    _tile_loadd(5, lo, stride);                               \
    if constexpr (SIGNED_B) {                                 \
      _tile_dpbssd(CH, 4, BT);                                \
      _tile_dpbusd(CL, 5, BT);                                \
    } else {                                                  \
      _tile_dpbsud(CH, 4, BT);                                \
      _tile_dpbuud(CL, 5, BT);                                \
    }                                                         \
  } while (0)

// acc[r] += (256 * hi + lo) * d * dx + m * dx * sum, for the 16 rows of a
// tile, in the AVX-512 kernel's order of operations.
template <int R>
inline void fold(const int32_t* c_hi, const int32_t* c_lo, __m512 d, __m512 m, const float* dx,
                 const float* dx_sum, __m512 (&acc)[R]) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    const __m512i sum =
        _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(c_hi + 16 * r), 8), _mm512_load_si512(c_lo + 16 * r));
    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(d, _mm512_set1_ps(dx[r])), acc[r]);
    acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(dx_sum[r]), acc[r]);
  }
}

// Row group g's 16 outputs for row tile t (R of its rows are real), over
// every sub-block u, two in flight: the tile unit computes u + 1 (C tiles
// 2, 3 or 0, 1; B tile 7 or 6) while the vector units fold u.
template <int Bits, int Group, bool F32, int R>
__attribute__((target("amx-tile,amx-int8"))) void row_tile(const QuantLayout& w, const QuantizedRows& x,
                                                           const uint8_t* bsrc, int64_t bstride, int64_t g,
                                                           int64_t t, float* out, int64_t ld_out) {
  constexpr int kSubs = 32 / Group;
  constexpr int kSubBytes = F32 ? 128 : 64;
  constexpr int64_t kBBytes = Group / 4 * 64;  // one sub-block's B tile
  constexpr bool kSigned = Bits == 8;
  alignas(64) int32_t c_hi[4][16 * 16];
  alignas(64) int32_t c_lo[4][16 * 16];
  const int64_t units = w.blocks * kSubs;
  const int64_t stride = x.cols;
  const int8_t* hi = x.hi + 16 * t * x.cols;
  const uint8_t* lo = x.lo + 16 * t * x.cols;
  const float* dx = x.dx + t * units * 16;
  const float* dx_sum = x.dx_sum + t * units * 16;
  const uint8_t* group = w.data + g * w.blocks * w.block_bytes;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  auto scales = [&](int64_t u, __m512& d, __m512& m) {
    const uint8_t* block = group + (u / kSubs) * w.block_bytes + kSubBytes * (u % kSubs);
    d = load_scales<F32>(block);
    m = load_scales<F32>(block + kSubBytes / 2);
    if constexpr (Bits == 8) m = _mm512_fmadd_ps(d, _mm512_set1_ps(128.0f), m);  // the signed bytes' offset
  };
  // Sub-block u's B tile: block u / kSubs, part u % kSubs.
  auto btile = [&](int64_t u) { return bsrc + (u / kSubs) * bstride + (u % kSubs) * kBBytes; };
  MB_AMX_ISSUE(kSigned, 0, 1, 6, btile(0), hi, lo, stride);
  auto fold_unit = [&](int64_t u) {
    __m512 d, m;
    scales(u, d, m);
    fold<R>(c_hi[u & 3], c_lo[u & 3], d, m, dx + 16 * u, dx_sum + 16 * u, acc);
  };
  // Sub-block u is in tiles 0, 1 (u even) or 2, 3 (u odd). Each step
  // issues u + 1, stores u and folds u - 1, whose sums were stored a step
  // earlier: the vector loads of a tile store wait until it retires, so
  // folding what was just stored would leave the tile unit idle.
  for (int64_t u = 0; u < units; ++u) {
    const bool next = u + 1 < units;
    if ((u & 1) == 0) {
      if (next) MB_AMX_ISSUE(kSigned, 2, 3, 7, btile(u + 1), hi + Group * (u + 1), lo + Group * (u + 1), stride);
      _tile_stored(0, c_hi[u & 3], 64);
      _tile_stored(1, c_lo[u & 3], 64);
    } else {
      if (next) MB_AMX_ISSUE(kSigned, 0, 1, 6, btile(u + 1), hi + Group * (u + 1), lo + Group * (u + 1), stride);
      _tile_stored(2, c_hi[u & 3], 64);
      _tile_stored(3, c_lo[u & 3], 64);
    }
    if (u > 0) fold_unit(u - 1);
  }
  fold_unit(units - 1);
  const int64_t valid = w.rows - 16 * g;
  const __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1);
  const int64_t real = x.num_rows - 16 * t < R ? x.num_rows - 16 * t : R;
  for (int64_t r = 0; r < real; ++r) _mm512_mask_storeu_ps(out + (16 * t + r) * ld_out + 16 * g, mask, acc[r]);
}

// Rows in chunks that stay in L2 with a group's unpacked weights in L1.
constexpr int64_t kChunkTiles = 8;

template <int Bits, int Group, bool F32>
void run(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
         int64_t group_end, uint8_t* unpacked) {
  constexpr int kSubs = 32 / Group;
  constexpr int kSubBytes = F32 ? 128 : 64;
  const int64_t tiles = (x.num_rows + 15) / 16;
  const int64_t last = x.num_rows - 16 * (tiles - 1);  // real rows of the last tile
  for (int64_t t0 = 0; t0 < tiles; t0 += kChunkTiles) {
    const int64_t t1 = t0 + kChunkTiles < tiles ? t0 + kChunkTiles : tiles;
    for (int64_t g = group_begin; g < group_end; ++g) {
      const uint8_t* bsrc = w.data + g * w.blocks * w.block_bytes + kSubBytes * kSubs;  // bits 8: the weights
      int64_t bstride = w.block_bytes;
      if constexpr (Bits != 8) {
        for (int64_t b = 0; b < w.blocks; ++b)
          unpack_block<Bits>(w.data + (g * w.blocks + b) * w.block_bytes + kSubBytes * kSubs, unpacked + 512 * b);
        __asm__ __volatile__("" : : "r"(unpacked) : "memory");  // the tile loads read them (their asm says no memory)
        bsrc = unpacked;
        bstride = 512;
      }
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t rows = t + 1 < tiles ? 16 : last;
        if (rows > 8)
          row_tile<Bits, Group, F32, 16>(w, x, bsrc, bstride, g, t, out, ld_out);
        else if (rows > 4)
          row_tile<Bits, Group, F32, 8>(w, x, bsrc, bstride, g, t, out, ld_out);
        else
          row_tile<Bits, Group, F32, 4>(w, x, bsrc, bstride, g, t, out, ld_out);
      }
    }
  }
}

}  // namespace

void split_rows_amx(const QuantizedRows& x, int group, int8_t* hi, uint8_t* lo, float* dx, float* dx_sum) {
  const int64_t rows = x.num_rows, cols = x.cols, padded = (rows + 15) / 16 * 16;
  const int64_t blocks = cols / 32, subs = 32 / group, units = blocks * subs, sums_per_row = cols / 16;
  const __m512i byte = _mm512_set1_epi16(0xFF);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t k = 0; k < cols; k += 32) {
      const __m512i v = _mm512_loadu_si512(x.q + i * cols + k);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi + i * cols + k), _mm512_cvtepi16_epi8(_mm512_srai_epi16(v, 8)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + i * cols + k),
                          _mm512_cvtepi16_epi8(_mm512_and_si512(v, byte)));
    }
  }
  std::memset(hi + rows * cols, 0, static_cast<size_t>((padded - rows) * cols));
  std::memset(lo + rows * cols, 0, static_cast<size_t>((padded - rows) * cols));
  // [tile][unit][16 rows]: the factors the AVX-512 kernel computes per row and sub-block.
  for (int64_t i = 0; i < padded; ++i) {
    for (int64_t u = 0; u < units; ++u) {
      const int64_t at = ((i / 16) * units + u) * 16 + i % 16;
      if (i >= rows) {
        dx[at] = dx_sum[at] = 0.0f;
        continue;
      }
      const int64_t b = u / subs, s = u % subs;
      const float d = x.scale[i * blocks + b];
      const int32_t* sums = x.sums + i * sums_per_row + 2 * b + s * (group / 16);
      const int32_t sum = group == 32 ? sums[0] + sums[1] : sums[0];
      dx[at] = d;
      dx_sum[at] = d * static_cast<float>(sum);
    }
  }
}

__attribute__((target("amx-tile"))) void qgemm_amx(const QuantLayout& w, const QuantizedRows& x, float* out,
                                                   int64_t ld_out, int64_t group_begin, int64_t group_end) {
  configure(w.group);
  uint8_t* unpacked = static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(512 * w.blocks)));
  const bool f32 = w.scale_bytes == 4;
  if (w.bits == 4) {
    if (f32)
      run<4, 32, true>(w, x, out, ld_out, group_begin, group_end, unpacked);
    else
      run<4, 32, false>(w, x, out, ld_out, group_begin, group_end, unpacked);
  } else if (w.bits == 5) {
    if (f32)
      run<5, 32, true>(w, x, out, ld_out, group_begin, group_end, unpacked);
    else
      run<5, 32, false>(w, x, out, ld_out, group_begin, group_end, unpacked);
  } else if (w.group == 16) {
    run<8, 16, true>(w, x, out, ld_out, group_begin, group_end, unpacked);  // Q6_K
  } else {
    run<8, 32, false>(w, x, out, ld_out, group_begin, group_end, unpacked);  // Q8_0
  }
  std::free(unpacked);
  _tile_release();
}

}  // namespace modelbench::quant
