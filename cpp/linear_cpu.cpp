// The packed float32 linear kernel: register tiles of up to 6 rows of x by
// one 64-wide weight panel, accumulated over in_features with broadcast
// FMAs (24 accumulators in AVX-512 registers). Portable loops over the same
// layout when the build does not target AVX-512.
#include "linear_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace modelbench {
namespace {

constexpr int kTileRows = 6;       // rows of x per register tile
constexpr int64_t kRowChunk = 96;  // rows of x per work item (16 tiles), so long prefills split too
// A panel is cut between threads for batches of at least kMinSplitRows rows
// (compute-bound: measured 10 % faster for SmolLM2's 9- and 15-panel outputs
// at 32 rows; at one row, memory-bound, it did not pay) and kMinSplitK inputs.
constexpr int64_t kMinSplitRows = 8;
constexpr int64_t kMinSplitK = 64;

#if defined(__AVX512F__)

// y[m, c] = sum_k x[m * ldx + k] * panel[k, c] (+ bias[c]) for m < M, k < K, c < num_cols (<= 64).
template <int M>
inline void tile(const float* x, int64_t ldx, int64_t K, const float* panel, const float* bias, float* y,
                 int64_t ldy, int64_t num_cols) {
  __m512 acc[M][4];
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < 4; ++c) acc[m][c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* w = panel + k * kPanelWidth;
    const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);
    const __m512 w2 = _mm512_loadu_ps(w + 32), w3 = _mm512_loadu_ps(w + 48);
    for (int m = 0; m < M; ++m) {
      const __m512 xb = _mm512_set1_ps(x[m * ldx + k]);
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
inline void tile(const float* x, int64_t ldx, int64_t K, const float* panel, const float* bias, float* y,
                 int64_t ldy, int64_t num_cols) {
  float acc[M][kPanelWidth] = {};
  for (int64_t k = 0; k < K; ++k) {
    const float* w = panel + k * kPanelWidth;
    for (int m = 0; m < M; ++m) {
      const float xv = x[m * ldx + k];
#pragma omp simd
      for (int64_t c = 0; c < kPanelWidth; ++c) acc[m][c] += xv * w[c];
    }
  }
  for (int m = 0; m < M; ++m)
    for (int64_t c = 0; c < num_cols; ++c) y[m * ldy + c] = acc[m][c] + (bias != nullptr ? bias[c] : 0.0f);
}

#endif

// Rows [0, M) of x (rows ldx apart) times K rows of one panel.
void rows_times_panel(const float* x, int64_t M, int64_t ldx, int64_t K, const float* panel, const float* bias,
                      float* y, int64_t ldy, int64_t num_cols) {
  int64_t m = 0;
  for (; m + kTileRows <= M; m += kTileRows)
    tile<kTileRows>(x + m * ldx, ldx, K, panel, bias, y + m * ldy, ldy, num_cols);
  const float* xm = x + m * ldx;
  float* ym = y + m * ldy;
  switch (M - m) {
    case 1: tile<1>(xm, ldx, K, panel, bias, ym, ldy, num_cols); break;
    case 2: tile<2>(xm, ldx, K, panel, bias, ym, ldy, num_cols); break;
    case 3: tile<3>(xm, ldx, K, panel, bias, ym, ldy, num_cols); break;
    case 4: tile<4>(xm, ldx, K, panel, bias, ym, ldy, num_cols); break;
    case 5: tile<5>(xm, ldx, K, panel, bias, ym, ldy, num_cols); break;
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
  const int64_t threads = at::get_num_threads();
  if (M >= kMinSplitRows && num_chunks == 1 && threads > 1 && num_panels % threads != 0 && K >= kMinSplitK) {
    // Panels that do not split evenly (a 576-wide output is 9: 5 and 4 on 2
    // threads): each thread takes an equal share of the (panel, k) steps, so
    // a panel may be cut along k between two threads. The part that starts
    // at k = 0 writes y (with the bias); a part starting later writes the
    // thread's scratch panel, added to y after. Every weight is still read once.
    const int64_t total = num_panels * K;
    std::vector<float> scratch(threads * M * kPanelWidth);
    std::vector<int64_t> scratch_panel(threads, -1);
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        for (int64_t u = total * t / threads, u_end = total * (t + 1) / threads; u < u_end;) {
          const int64_t p = u / K, k0 = u % K, k1 = std::min(K, k0 + (u_end - u));
          const int64_t n0 = p * kPanelWidth, cols = std::min(kPanelWidth, N - n0);
          const float* panel = w_data + (p * K + k0) * kPanelWidth;
          if (k0 == 0) {
            rows_times_panel(x_data, M, K, k1, panel, bias_data != nullptr ? bias_data + n0 : nullptr,
                             y_data + n0, N, cols);
          } else {
            scratch_panel[t] = p;
            rows_times_panel(x_data + k0, M, K, k1 - k0, panel, nullptr, scratch.data() + t * M * kPanelWidth,
                             kPanelWidth, cols);
          }
          u += k1 - k0;
        }
      }
    });
    for (int64_t t = 0; t < threads; ++t) {
      if (scratch_panel[t] < 0) continue;
      const int64_t n0 = scratch_panel[t] * kPanelWidth, cols = std::min(kPanelWidth, N - n0);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t c = 0; c < cols; ++c) y_data[m * N + n0 + c] += scratch[(t * M + m) * kPanelWidth + c];
    }
    return y;
  }
  // Work item i: panel i / num_chunks, row chunk i % num_chunks; one thread's
  // consecutive items share a panel, which stays in its L2.
  at::parallel_for(0, num_panels * num_chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p = i / num_chunks, chunk = i % num_chunks;
      const int64_t m0 = chunk * kRowChunk, rows = std::min(kRowChunk, M - m0);
      const int64_t n0 = p * kPanelWidth;
      rows_times_panel(x_data + m0 * K, rows, K, K, w_data + p * K * kPanelWidth,
                       bias_data != nullptr ? bias_data + n0 : nullptr, y_data + m0 * N + n0, N,
                       std::min(kPanelWidth, N - n0));
    }
  });
  return y;
}

}  // namespace modelbench
