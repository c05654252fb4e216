// The packed bfloat16 linear kernel: register tiles of up to 6 rows of x by
// one 64-wide panel; per pair of inputs, a broadcast of the pair and one
// vdpbf16ps per 16 outputs.
#include "kernels/linear_bf16.h"
#include "kernels/simd_bf16.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstring>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace modelbench {
namespace {

constexpr int64_t kPanel = 64;     // output features per panel
constexpr int kTileRows = 6;       // rows of x per register tile
constexpr int64_t kRowChunk = 96;  // rows of x per work item, so long prefills split too

#if defined(__AVX512BF16__)

// The pair (x[k], x[k + 1]) as one 32-bit lane; x[k + 1] = 0 past the row's end.
inline uint32_t input_pair(const c10::BFloat16* x, int64_t k, int64_t K) {
  uint16_t lo, hi = 0;
  std::memcpy(&lo, x + k, 2);
  if (k + 1 < K) std::memcpy(&hi, x + k + 1, 2);
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// y[m, c] = sum_k x[m, k] * w[c, k] (+ bias[c]) for m < M, c < num_cols (<= 64),
// panel: [ceil(K / 2), 64, 2].
template <int M>
inline void tile(const c10::BFloat16* x, int64_t K, const c10::BFloat16* panel, const c10::BFloat16* bias,
                 c10::BFloat16* y, int64_t ldy, int64_t num_cols) {
  __m512 acc[M][4];
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < 4; ++c) acc[m][c] = _mm512_setzero_ps();
  const int64_t pairs = (K + 1) / 2;
  for (int64_t k2 = 0; k2 < pairs; ++k2) {
    const c10::BFloat16* w = panel + k2 * 2 * kPanel;
    __m512bh wv[4];
    for (int c = 0; c < 4; ++c) wv[c] = (__m512bh)_mm512_loadu_si512(w + 32 * c);
    for (int m = 0; m < M; ++m) {
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(static_cast<int>(input_pair(x + m * K, 2 * k2, K)));
      for (int c = 0; c < 4; ++c) acc[m][c] = _mm512_dpbf16_ps(acc[m][c], xb, wv[c]);
    }
  }
  for (int c = 0; c < 4; ++c) {
    const int64_t left = num_cols - c * 16;
    if (left <= 0) break;
    const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
    __m512 b = _mm512_setzero_ps();
    if (bias != nullptr) b = bf16x16_to_fp32(_mm256_maskz_loadu_epi16(mask, bias + c * 16));
    for (int m = 0; m < M; ++m) {
      const __m256bh out = _mm512_cvtneps_pbh(_mm512_add_ps(acc[m][c], b));  // round to nearest even
      _mm256_mask_storeu_epi16(y + m * ldy + c * 16, mask, (__m256i)out);
    }
  }
}

void rows_times_panel(const c10::BFloat16* x, int64_t M, int64_t K, const c10::BFloat16* panel,
                      const c10::BFloat16* bias, c10::BFloat16* y, int64_t ldy, int64_t num_cols) {
  int64_t m = 0;
  for (; m + kTileRows <= M; m += kTileRows) tile<kTileRows>(x + m * K, K, panel, bias, y + m * ldy, ldy, num_cols);
  const c10::BFloat16* xm = x + m * K;
  c10::BFloat16* ym = y + m * ldy;
  switch (M - m) {
    case 1: tile<1>(xm, K, panel, bias, ym, ldy, num_cols); break;
    case 2: tile<2>(xm, K, panel, bias, ym, ldy, num_cols); break;
    case 3: tile<3>(xm, K, panel, bias, ym, ldy, num_cols); break;
    case 4: tile<4>(xm, K, panel, bias, ym, ldy, num_cols); break;
    case 5: tile<5>(xm, K, panel, bias, ym, ldy, num_cols); break;
    default: break;
  }
}

#endif

}  // namespace

bool bf16_linear_supported() {
#if defined(__AVX512BF16__)
  return true;
#else
  return false;
#endif
}

