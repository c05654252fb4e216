// Float32 linear layers with bfloat16 products on Intel AMX tiles
// (TDPBF16PS): x and the weight are rounded to bf16, each product is exact
// in fp32 and the sums are fp32, written out as fp32 -- what torch calls the
// "medium" float32 matmul precision. A model opts in (the BERT encoder's
// matmul_precision "medium"); the decoders keep float32 products.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace modelbench {

// Whether this process can run the kernel: the build has it (the AVX-512
// level), the CPU has AMX-BF16, and Linux granted the tile state (asked for
// once, on the first call).
bool amx_linear_supported();

// Whether a [out_features, in_features] weight fits the tiles: out_features a
// multiple of 16, in_features a multiple of 32.
bool amx_linear_fits(int64_t out_features, int64_t in_features);

// weight: [N, K] float32 CPU (amx_linear_fits) -> bf16 [N / 16, K / 2, 16, 2]:
// for each 16 outputs, each pair of inputs, the 16 outputs' two weights
// (the tiles' VNNI layout for B).
torch::Tensor pack_amx_weight(const torch::Tensor& weight);

// x: [num_rows, K] float32 CPU; packed from pack_amx_weight; bias [N] float32
// or undefined. Returns [num_rows, N] float32. Parallel over 32 outputs at a time.
torch::Tensor amx_linear(const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
                         const torch::Tensor& bias);

}  // namespace modelbench
