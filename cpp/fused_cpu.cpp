// The fused element-wise kernels: Eigen array expressions over one row at a
// time (vectorised for the build's ISA), rows split across threads only when
// there are enough of them to pay for waking the pool.
#include "fused_cpu.h"

#define EIGEN_DONT_PARALLELIZE
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

namespace modelbench {
namespace {

using Row = Eigen::Map<Eigen::ArrayXf>;
using ConstRow = Eigen::Map<const Eigen::ArrayXf>;

constexpr int64_t kMaxHalf = 512;  // head_dim / 2 at most

// Rows per work item: about 64K floats, so a decode step's batch runs inline.
int64_t grain_rows(int64_t cols) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(cols, 1)); }

void check_rows(const torch::Tensor& x, const char* what) {
  TORCH_CHECK(x.dim() == 2 && fused_cpu_supported(x) && x.stride(0) >= x.size(1), what,
              " must be a [rows, cols] float32 CPU tensor with contiguous rows, got ", x.sizes(), " ",
              x.scalar_type());
}

// out = weight * (x * rsqrt(mean(x^2) + eps)), the order of operations of transformers' LlamaRMSNorm.
inline void norm_row(const float* x, const float* weight, float eps, int64_t n, float* out) {
  const ConstRow xr(x, n);
  const float inv_rms = 1.0f / std::sqrt(xr.square().sum() / static_cast<float>(n) + eps);
  Row(out, n) = ConstRow(weight, n) * (xr * inv_rms);
}

}  // namespace

bool fused_cpu_supported(const torch::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() >= 1 && x.stride(-1) == 1;
}

torch::Tensor rms_norm_cpu(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  RECORD_FUNCTION("modelbench::rms_norm", std::vector<c10::IValue>());
  check_rows(x, "x");
  const int64_t rows = x.size(0), n = x.size(1), ld = x.stride(0);
  TORCH_CHECK(weight.numel() == n && weight.is_contiguous() && fused_cpu_supported(weight),
              "weight must be a contiguous float32 [", n, "], got ", weight.sizes());
  torch::Tensor out = torch::empty({rows, n}, x.options());
  const float* xd = x.data_ptr<float>();
  const float* wd = weight.data_ptr<float>();
  float* od = out.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, rows, grain_rows(n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) norm_row(xd + r * ld, wd, e, n, od + r * n);
  });
  return out;
}

torch::Tensor add_rms_norm_cpu(torch::Tensor& residual, const torch::Tensor& x, const torch::Tensor& weight,
                               double eps) {
  RECORD_FUNCTION("modelbench::add_rms_norm", std::vector<c10::IValue>());
  check_rows(x, "x");
  TORCH_CHECK(residual.is_contiguous() && fused_cpu_supported(residual) && residual.sizes() == x.sizes(),
              "residual must be a contiguous float32 tensor shaped like x ", x.sizes(), ", got ", residual.sizes());
  const int64_t rows = x.size(0), n = x.size(1), ld = x.stride(0);
  TORCH_CHECK(weight.numel() == n && weight.is_contiguous() && fused_cpu_supported(weight),
              "weight must be a contiguous float32 [", n, "], got ", weight.sizes());
  torch::Tensor out = torch::empty({rows, n}, x.options());
  float* rd = residual.data_ptr<float>();
  const float* xd = x.data_ptr<float>();
  const float* wd = weight.data_ptr<float>();
  float* od = out.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, rows, grain_rows(n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      Row(rd + r * n, n) += ConstRow(xd + r * ld, n);
      norm_row(rd + r * n, wd, e, n, od + r * n);
    }
  });
  return out;
}

torch::Tensor silu_mul_cpu(const torch::Tensor& gate_up) {
  RECORD_FUNCTION("modelbench::silu_mul", std::vector<c10::IValue>());
  check_rows(gate_up, "gate_up");
  TORCH_CHECK(gate_up.size(1) % 2 == 0, "gate_up must have an even number of columns, got ", gate_up.size(1));
  const int64_t rows = gate_up.size(0), n = gate_up.size(1) / 2, ld = gate_up.stride(0);
  torch::Tensor out = torch::empty({rows, n}, gate_up.options());
  const float* gd = gate_up.data_ptr<float>();
  float* od = out.data_ptr<float>();
  at::parallel_for(0, rows, grain_rows(2 * n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const ConstRow gate(gd + r * ld, n), up(gd + r * ld + n, n);
      Row(od + r * n, n) = gate / (1.0f + (-gate).exp()) * up;  // silu as ATen computes it
    }
  });
  return out;
}

void rotary_cpu_(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  RECORD_FUNCTION("modelbench::rotary", std::vector<c10::IValue>());
  TORCH_CHECK(x.dim() == 3 && fused_cpu_supported(x) && x.stride(1) == x.size(2) && x.size(2) % 2 == 0,
              "x must be [num_tokens, num_heads, head_dim] float32 on the CPU with heads head_dim apart, got ",
              x.sizes(), " strides ", x.strides());
  const int64_t tokens = x.size(0), heads = x.size(1), dim = x.size(2), half = dim / 2, ld = x.stride(0);
  TORCH_CHECK(half <= kMaxHalf, "head_dim ", dim, " is over the rotary kernel's ", 2 * kMaxHalf);
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && fused_cpu_supported(cos) && fused_cpu_supported(sin) &&
                  cos.numel() == tokens * dim && sin.numel() == tokens * dim,
              "cos and sin must be contiguous float32 [", tokens, ", 1, ", dim, "]");
  float* xd = x.data_ptr<float>();
  const float* cd = cos.data_ptr<float>();
  const float* sd = sin.data_ptr<float>();
  at::parallel_for(0, tokens, grain_rows(heads * dim), [&](int64_t begin, int64_t end) {
    float saved[kMaxHalf];
    for (int64_t t = begin; t < end; ++t) {
      const ConstRow c1(cd + t * dim, half), c2(cd + t * dim + half, half);
      const ConstRow s1(sd + t * dim, half), s2(sd + t * dim + half, half);
      for (int64_t h = 0; h < heads; ++h) {
        Row x1(xd + t * ld + h * dim, half), x2(xd + t * ld + h * dim + half, half);
        Row a(saved, half);
        a = x1;  // x1's old values, needed by the second half
        x1 = a * c1 + (-x2) * s1;
        x2 = x2 * c2 + a * s2;
      }
    }
  });
}

}  // namespace modelbench
