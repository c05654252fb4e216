// Bfloat16 linear layers on CPUs with AVX512-BF16 (Zen 4, Sapphire Rapids
// and later): weights packed once at load into panels of 64 output features
// holding in_features in pairs, [num_panels, ceil(in_features / 2), 64, 2],
// so that one vdpbf16ps multiplies 16 outputs by a pair of inputs and adds
// both products into fp32 accumulators. Outputs are rounded to bf16 once,
// at the end, as ATen's bf16 matmul does. Register tiles as in the float32
// kernel (linear_cpu.h): up to 6 rows of x times a whole panel.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace modelbench {

// Whether this build has the kernel (compiled with AVX512-BF16).
bool bf16_linear_supported();

// Whether this CPU has AMX-BF16 tiles (where ATen's bf16 matmul, through
// oneDNN, runs on them); asked at run time.
bool bf16_amx_supported();

// weight: [out_features, in_features] bfloat16 CPU -> [ceil(out_features / 64),
// ceil(in_features / 2), 64, 2] bfloat16, padded with zeros.
torch::Tensor pack_linear_weight_bf16(const torch::Tensor& weight);

// x: [num_rows, in_features] bfloat16 CPU; packed from pack_linear_weight_bf16;
// bias: [out_features] bfloat16 or undefined. Returns [num_rows, out_features] bfloat16.
torch::Tensor packed_linear_bf16(const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
                                 const torch::Tensor& bias);

}  // namespace modelbench
