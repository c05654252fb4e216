// The quantized matmul's inner kernels, torch-free, one per instruction
// set: each is compiled in its own file with its own flags (AMX-INT8 tiles,
// AVX-512 with VNNI, AVX2 with FMA and F16C, and the portable C++ every
// x86-64 runs), and
// quant_linear picks one at run time from what the CPU reports, so one
// build is right and fast on every host.
//
// The weight layout (made once at load by quant_matrix.cpp): rows in groups
// of 16, columns in blocks of 32. Group g's block b is `block_bytes` bytes at
// data + (g * blocks + b) * block_bytes:
//   scales: for each of the block's 32 / group sub-blocks, 16 d (one per
//     row), then 16 m; weight = d * u + m. fp16 where that is exact (the
//     32-weight types' scales are fp16 in the file), fp32 for the K types,
//     whose sub-block scales are products of a 6- or 8-bit integer and an
//     fp16 (scale_bytes 2 or 4).
//   quants: the block's 8 chunks of 4 columns; in a chunk's 64 bytes, byte
//     4 * r + e is u of row r, column 4 * chunk + e (what one VNNI dot of a
//     broadcast 4-byte activation needs: 16 rows at once).
//     bits 4: 4 vectors of 64 bytes, vector j holding chunk 2j in its low
//       nibbles and chunk 2j + 1 in its high nibbles;
//     bits 5: those 256 bytes, then 8 bytes per chunk holding bit 4 of each
//       of its 64 values (bit 4 * r + e);
//     bits 8: 8 vectors of 64 bytes, each byte u - 128 (a signed byte).
// Activations are quantized per block of 32 to int16 (scale = max|x| /
// 32767), with the sums of each 16 quants kept for the m terms: llama.cpp's
// int8 activations (Q8_0) moved the default model's top token at 1.7 % of
// positions against the float computation, int16 at far fewer (docs/performance.md).
// The dot products are int16 pairs (vpdpwssd, vpmaddwd) into int32.
#pragma once

#include <cstdint>

namespace modelbench::quant {

struct QuantLayout {
  const uint8_t* data = nullptr;
  int bits = 4;            // 4, 5 or 8
  int group = 32;          // weights per (d, m): 32 or 16
  int64_t rows = 0;        // output features
  int64_t cols = 0;        // input features, a multiple of 32
  int64_t blocks = 0;      // cols / 32
  int64_t block_bytes = 0; // bytes of one group's block
  int scale_bytes = 2;     // 2: fp16 d and m; 4: fp32
};

// Bytes of one 16-row, 32-column block in the layout.
inline int64_t layout_block_bytes(int bits, int group, int scale_bytes) {
  const int64_t scales = 32 * scale_bytes * (32 / group);
  return scales + (bits == 4 ? 256 : bits == 5 ? 320 : 512);
}

struct QuantizedRows {
  const int16_t* q = nullptr;      // [num_rows, cols]
  const float* scale = nullptr;    // [num_rows, cols / 32]
  const int32_t* sums = nullptr;   // [num_rows, cols / 16]: the sum of each 16 quants
  int64_t num_rows = 0;
  int64_t cols = 0;
  // For the AMX kernel only (split_rows_amx): q as bytes, rows padded with
  // zeros to a multiple of 16, and each sub-block's factors by row tile.
  const int8_t* hi = nullptr;
  const uint8_t* lo = nullptr;
  const float* dx = nullptr;
  const float* dx_sum = nullptr;
};

// out[i * ld_out + n] = sum_k x[i, k] * w[n, k] for every row i of x and
// every output n of row groups [group_begin, group_end) (n < rows).
using QGemmKernel = void (*)(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out,
                             int64_t group_begin, int64_t group_end);

void qgemm_generic(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
                   int64_t group_end);
void qgemm_avx2(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
                int64_t group_end);
void qgemm_avx512(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
                  int64_t group_end);
// AMX-INT8 tiles (quant_kernels_amx.cpp): the same result as qgemm_avx512,
// bit for bit; x.hi and x.lo must be set. Only where the CPU has AMX-INT8
// and the OS granted the tiles (quant_linear's cpu_has_amx).
void qgemm_amx(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
               int64_t group_end);
// For a matrix of sub-blocks of `group` (32 or 16) weights: hi = q >> 8
// (signed) and lo = q & 0xFF, each [P, cols] where P = num_rows rounded up
// to 16 (padding rows zero), and per row and sub-block the scale dx and
// dx * (sum of the sub-block's quants), each [P / 16, cols / group, 16].
void split_rows_amx(const QuantizedRows& x, int group, int8_t* hi, uint8_t* lo, float* dx, float* dx_sum);

// x [num_rows, cols] float -> the int16 quants, scales and sums above (cols a multiple of 32).
void quantize_rows_generic(const float* x, int64_t num_rows, int64_t cols, int16_t* q, float* scale, int32_t* sums);
void quantize_rows_avx512(const float* x, int64_t num_rows, int64_t cols, int16_t* q, float* scale, int32_t* sums);
// The same quants, scales and sums, but each 4 columns' quants in the order
// (x0, x2, x1, x3): the pairs qgemm_avx2 multiplies (it takes no other order).
void quantize_rows_avx2(const float* x, int64_t num_rows, int64_t cols, int16_t* q, float* scale, int32_t* sums);

}  // namespace modelbench::quant
