// The packed bfloat16 linear kernel against ATen's bf16 linear (fp32
// accumulation, one rounding): row tails, short panels, odd in_features
// (the last input pair half empty), bias. Where the build has no
// AVX512-BF16, the kernel must refuse with a message instead.
#include <torch/torch.h>
#undef CHECK  // torch's CHECK would shadow Catch2's
#include <catch2/catch.hpp>

#include <cstdint>

#include "../skip_case.h"
#include "kernels/linear_bf16.h"

using namespace modelbench;


TEST_CASE("packed_linear_bf16 equals ATen's bfloat16 linear (AVX512-BF16 builds only)", "[linear_bf16]") {
  if (!bf16_linear_supported()) SKIP_CASE("this build has no AVX512-BF16 kernel");
  torch::manual_seed(0);
  const auto bf16 = torch::kBFloat16;
  for (const auto& [in_features, out_features] : {std::pair<int64_t, int64_t>{64, 64}, {71, 33}, {129, 200}}) {
    const torch::Tensor weight = torch::randn({out_features, in_features}).to(bf16);
    const torch::Tensor bias = torch::randn({out_features}).to(bf16);
    const torch::Tensor packed = pack_linear_weight_bf16(weight);
    REQUIRE(packed.sizes() == at::IntArrayRef({(out_features + 63) / 64, (in_features + 1) / 2, 64, 2}));
    for (int64_t rows : {1, 2, 5, 6, 7, 13, 97, 250}) {
      const torch::Tensor x = torch::randn({rows, in_features}).to(bf16);
      const torch::Tensor ours = packed_linear_bf16(x, packed, out_features, bias);
      REQUIRE(ours.scalar_type() == bf16);
      REQUIRE(ours.sizes() == at::IntArrayRef({rows, out_features}));
      // Exact products summed in fp32 in another order: within one bf16 rounding of each other.
      const torch::Tensor exact = torch::linear(x.to(torch::kFloat32), weight.to(torch::kFloat32),
                                                bias.to(torch::kFloat32));
      REQUIRE(torch::allclose(ours.to(torch::kFloat32), exact, 1e-2, 1e-2));
      REQUIRE(torch::allclose(ours.to(torch::kFloat32), torch::linear(x, weight, bias).to(torch::kFloat32), 1e-2,
                              1e-2));
      REQUIRE(torch::allclose(packed_linear_bf16(x, packed, out_features, torch::Tensor()).to(torch::kFloat32),
                              torch::linear(x, weight).to(torch::kFloat32), 1e-2, 1e-2));
    }
  }
}

TEST_CASE("pack_linear_weight_bf16 takes only bfloat16 weights", "[linear_bf16]") {
  REQUIRE_THROWS(pack_linear_weight_bf16(torch::randn({10, 8})));  // float32
}

TEST_CASE("without AVX512-BF16, packed_linear_bf16 refuses to run", "[linear_bf16]") {
  if (bf16_linear_supported()) SKIP_CASE("this build has the AVX512-BF16 kernel");
  const auto bf16 = torch::kBFloat16;
  const torch::Tensor packed = pack_linear_weight_bf16(torch::randn({8, 8}).to(bf16));
  REQUIRE_THROWS(packed_linear_bf16(torch::randn({2, 8}).to(bf16), packed, 8, torch::Tensor()));
}

TEST_CASE("packed_linear_bf16 rejects what it cannot compute (AVX512-BF16 builds only)", "[linear_bf16]") {
  if (!bf16_linear_supported()) SKIP_CASE("this build has no AVX512-BF16 kernel");
  const auto bf16 = torch::kBFloat16;
  const torch::Tensor packed = pack_linear_weight_bf16(torch::randn({10, 8}).to(bf16));
  REQUIRE_THROWS(packed_linear_bf16(torch::randn({2, 10}).to(bf16), packed, 10, torch::Tensor()));  // in_features
  REQUIRE_THROWS(packed_linear_bf16(torch::randn({2, 8}).to(bf16), packed, 65, torch::Tensor()));   // out_features
  REQUIRE_THROWS(packed_linear_bf16(torch::randn({2, 8}), packed, 10, torch::Tensor()));            // x float32
  REQUIRE_THROWS(packed_linear_bf16(torch::randn({2, 8}).to(bf16), packed, 10, torch::randn({10})));  // bias dtype
  REQUIRE(packed_linear_bf16(torch::randn({0, 8}).to(bf16), packed, 10, torch::Tensor()).size(0) == 0);
}