bool bf16_amx_supported() {
  // A property of the CPU that runs, not of the code's level: oneDNN uses the
  // tiles wherever they are, whatever this file was compiled for. libgcc's
  // check includes the OS's support (XCR0's tile state).
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16");
  }();
  return supported;
}

torch::Tensor pack_linear_weight_bf16(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kBFloat16 && weight.device().is_cpu(),
              "pack_linear_weight_bf16 needs a [out_features, in_features] bfloat16 CPU tensor, got ",
              weight.sizes(), " ", weight.scalar_type(), " on ", weight.device());
  const int64_t N = weight.size(0), K = weight.size(1);
  const int64_t num_panels = (N + kPanel - 1) / kPanel, pairs = (K + 1) / 2;
  torch::Tensor padded = torch::zeros({num_panels * kPanel, pairs * 2}, weight.options());
  padded.narrow(0, 0, N).narrow(1, 0, K).copy_(weight);
  // [num_panels * 64, pairs * 2] -> [num_panels, 64, pairs, 2] -> [num_panels, pairs, 64, 2]
  return padded.view({num_panels, kPanel, pairs, 2}).permute({0, 2, 1, 3}).contiguous();
}

torch::Tensor packed_linear_bf16(const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
                                 const torch::Tensor& bias) {
  RECORD_FUNCTION("modelbench::packed_linear", std::vector<c10::IValue>());
  TORCH_CHECK(bf16_linear_supported(), "this build of modelbench has no bfloat16 linear kernel (needs AVX512-BF16)");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kBFloat16 && x.device().is_cpu(),
              "packed_linear_bf16 needs x [num_rows, in_features] bfloat16 on the CPU, got ", x.sizes(), " ",
              x.scalar_type(), " on ", x.device());
  const int64_t K = x.size(1);
  TORCH_CHECK(packed.dim() == 4 && packed.size(1) == (K + 1) / 2 && packed.size(2) == kPanel &&
                  packed.size(3) == 2 && packed.scalar_type() == torch::kBFloat16 && packed.is_contiguous(),
              "packed weight must be [num_panels, ", (K + 1) / 2, ", ", kPanel, ", 2] bfloat16, got ",
              packed.sizes());
  const int64_t num_panels = packed.size(0);
  TORCH_CHECK(out_features > (num_panels - 1) * kPanel && out_features <= num_panels * kPanel,
              "out_features ", out_features, " does not match ", num_panels, " panels of ", kPanel);
  torch::Tensor b;
  if (bias.defined()) {
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == out_features && bias.scalar_type() == torch::kBFloat16,
                "bias must be [", out_features, "] bfloat16, got ", bias.sizes(), " ", bias.scalar_type());
    b = bias.contiguous();
  }
  const torch::Tensor xc = x.contiguous();
  const int64_t M = x.size(0), N = out_features;
  torch::Tensor y = torch::empty({M, N}, x.options());  // [num_rows, out_features]
  if (M == 0) return y;
#if defined(__AVX512BF16__)
  const c10::BFloat16* x_data = xc.data_ptr<c10::BFloat16>();
  const c10::BFloat16* w_data = packed.data_ptr<c10::BFloat16>();
  const c10::BFloat16* bias_data = b.defined() ? b.data_ptr<c10::BFloat16>() : nullptr;
  c10::BFloat16* y_data = y.data_ptr<c10::BFloat16>();
  const int64_t panel_size = packed.size(1) * kPanel * 2;
  const int64_t num_chunks = (M + kRowChunk - 1) / kRowChunk;
  // Work item i: panel i / num_chunks, row chunk i % num_chunks (as in the float32 kernel).
  at::parallel_for(0, num_panels * num_chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p = i / num_chunks, chunk = i % num_chunks;
      const int64_t m0 = chunk * kRowChunk, rows = std::min(kRowChunk, M - m0);
      const int64_t n0 = p * kPanel;
      rows_times_panel(x_data + m0 * K, rows, K, w_data + p * panel_size,
                       bias_data != nullptr ? bias_data + n0 : nullptr, y_data + m0 * N + n0, N,
                       std::min(kPanel, N - n0));
    }
  });
#endif
  return y;
}

}  // namespace modelbench
