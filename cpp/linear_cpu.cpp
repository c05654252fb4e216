// The packed float32 linear kernel: register tiles of up to 6 rows of x by
// one 64-wide weight panel, accumulated over in_features with broadcast
// FMAs (24 accumulators in AVX-512 registers). Portable loops over the same
// layout when the build does not target AVX-512.
#include "linear_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace modelbench {
namespace {

constexpr int kTileRows = 6;       // rows of x per register tile
constexpr int64_t kRowChunk = 96;  // rows of x per work item (16 tiles), so long prefills split too

#if defined(__AVX512F__)

// y[m, c] = sum_k x[m, k] * panel[k, c] (+ bias[c]) for m < M, c < num_cols (<= 64).
template <int M>
inline void tile(const float* x, int64_t K, const float* panel, const float* bias, float* y, int64_t ldy,
                 int64_t num_cols) {
  __m512 acc[M][4];
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < 4; ++c) acc[m][c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* w = panel + k * kPanelWidth;
    const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);
    const __m512 w2 = _mm512_loadu_ps(w + 32), w3 = _mm512_loadu_ps(w + 48);
    for (int m = 0; m < M; ++m) {
      const __m512 xb = _mm512_set1_ps(x[m * K + k]);
      acc[m][0] = _mm512_fmadd_ps(xb, w0, acc[m][0]);
      acc[m][1] = _mm512_fmadd_ps(xb, w1, acc[m][1]);
      acc[m][2] = _mm512_fmadd_ps(xb, w2, acc[m][2]);
      acc[m][3] = _mm512_fmadd_ps(xb, w3, acc[m][3]);
    }
  }
  for (int c = 0; c < 4; ++c) {
    const int64_t left = num_cols - c * 16;
    if (left <= 0) break;
    const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
    const __m512 b = bias != nullptr ? _mm512_maskz_loadu_ps(mask, bias + c * 16) : _mm512_setzero_ps();
    for (int m = 0; m < M; ++m) _mm512_mask_storeu_ps(y + m * ldy + c * 16, mask, _mm512_add_ps(acc[m][c], b));
  }
}

#else

template <int M>
inline void tile(const float* x, int64_t K, const float* panel, const float* bias, float* y, int64_t ldy,
                 int64_t num_cols) {
  float acc[M][kPanelWidth] = {};
  for (int64_t k = 0; k < K; ++k) {
    const float* w = panel + k * kPanelWidth;
    for (int m = 0; m < M; ++m) {
      const float xv = x[m * K + k];
#pragma omp simd
      for (int64_t c = 0; c < kPanelWidth; ++c) acc[m][c] += xv * w[c];
    }
  }
  for (int m = 0; m < M; ++m)
    for (int64_t c = 0; c < num_cols; ++c) y[m * ldy + c] = acc[m][c] + (bias != nullptr ? bias[c] : 0.0f);
}

#endif

// Rows [0, M) of x times one panel.
void rows_times_panel(const float* x, int64_t M, int64_t K, const float* panel, const float* bias, float* y,
                      int64_t ldy, int64_t num_cols) {
  int64_t m = 0;
  for (; m + kTileRows <= M; m += kTileRows) tile<kTileRows>(x + m * K, K, panel, bias, y + m * ldy, ldy, num_cols);
  const float* xm = x + m * K;
  float* ym = y + m * ldy;
  switch (M - m) {
    case 1: tile<1>(xm, K, panel, bias, ym, ldy, num_cols); break;
    case 2: tile<2>(xm, K, panel, bias, ym, ldy, num_cols); break;
    case 3: tile<3>(xm, K, panel, bias, ym, ldy, num_cols); break;
    case 4: tile<4>(xm, K, panel, bias, ym, ldy, num_cols); break;
    case 5: tile<5>(xm, K, panel, bias, ym, ldy, num_cols); break;
    default: break;
  }
}

}  // namespace

torch::Tensor pack_linear_weight(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kFloat32 && weight.device().is_cpu(),
              "pack_linear_weight needs a [out_features, in_features] float32 CPU tensor, got ", weight.sizes(),
              " ", weight.scalar_type(), " on ", weight.device());
  const int64_t N = weight.size(0), K = weight.size(1);
  const int64_t num_panels = (N + kPanelWidth - 1) / kPanelWidth;
  torch::Tensor padded = torch::zeros({num_panels * kPanelWidth, K}, weight.options());
  padded.narrow(0, 0, N).copy_(weight);
  // [num_panels * 64, K] -> [num_panels, 64, K] -> [num_panels, K, 64]
  return padded.view({num_panels, kPanelWidth, K}).transpose(1, 2).contiguous();
}

torch::Tensor packed_linear(const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
                            const torch::Tensor& bias) {
  RECORD_FUNCTION("modelbench::packed_linear", std::vector<c10::IValue>());
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "packed_linear needs x [num_rows, in_features] float32 on the CPU, got ", x.sizes(), " ",
              x.scalar_type(), " on ", x.device());
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == kPanelWidth && packed.size(1) == x.size(1) &&
                  packed.scalar_type() == torch::kFloat32 && packed.is_contiguous(),
              "packed weight must be [num_panels, ", x.size(1), ", ", kPanelWidth, "] float32, got ",
              packed.sizes());
  const int64_t num_panels = packed.size(0);
  TORCH_CHECK(out_features > (num_panels - 1) * kPanelWidth && out_features <= num_panels * kPanelWidth,
              "out_features ", out_features, " does not match ", num_panels, " panels of ", kPanelWidth);
  const float* bias_data = nullptr;
  torch::Tensor b;
  if (bias.defined()) {
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == out_features && bias.scalar_type() == torch::kFloat32,
                "bias must be [", out_features, "] float32, got ", bias.sizes(), " ", bias.scalar_type());
    b = bias.contiguous();
    bias_data = b.data_ptr<float>();
  }
  const torch::Tensor xc = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = out_features;
  torch::Tensor y = torch::empty({M, N}, x.options());  // [num_rows, out_features]
  if (M == 0) return y;
  const float* x_data = xc.data_ptr<float>();
  const float* w_data = packed.data_ptr<float>();
  float* y_data = y.data_ptr<float>();
  const int64_t num_chunks = (M + kRowChunk - 1) / kRowChunk;
  // Work item i: panel i / num_chunks, row chunk i % num_chunks; one thread's
  // consecutive items share a panel, which stays in its L2.
  at::parallel_for(0, num_panels * num_chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p = i / num_chunks, chunk = i % num_chunks;
      const int64_t m0 = chunk * kRowChunk, rows = std::min(kRowChunk, M - m0);
      const int64_t n0 = p * kPanelWidth;
      rows_times_panel(x_data + m0 * K, rows, K, w_data + p * K * kPanelWidth,
                       bias_data != nullptr ? bias_data + n0 : nullptr, y_data + m0 * N + n0, N,
                       std::min(kPanelWidth, N - n0));
    }
  });
  return y;
}

}  // namespace modelbench
