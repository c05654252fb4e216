// The fused element-wise kernels: rows in chunks that stay in L1, computed
// in fp32 with Eigen array expressions (vectorised for the build's ISA).
// For bfloat16, values are rounded back to bf16 wherever the ATen ops they
// replace round (each op's result), so bf16 outputs equal transformers'.
// Rows are split across threads only when there are enough of them to pay
// for waking the pool.
#include "kernels/fused_cpu.h"
#include "kernels/simd_bf16.h"

#define EIGEN_DONT_PARALLELIZE
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace modelbench {
namespace {

using Row = Eigen::Map<Eigen::ArrayXf>;
using ConstRow = Eigen::Map<const Eigen::ArrayXf>;

constexpr int64_t kChunk = 512;  // elements of a row per pass: a few fp32 buffers of this stay in L1

// Rows per work item: about 64K elements, so a decode step's batch runs inline.
int64_t grain_rows(int64_t cols) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(cols, 1)); }

// Loading a row's elements as fp32, storing fp32 results in the tensor's
// dtype, and rounding an fp32 intermediate the way an ATen op in that dtype
// would round its result.
template <typename T>
struct Elems;

template <>
struct Elems<float> {
  static void load(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }
  static void store(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }
  static void round(float* /*x*/, int64_t /*n*/) {}
};

template <>
struct Elems<c10::BFloat16> {
  static void load(const c10::BFloat16* src, float* dst, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512BF16__)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load_bf16x16(src + i));
#endif
    for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  }
  static void store(const float* src, c10::BFloat16* dst, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512BF16__)
    for (; i + 16 <= n; i += 16)  // round to nearest even, as c10::BFloat16 does
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
#endif
    for (; i < n; ++i) dst[i] = static_cast<c10::BFloat16>(src[i]);
  }
  static void round(float* x, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512BF16__)
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(x + i, bf16x16_to_fp32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i))));
#endif
    for (; i < n; ++i) x[i] = static_cast<float>(static_cast<c10::BFloat16>(x[i]));
  }
};

void check_rows(const torch::Tensor& x, const char* what) {
  TORCH_CHECK(x.dim() == 2 && fused_cpu_supported(x) && x.stride(0) >= x.size(1), what,
              " must be a [rows, cols] float32 or bfloat16 CPU tensor with contiguous rows, got ", x.sizes(), " ",
              x.scalar_type());
}

void check_weight(const torch::Tensor& weight, const torch::Tensor& x) {
  TORCH_CHECK(weight.numel() == x.size(1) && weight.is_contiguous() && weight.scalar_type() == x.scalar_type() &&
                  weight.device().is_cpu(),
              "weight must be a contiguous ", x.scalar_type(), " [", x.size(1), "], got ", weight.sizes(), " ",
              weight.scalar_type());
}

// out = weight * (x * rsqrt(mean(x^2) + eps)), the order of operations (and
// of bf16 roundings) of transformers' LlamaRMSNorm. With `add`, the row
// normed is x + add (rounded as a bf16 add rounds), written to `sum` (which
// may be x itself: each chunk is read before it is written).
template <typename T>
void norm_row(const T* x, const T* add, T* sum, const T* weight, float eps, int64_t n, T* out) {
  alignas(64) float a[kChunk], b[kChunk];  // aligned: Eigen peels an unaligned head off a sum as scalars
  float sum_sq = 0.0f;
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t len = std::min(kChunk, n - c0);
    Elems<T>::load(x + c0, a, len);
    if (add != nullptr) {
      Elems<T>::load(add + c0, b, len);
      Row(a, len) += ConstRow(b, len);
      Elems<T>::round(a, len);
      Elems<T>::store(a, sum + c0, len);
    }
    sum_sq += Row(a, len).square().sum();
  }
  const T* normed = add != nullptr ? sum : x;
  const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(n) + eps);
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t len = std::min(kChunk, n - c0);
    Elems<T>::load(normed + c0, a, len);
    Row(a, len) *= inv_rms;
    Elems<T>::round(a, len);  // HF: .to(input_dtype) before the weight
    Elems<T>::load(weight + c0, b, len);
    Row(a, len) *= ConstRow(b, len);
    Elems<T>::store(a, out + c0, len);
  }
}

