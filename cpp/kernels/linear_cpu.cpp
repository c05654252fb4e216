// The packed float32 linear kernel: register tiles of up to 6 rows of x by
// one weight panel (64 wide with AVX-512, 16 with AVX2), accumulated over
// in_features with broadcast FMAs (simd.h). Portable loops over 64-wide
// panels without either ISA.
#include "kernels/linear_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <vector>

#include "kernels/simd.h"

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
// (it pays where a batch is compute-bound, not at one row, which is
// memory-bound) and kMinSplitK inputs. The measurements behind this and the
// constants below: docs/performance.md, "Measurements behind the kernels'
// constants".
constexpr int64_t kMinSplitRows = 8;
constexpr int64_t kMinSplitK = 64;
// Rows from which a decode batch prefetches its next panel: compute-bound
// enough that the next panel's fetch hides behind this one's tiles (one row
// streams in order and needs no help). The prefetch is spread over all of
// the panel's tiles, chunk by chunk, into L2 (measured ahead of L1).
constexpr int64_t kMinPrefetchRows = 8;

// in_features per pass over a panel's rows: all row tiles take one chunk
// (kKChunk rows of the panel: 16 KiB at 64 wide) before the next, so the
// first tile's read from memory is reused from L1 by the others, and the
// chunk after it streams in while they compute. A tile that took the whole
// panel at once read it from L2 for every tile after the first.
constexpr int64_t kKChunk = 64;

// Bytes of x per pass over all panels in a prefill chunk below
// kMinGemmRows: when each panel took all of the rows, x (500 rows x 1,536
// inputs: 3 MB) came from memory again for every panel.
constexpr int64_t kPassBytes = int64_t{1} << 20;
// Rows from which ATen's GEMM (MKL) over the unpacked panels takes over:
// it measured faster than these tiles for long prefills.
constexpr int64_t kMinGemmRows = 512;

#if defined(MODELBENCH_SIMD)

using simd::kLanes;
using simd::vfloat;
constexpr int kPanelVectors = kPanelWidth / kLanes;

// acc[m, c] (+)= sum_k x[m * ldx + k] * panel[k, c] for m < M, k < K, c < W:
// M rows of x times K rows of one panel, the M * kPanelVectors accumulators
// in registers, started from zero (`first`) or from acc (rows W apart).
// With `next`, `next_lines` cache lines from there are prefetched along the
// way, a few per k.
template <int M>
inline void tile_rows(const float* x, int64_t ldx, int64_t K, const float* panel, float* acc, bool first,
                      const char* next, int64_t next_lines) {
  vfloat a[M][kPanelVectors];
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < kPanelVectors; ++c) a[m][c] = first ? simd::zero() : simd::load(acc + m * kPanelWidth + c * kLanes);
  const auto step = [&](int64_t k) {
    const float* w = panel + k * kPanelWidth;
    vfloat wv[kPanelVectors];
    for (int c = 0; c < kPanelVectors; ++c) wv[c] = simd::load(w + c * kLanes);
    for (int m = 0; m < M; ++m) {
      const vfloat xb = simd::set1(x[m * ldx + k]);
      for (int c = 0; c < kPanelVectors; ++c) a[m][c] = simd::fmadd(xb, wv[c], a[m][c]);
    }
  };
  if (next == nullptr) {
    for (int64_t k = 0; k < K; ++k) step(k);
  } else {
    const int64_t lines_per_k = (next_lines + K - 1) / K;
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t l = k * lines_per_k, l_end = std::min(next_lines, l + lines_per_k); l < l_end; ++l)
        __builtin_prefetch(next + 64 * l, 0, 2);  // to L2
      step(k);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < kPanelVectors; ++c) simd::store(acc + m * kPanelWidth + c * kLanes, a[m][c]);
}

#else

template <int M>
inline void tile_rows(const float* x, int64_t ldx, int64_t K, const float* panel, float* acc, bool first,
                      const char* /*next*/, int64_t /*next_lines*/) {
  if (first) std::fill(acc, acc + M * kPanelWidth, 0.0f);
  for (int64_t k = 0; k < K; ++k) {
    const float* w = panel + k * kPanelWidth;
    for (int m = 0; m < M; ++m) {
      const float xv = x[m * ldx + k];
      float* am = acc + m * kPanelWidth;
#pragma omp simd
      for (int64_t c = 0; c < kPanelWidth; ++c) am[c] += xv * w[c];
    }
  }
}

#endif

template <int M>
inline void tile_dispatch(int rows, const float* x, int64_t ldx, int64_t K, const float* panel, float* acc,
                          bool first, const char* next, int64_t next_lines) {
  if constexpr (M > 0) {
    if (rows == M) return tile_rows<M>(x, ldx, K, panel, acc, first, next, next_lines);
    tile_dispatch<M - 1>(rows, x, ldx, K, panel, acc, first, next, next_lines);
  }
}

