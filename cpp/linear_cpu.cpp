// The packed float32 linear kernel: register tiles of up to 6 rows of x by
// one weight panel (64 wide with AVX-512, 16 with AVX2), accumulated over
// in_features with broadcast FMAs (simd.h). Portable loops over 64-wide
// panels without either ISA.
#include "linear_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <vector>

#include "simd.h"

namespace modelbench {
namespace {

// Output features per panel: with AVX-512, 4 vectors (6 rows x 4 = 24 of
// its 32 registers accumulate); with AVX2, 2 (12 of 16, the shape of BLIS's
// Haswell kernel); the portable loops take 64.
#if defined(__AVX512F__) || !defined(MODELBENCH_SIMD)
constexpr int64_t kPanelWidth = 64;
#else
constexpr int64_t kPanelWidth = 16;
#endif
constexpr int kTileRows = 6;       // rows of x per register tile
constexpr int64_t kRowChunk = 96;  // rows of x per work item (16 tiles), so long prefills split too
// A panel is cut between threads for batches of at least kMinSplitRows rows
// (compute-bound: measured 10 % faster for SmolLM2's 9- and 15-panel outputs
// at 32 rows; at one row, memory-bound, it did not pay) and kMinSplitK inputs.
constexpr int64_t kMinSplitRows = 8;
constexpr int64_t kMinSplitK = 64;
// Rows from which a decode batch prefetches its next panel: compute-bound
// enough that the next panel's fetch hides behind this one's tiles
// (AVX2 machine, 40 weights of 3072 x 576 at 32 rows, runs alternated:
// 94 against 87 GFLOP/s; one row streams in order and needs no help).
constexpr int64_t kMinPrefetchRows = 8;

#if defined(MODELBENCH_SIMD)

using simd::kLanes;
using simd::vfloat;
constexpr int kPanelVectors = kPanelWidth / kLanes;

// y[m, c] = sum_k x[m * ldx + k] * panel[k, c] (+ bias[c]) for m < M, k < K,
// c < num_cols: M rows of x times one panel, its M * kPanelVectors
// accumulators in registers. With `next`, the same rows of the panel the
// thread takes next are prefetched as this one is read.
template <int M>
inline void tile_rows(const float* x, int64_t ldx, int64_t K, const float* panel, const float* bias, float* y,
                      int64_t ldy, int64_t num_cols, const float* next = nullptr) {
  vfloat acc[M][kPanelVectors];
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < kPanelVectors; ++c) acc[m][c] = simd::zero();
  for (int64_t k = 0; k < K; ++k) {
    const float* w = panel + k * kPanelWidth;
    if (next != nullptr)
      for (int64_t line = 0; line < kPanelWidth / 16; ++line) __builtin_prefetch(next + k * kPanelWidth + 16 * line, 0, 3);
    vfloat wv[kPanelVectors];
    for (int c = 0; c < kPanelVectors; ++c) wv[c] = simd::load(w + c * kLanes);
    for (int m = 0; m < M; ++m) {
      const vfloat xb = simd::set1(x[m * ldx + k]);
      for (int c = 0; c < kPanelVectors; ++c) acc[m][c] = simd::fmadd(xb, wv[c], acc[m][c]);
    }
  }
  if (num_cols == kPanelWidth) {
    for (int c = 0; c < kPanelVectors; ++c) {
      const vfloat b = bias != nullptr ? simd::load(bias + c * kLanes) : simd::zero();
      for (int m = 0; m < M; ++m) simd::store(y + m * ldy + c * kLanes, simd::add(acc[m][c], b));
    }
    return;
  }
  float row[kPanelWidth];  // the last panel, partly past out_features
  for (int m = 0; m < M; ++m) {
    for (int c = 0; c < kPanelVectors; ++c) simd::store(row + c * kLanes, acc[m][c]);
    for (int64_t c = 0; c < num_cols; ++c) y[m * ldy + c] = row[c] + (bias != nullptr ? bias[c] : 0.0f);
  }
}

#else

template <int M>
inline void tile_rows(const float* x, int64_t ldx, int64_t K, const float* panel, const float* bias, float* y,
                      int64_t ldy, int64_t num_cols, const float* /*next*/ = nullptr) {
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

// Rows [0, M) of x (rows ldx apart) times K rows of one panel. With `next`
// (the panel this thread takes next), the first tile prefetches it: a batch
// of rows computes on a panel long enough to hide the next one's fetch.
void rows_times_panel(const float* x, int64_t M, int64_t ldx, int64_t K, const float* panel, const float* bias,
                      float* y, int64_t ldy, int64_t num_cols, const float* next = nullptr) {
  int64_t m = 0;
  for (; m + kTileRows <= M; m += kTileRows, next = nullptr)
    tile_rows<kTileRows>(x + m * ldx, ldx, K, panel, bias, y + m * ldy, ldy, num_cols, next);
  const float* xm = x + m * ldx;
  float* ym = y + m * ldy;
  switch (M - m) {
    case 1: tile_rows<1>(xm, ldx, K, panel, bias, ym, ldy, num_cols, next); break;
    case 2: tile_rows<2>(xm, ldx, K, panel, bias, ym, ldy, num_cols, next); break;
    case 3: tile_rows<3>(xm, ldx, K, panel, bias, ym, ldy, num_cols, next); break;
    case 4: tile_rows<4>(xm, ldx, K, panel, bias, ym, ldy, num_cols, next); break;
    case 5: tile_rows<5>(xm, ldx, K, panel, bias, ym, ldy, num_cols, next); break;
    default: break;
  }
}

}  // namespace

int64_t linear_panel_width() { return kPanelWidth; }

torch::Tensor pack_linear_weight(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kFloat32 && weight.device().is_cpu(),
              "pack_linear_weight needs a [out_features, in_features] float32 CPU tensor, got ", weight.sizes(),
              " ", weight.scalar_type(), " on ", weight.device());
  const int64_t N = weight.size(0), K = weight.size(1);
  const int64_t num_panels = (N + kPanelWidth - 1) / kPanelWidth;
  torch::Tensor padded = torch::zeros({num_panels * kPanelWidth, K}, weight.options());
  padded.narrow(0, 0, N).copy_(weight);
  // [num_panels * W, K] -> [num_panels, W, K] -> [num_panels, K, W]
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
  // consecutive items share a panel, which stays in its L2. A decode batch
  // (one chunk, at least kMinPrefetchRows rows) prefetches the thread's next panel.
  const bool prefetch = num_chunks == 1 && M >= kMinPrefetchRows;
  at::parallel_for(0, num_panels * num_chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p = i / num_chunks, chunk = i % num_chunks;
      const int64_t m0 = chunk * kRowChunk, rows = std::min(kRowChunk, M - m0);
      const int64_t n0 = p * kPanelWidth;
      const float* panel = w_data + p * K * kPanelWidth;
      rows_times_panel(x_data + m0 * K, rows, K, K, panel, bias_data != nullptr ? bias_data + n0 : nullptr,
                       y_data + m0 * N + n0, N, std::min(kPanelWidth, N - n0),
                       prefetch && i + 1 < end ? panel + K * kPanelWidth : nullptr);
    }
  });
  return y;
}

}  // namespace modelbench
