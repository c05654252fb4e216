// GGUF's block formats (ggml's type ids and byte layouts), torch-free: what
// each type is called, how many weights a block holds and how many bytes it
// takes, and each block decoded into the form the quantized kernels use:
// unsigned integers u with, per sub-block of G weights, a scale d and an
// offset m, so that weight = d * u + m (quant_matrix.h). Also the reference
// quantizers for Q8_0 and Q4_0 (ggml's quantize_row_*_ref), which quantize a
// float checkpoint at load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace modelbench::quant {

// ggml's type ids, as GGUF files store them.
enum class GgmlType : int {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
};

// Whether `id` is a block format the kernels run (Q4_0 ... Q6_K, not the float types).
bool is_block_type(int id);
// "Q4_1", ...; "type N" for an id this file does not know.
std::string type_name(int id);
// The types a GGUF matrix may have, as a sentence for error messages.
std::string supported_type_names();

struct BlockInfo {
  int64_t block_weights;  // weights per block: 32, or 256 for the K types
  int64_t block_bytes;    // bytes per block
  int bits;               // bits of u in the kernels' layout: 4, 5 or 8
  int group;              // weights per (d, m) pair in the kernels' layout: 32, or 16 (Q6_K)
  int scale_bytes;        // d and m in the layout: 2 (fp16, exact for the 32-weight types) or 4 (fp32: K types)
};

// Throws InvalidArgument for a type that is not a block type.
BlockInfo block_info(int id);

// One block of `type` at `src`, decoded: u[block_weights] (each < 2^bits),
// and d[block_weights / group], m[...] with weight i = d[i / group] * u[i] + m[i / group].
void decode_block(int type, const uint8_t* src, uint8_t* u, float* d, float* m);

// A row of k weights (k a multiple of the block's weights) in `type`, to float.
void dequantize_row(int type, const uint8_t* src, float* dst, int64_t k);

// ggml's reference quantizers: k floats (a multiple of 32) into k / 32 blocks.
void quantize_row_q8_0(const float* src, uint8_t* dst, int64_t k);
void quantize_row_q4_0(const float* src, uint8_t* dst, int64_t k);

// IEEE half <-> float, as ggml's GGML_FP16_TO_FP32 (exact) and GGML_FP32_TO_FP16 (round to nearest even).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

}  // namespace modelbench::quant