// Rows of x (ld_x apart), plus rows of add (ld_add apart) when add is set,
// their sums written to `sum` (contiguous rows), normed into a new tensor.
template <typename T>
torch::Tensor norm_rows(const T* x, int64_t ld_x, const T* add, int64_t ld_add, T* sum, const T* weight, double eps,
                        int64_t rows, int64_t n, const torch::TensorOptions& options) {
  torch::Tensor out = torch::empty({rows, n}, options);
  T* od = out.data_ptr<T>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, rows, grain_rows(n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      norm_row<T>(x + r * ld_x, add != nullptr ? add + r * ld_add : nullptr, sum != nullptr ? sum + r * n : nullptr,
                  weight, e, n, od + r * n);
  });
  return out;
}

template <typename T>
void silu_mul_rows(const T* gd, int64_t ld, int64_t rows, int64_t n, T* od) {
  at::parallel_for(0, rows, grain_rows(2 * n), [&](int64_t begin, int64_t end) {
    alignas(64) float g[kChunk], u[kChunk];
    for (int64_t r = begin; r < end; ++r)
      for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
        const int64_t len = std::min(kChunk, n - c0);
        Elems<T>::load(gd + r * ld + c0, g, len);
        Elems<T>::load(gd + r * ld + n + c0, u, len);
        Row gate(g, len);
        gate = gate / (1.0f + (-gate).exp());  // silu as ATen computes it, then rounded as its result
        Elems<T>::round(g, len);
        gate *= ConstRow(u, len);
        Elems<T>::store(g, od + r * n + c0, len);
      }
  });
}

constexpr int64_t kMaxHalf = 512;  // head_dim / 2 at most

// x = x * cos + rotate_half(x) * sin, each product and the sum rounded as ATen rounds them.
template <typename T>
void rotary_rows(T* xd, int64_t ld, int64_t tokens, int64_t heads, int64_t dim, const T* cd, const T* sd) {
  const int64_t half = dim / 2;
  at::parallel_for(0, tokens, grain_rows(heads * dim), [&](int64_t begin, int64_t end) {
    alignas(64) float c[2 * kMaxHalf], s[2 * kMaxHalf], x[2 * kMaxHalf], t1[2 * kMaxHalf], t2[2 * kMaxHalf];
    for (int64_t t = begin; t < end; ++t) {
      Elems<T>::load(cd + t * dim, c, dim);
      Elems<T>::load(sd + t * dim, s, dim);
      for (int64_t h = 0; h < heads; ++h) {
        T* row = xd + t * ld + h * dim;
        Elems<T>::load(row, x, dim);
        Row(t1, dim) = ConstRow(x, dim) * ConstRow(c, dim);  // x * cos
        Row(t2, half) = -ConstRow(x + half, half) * ConstRow(s, half);  // rotate_half(x) * sin
        Row(t2 + half, half) = ConstRow(x, half) * ConstRow(s + half, half);
        Elems<T>::round(t1, dim);
        Elems<T>::round(t2, dim);
        Row(t1, dim) += ConstRow(t2, dim);
        Elems<T>::store(t1, row, dim);
      }
    }
  });
}

}  // namespace

bool fused_cpu_supported(const torch::Tensor& x) {
  return x.device().is_cpu() && (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16) &&
         x.dim() >= 1 && x.stride(-1) == 1;
}

torch::Tensor rms_norm_cpu(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  RECORD_FUNCTION("modelbench::rms_norm", std::vector<c10::IValue>());
  check_rows(x, "x");
  check_weight(weight, x);
  const int64_t rows = x.size(0), n = x.size(1);
  if (x.scalar_type() == torch::kBFloat16)
    return norm_rows<c10::BFloat16>(x.data_ptr<c10::BFloat16>(), x.stride(0), nullptr, 0, nullptr,
                                    weight.data_ptr<c10::BFloat16>(), eps, rows, n, x.options());
  return norm_rows<float>(x.data_ptr<float>(), x.stride(0), nullptr, 0, nullptr, weight.data_ptr<float>(), eps, rows,
                          n, x.options());
}