// y[m, c] = sum_k x[m * ldx + k] * panel[k, c] (+ bias[c]) for m < M (at
// most kRowChunk), k < K, c < num_cols: every row tile over one chunk of K,
// then the next chunk. With `next` (the panel this thread takes next), its
// first K rows are prefetched, spread over this panel's tiles.
void rows_times_panel(const float* x, int64_t M, int64_t ldx, int64_t K, const float* panel, const float* bias,
                      float* y, int64_t ldy, int64_t num_cols, const float* next = nullptr) {
  TORCH_INTERNAL_ASSERT(M <= kRowChunk, "rows_times_panel takes at most ", kRowChunk, " rows, got ", M);
  alignas(64) float acc[kRowChunk * kPanelWidth];  // [M, W]: the tiles' sums between chunks
  const int64_t num_tiles = (M + kTileRows - 1) / kTileRows;
  // One tile has no reuse to gain: it streams the panel in one pass.
  const int64_t k_chunk = num_tiles > 1 ? kKChunk : K;
  for (int64_t k0 = 0; k0 < K; k0 += k_chunk) {
    const int64_t kc = std::min(k_chunk, K - k0);
    const char* next_chunk = next != nullptr ? reinterpret_cast<const char*>(next + k0 * kPanelWidth) : nullptr;
    const int64_t chunk_lines = next != nullptr ? kc * kPanelWidth * static_cast<int64_t>(sizeof(float)) / 64 : 0;
    for (int64_t t = 0; t < num_tiles; ++t) {
      const int64_t m = t * kTileRows;
      // This tile's share of the next panel's chunk.
      const int64_t l0 = chunk_lines * t / num_tiles, l1 = chunk_lines * (t + 1) / num_tiles;
      tile_dispatch<kTileRows>(static_cast<int>(std::min<int64_t>(kTileRows, M - m)), x + m * ldx + k0, ldx, kc,
                               panel + k0 * kPanelWidth, acc + m * kPanelWidth, k0 == 0,
                               next_chunk != nullptr ? next_chunk + 64 * l0 : nullptr, l1 - l0);
    }
  }
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < num_cols; ++c)
      y[m * ldy + c] = acc[m * kPanelWidth + c] + (bias != nullptr ? bias[c] : 0.0f);
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
  if (M >= kMinGemmRows) {
    // A long prefill: ATen's GEMM (MKL) over the panels unpacked to
    // [in_features, out_features], a copy of 1-2 % of the product's time.
    const torch::Tensor w = packed.permute({1, 0, 2}).reshape({K, num_panels * kPanelWidth}).narrow(1, 0, N);
    return bias.defined() ? torch::addmm(b, xc, w) : torch::mm(xc, w);
  }
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
          // The thread's next panel, if its share goes on past this one.
          const float* next = u + (k1 - k0) < u_end ? w_data + (p + 1) * K * kPanelWidth : nullptr;
          if (k0 == 0) {
            rows_times_panel(x_data, M, K, k1, panel, bias_data != nullptr ? bias_data + n0 : nullptr,
                             y_data + n0, N, cols, next);
          } else {
            scratch_panel[t] = p;
            rows_times_panel(x_data + k0, M, K, k1 - k0, panel, nullptr, scratch.data() + t * M * kPanelWidth,
                             kPanelWidth, cols, next);
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
  // Rows go in passes of whole chunks whose x fits in L2 beside a panel
  // (kPassBytes); within a pass, work item i is panel i / chunks, row chunk
  // i % chunks: one thread's consecutive items share a panel, which stays in
  // its L2, and the pass's rows of x stay there for all of its panels. A
  // decode batch (one chunk, at least kMinPrefetchRows rows) prefetches the
  // thread's next panel.
  const bool prefetch = num_chunks == 1 && M >= kMinPrefetchRows;
  const int64_t pass_chunks =
      std::max<int64_t>(1, kPassBytes / (kRowChunk * K * static_cast<int64_t>(sizeof(float))));
  for (int64_t first_chunk = 0; first_chunk < num_chunks; first_chunk += pass_chunks) {
    const int64_t chunks = std::min(pass_chunks, num_chunks - first_chunk);
    at::parallel_for(0, num_panels * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t p = i / chunks, chunk = first_chunk + i % chunks;
        const int64_t m0 = chunk * kRowChunk, rows = std::min(kRowChunk, M - m0);
        const int64_t n0 = p * kPanelWidth;
        const float* panel = w_data + p * K * kPanelWidth;
        rows_times_panel(x_data + m0 * K, rows, K, K, panel, bias_data != nullptr ? bias_data + n0 : nullptr,
                         y_data + m0 * N + n0, N, std::min(kPanelWidth, N - n0),
                         prefetch && i + 1 < end ? panel + K * kPanelWidth : nullptr);
      }
    });
  }
  return y;
}

}  // namespace modelbench
