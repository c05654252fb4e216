// Fused float32 and bfloat16 element-wise ops for the CPU forward: the residual add with
// the RMSNorm after it, SiLU(gate) * up, and rotary embedding in place. At a
// decode step each replaces several ATen calls (a launch, an allocation and
// a pass over memory each) with one pass over rows that stay in L1.
// Results match the ATen ops they replace: the element operations are the
// same, computed in fp32 (sums in another order), and bf16 results are
// rounded where each ATen op in bf16 rounds its own.
#pragma once

#include <torch/torch.h>

namespace modelbench {

// Whether the fused kernels take x: float32 or bfloat16, on the CPU, contiguous in the last dim.
bool fused_cpu_supported(const torch::Tensor& x);

// weight * (x * rsqrt(mean(x^2) + eps)) over the last dim of x [rows, hidden].
torch::Tensor rms_norm_cpu(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// residual += x, then rms_norm_cpu(residual): [rows, hidden], residual contiguous.
torch::Tensor add_rms_norm_cpu(torch::Tensor& residual, const torch::Tensor& x, const torch::Tensor& weight,
                               double eps);

// gate_up [rows, 2 * n] (gate columns, then up columns) -> silu(gate) * up, [rows, n].
torch::Tensor silu_mul_cpu(const torch::Tensor& gate_up);

// In place: x [num_tokens, num_heads, head_dim] (any token stride, heads
// head_dim apart) = x * cos + rotate_half(x) * sin, with cos and sin
// [num_tokens, 1, head_dim] contiguous in x's dtype (RopeTables).
void rotary_cpu_(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace modelbench