torch::Tensor add_rms_norm_cpu(torch::Tensor& residual, const torch::Tensor& x, const torch::Tensor& weight,
                               double eps) {
  RECORD_FUNCTION("modelbench::add_rms_norm", std::vector<c10::IValue>());
  check_rows(x, "x");
  TORCH_CHECK(residual.is_contiguous() && residual.scalar_type() == x.scalar_type() && residual.device().is_cpu() &&
                  residual.sizes() == x.sizes(),
              "residual must be a contiguous ", x.scalar_type(), " tensor shaped like x ", x.sizes(), ", got ",
              residual.sizes(), " ", residual.scalar_type());
  check_weight(weight, x);
  const int64_t rows = x.size(0), n = x.size(1);
  if (x.scalar_type() == torch::kBFloat16)
    return norm_rows<c10::BFloat16>(residual.data_ptr<c10::BFloat16>(), n, x.data_ptr<c10::BFloat16>(), x.stride(0),
                                    residual.data_ptr<c10::BFloat16>(), weight.data_ptr<c10::BFloat16>(), eps, rows,
                                    n, x.options());
  return norm_rows<float>(residual.data_ptr<float>(), n, x.data_ptr<float>(), x.stride(0), residual.data_ptr<float>(),
                          weight.data_ptr<float>(), eps, rows, n, x.options());
}

torch::Tensor silu_mul_cpu(const torch::Tensor& gate_up) {
  RECORD_FUNCTION("modelbench::silu_mul", std::vector<c10::IValue>());
  check_rows(gate_up, "gate_up");
  TORCH_CHECK(gate_up.size(1) % 2 == 0, "gate_up must have an even number of columns, got ", gate_up.size(1));
  const int64_t rows = gate_up.size(0), n = gate_up.size(1) / 2, ld = gate_up.stride(0);
  torch::Tensor out = torch::empty({rows, n}, gate_up.options());
  if (gate_up.scalar_type() == torch::kBFloat16)
    silu_mul_rows<c10::BFloat16>(gate_up.data_ptr<c10::BFloat16>(), ld, rows, n, out.data_ptr<c10::BFloat16>());
  else
    silu_mul_rows<float>(gate_up.data_ptr<float>(), ld, rows, n, out.data_ptr<float>());
  return out;
}

void rotary_cpu_(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  RECORD_FUNCTION("modelbench::rotary", std::vector<c10::IValue>());
  TORCH_CHECK(x.dim() == 3 && fused_cpu_supported(x) && x.stride(1) == x.size(2) && x.size(2) % 2 == 0,
              "x must be [num_tokens, num_heads, head_dim] float32 or bfloat16 on the CPU with heads head_dim "
              "apart, got ", x.sizes(), " strides ", x.strides());
  const int64_t tokens = x.size(0), heads = x.size(1), dim = x.size(2);
  TORCH_CHECK(dim / 2 <= kMaxHalf, "head_dim ", dim, " is over the rotary kernel's ", 2 * kMaxHalf);
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.scalar_type() == x.scalar_type() &&
                  sin.scalar_type() == x.scalar_type() && cos.numel() == tokens * dim && sin.numel() == tokens * dim,
              "cos and sin must be contiguous ", x.scalar_type(), " [", tokens, ", 1, ", dim, "]");
  if (x.scalar_type() == torch::kBFloat16)
    rotary_rows<c10::BFloat16>(x.data_ptr<c10::BFloat16>(), x.stride(0), tokens, heads, dim,
                               cos.data_ptr<c10::BFloat16>(), sin.data_ptr<c10::BFloat16>());
  else
    rotary_rows<float>(x.data_ptr<float>(), x.stride(0), tokens, heads, dim, cos.data_ptr<float>(),
                       sin.data_ptr<float>());
}

}  // namespace modelbench
