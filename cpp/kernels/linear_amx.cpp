// The AMX bf16 linear (linear_amx.h). Eight tiles of 16 rows x 64 bytes:
// 0-3 the fp32 sums (2 x 2 blocks of 16 x 16), 4-5 two 16-row blocks of x
// (32 bf16 inputs each), 6-7 two 16-output blocks of the weight (16 input
// pairs each). x is rounded to bf16 once per call, padded to 16 rows with
// zeros; the sums are stored straight into the output.
#include "kernels/linear_amx.h"

#include <ATen/Parallel.h>

#if defined(__AVX512F__)
#include <immintrin.h>

#include "kernels/amx_tiles.h"
#endif

#include <algorithm>

namespace modelbench {

bool amx_linear_fits(int64_t out_features, int64_t in_features) {
  return out_features > 0 && in_features > 0 && out_features % 16 == 0 && in_features % 32 == 0;
}

torch::Tensor pack_amx_weight(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kFloat32 && weight.device().is_cpu() &&
                  amx_linear_fits(weight.size(0), weight.size(1)),
              "pack_amx_weight needs a [N, K] float32 CPU tensor with N a multiple of 16 and K of 32, got ",
              weight.sizes(), " ", weight.scalar_type(), " on ", weight.device());
  const int64_t N = weight.size(0), K = weight.size(1);
  // [N / 16, 16, K / 2, 2] -> [N / 16, K / 2, 16, 2]
  return weight.to(torch::kBFloat16).view({N / 16, 16, K / 2, 2}).permute({0, 2, 1, 3}).contiguous();
}

#if defined(__AVX512F__)
namespace {

using amx::TileConfig;

// Tiles 0-7: 16 rows of 64 bytes. In memory for good (ldtilecfg's asm
// names only its first bytes as read, so a local could be half written).
constexpr TileConfig kTileConfig = {1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

__attribute__((target("amx-tile"))) void configure_tiles() { _tile_loadconfig(&kTileConfig); }

__attribute__((target("amx-tile"))) void release_tiles() { _tile_release(); }

// MT blocks of 16 rows of x times NT blocks of 16 outputs, over all of K.
// a: x's first row (bf16, lda elements per row); b: the first output
// block's packed weight (blocks K * 16 elements apart); c: the output's first
// row (ldc floats per row).
template <int MT, int NT>
__attribute__((target("amx-tile,amx-bf16"))) void tile_block(const c10::BFloat16* a, int64_t lda,
                                                             const c10::BFloat16* b, int64_t K, float* c,
                                                             int64_t ldc) {
  _tile_zero(0);
  if constexpr (NT == 2) _tile_zero(1);
  if constexpr (MT == 2) _tile_zero(2);
  if constexpr (MT == 2 && NT == 2) _tile_zero(3);
  const int64_t a_stride = lda * 2, next_b = K * 16;
  for (int64_t k = 0; k < K; k += 32) {
    _tile_loadd(4, a + k, a_stride);
    if constexpr (MT == 2) _tile_loadd(5, a + 16 * lda + k, a_stride);
    _tile_loadd(6, b + k * 16, 64);
    if constexpr (NT == 2) _tile_loadd(7, b + next_b + k * 16, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NT == 2) _tile_dpbf16ps(1, 4, 7);
    if constexpr (MT == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (MT == 2 && NT == 2) _tile_dpbf16ps(3, 5, 7);
  }
  const int64_t c_stride = ldc * 4;
  _tile_stored(0, c, c_stride);
  if constexpr (NT == 2) _tile_stored(1, c + 16, c_stride);
  if constexpr (MT == 2) _tile_stored(2, c + 16 * ldc, c_stride);
  if constexpr (MT == 2 && NT == 2) _tile_stored(3, c + 16 * ldc + 16, c_stride);
}

template <int NT>
void column_block(const c10::BFloat16* a, int64_t padded_rows, int64_t K, const c10::BFloat16* b, float* c,
                  int64_t N) {
  int64_t m = 0;
  for (; m + 32 <= padded_rows; m += 32) tile_block<2, NT>(a + m * K, K, b, K, c + m * N, N);
  if (m < padded_rows) tile_block<1, NT>(a + m * K, K, b, K, c + m * N, N);
}

}  // namespace

bool amx_linear_supported() {
  static const bool supported = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) return false;
    return amx::request_tiles();
  }();
  return supported;
}

torch::Tensor amx_linear(const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
                         const torch::Tensor& bias) {
  TORCH_CHECK(amx_linear_supported(), "amx_linear: this CPU or process cannot use AMX tiles");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "amx_linear needs x [num_rows, in_features] float32 on the CPU, got ", x.sizes(), " ",
              x.scalar_type());
  const int64_t M = x.size(0), K = x.size(1), N = out_features;
  TORCH_CHECK(packed.dim() == 4 && packed.size(0) * 16 == N && packed.size(1) * 2 == K,
              "amx_linear: the packed weight ", packed.sizes(), " does not match x ", x.sizes(), " and ", N,
              " outputs");
  const int64_t padded_rows = (M + 15) / 16 * 16;
  torch::Tensor a = torch::empty({padded_rows, K}, torch::kBFloat16);
  a.narrow(0, 0, M).copy_(x);
  if (padded_rows > M) a.narrow(0, M, padded_rows - M).zero_();
  torch::Tensor y = torch::empty({padded_rows, N}, torch::kFloat32);
  const c10::BFloat16* a_data = a.data_ptr<c10::BFloat16>();
  const c10::BFloat16* b_data = packed.data_ptr<c10::BFloat16>();
  const float* bias_data = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* y_data = y.data_ptr<float>();
  const int64_t pairs = (N / 16 + 1) / 2;  // 32 outputs per work item (16 for an odd last one)
  at::parallel_for(0, pairs, 1, [&](int64_t begin, int64_t end) {
    configure_tiles();
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n0 = 32 * p, width = std::min<int64_t>(32, N - n0);
      const c10::BFloat16* b = b_data + n0 * K;  // block n0 / 16, K * 16 elements each
      if (width == 32)
        column_block<2>(a_data, padded_rows, K, b, y_data + n0, N);
      else
        column_block<1>(a_data, padded_rows, K, b, y_data + n0, N);
      if (bias_data != nullptr)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = n0; n < n0 + width; ++n) y_data[m * N + n] += bias_data[n];
    }
    release_tiles();
  });
  return y.narrow(0, 0, M);
}

#else  // a build below AVX-512 has no tile code

bool amx_linear_supported() { return false; }

torch::Tensor amx_linear(const torch::Tensor&, const torch::Tensor&, int64_t, const torch::Tensor&) {
  TORCH_CHECK(false, "amx_linear: this build of the kernels has no AMX code (it is in the AVX-512 level)");
}

#endif

}  // namespace modelbench
