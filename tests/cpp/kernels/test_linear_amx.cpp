// The AMX bf16-product linear against the same products summed in float32
// by ATen (x and the weight rounded to bf16 first): 16-row tails, an odd
// number of 16-output blocks, bias or none. Where the process cannot use
// AMX tiles, it must refuse with a message instead.
#include <torch/torch.h>
#undef CHECK  // torch's CHECK would shadow Catch2's
#include <catch2/catch.hpp>

#include <cstdint>

#include "../skip_case.h"
#include "kernels/linear_amx.h"

using namespace modelbench;


TEST_CASE("amx_linear equals float32 sums of bf16 products (AMX CPUs only)", "[linear_amx]") {
  if (!amx_linear_supported()) SKIP_CASE("this CPU, process or build cannot use AMX tiles");
  torch::manual_seed(0);
  for (const auto& [in_features, out_features] : {std::pair<int64_t, int64_t>{32, 16}, {384, 1152}, {96, 80}}) {
    const torch::Tensor weight = torch::randn({out_features, in_features});
    const torch::Tensor bias = torch::randn({out_features});
    const torch::Tensor packed = pack_amx_weight(weight);
    REQUIRE(packed.sizes() == at::IntArrayRef({out_features / 16, in_features / 2, 16, 2}));
    const torch::Tensor w16 = weight.to(torch::kBFloat16).to(torch::kFloat64);
    for (int64_t rows : {1, 15, 16, 17, 32, 33, 47, 100}) {
      const torch::Tensor x = torch::randn({rows, in_features});
      const torch::Tensor ours = amx_linear(x, packed, out_features, bias);
      REQUIRE(ours.scalar_type() == torch::kFloat32);
      REQUIRE(ours.sizes() == at::IntArrayRef({rows, out_features}));
      REQUIRE(ours.is_contiguous());
      const torch::Tensor x16 = x.to(torch::kBFloat16).to(torch::kFloat64);
      const torch::Tensor exact = torch::linear(x16, w16, bias.to(torch::kFloat64));
      // Exact products, float32 sums in some order: a few float32 roundings apart.
      REQUIRE(torch::allclose(ours.to(torch::kFloat64), exact, 1e-5, 1e-4));
      REQUIRE(torch::allclose(amx_linear(x, packed, out_features, torch::Tensor()).to(torch::kFloat64),
                              torch::linear(x16, w16), 1e-5, 1e-4));
    }
  }
}

TEST_CASE("pack_amx_weight takes only float32 weights that fit the tiles", "[linear_amx]") {
  REQUIRE(amx_linear_fits(16, 32));
  REQUIRE_FALSE(amx_linear_fits(24, 32));
  REQUIRE_FALSE(amx_linear_fits(16, 48));
  REQUIRE_THROWS_WITH(pack_amx_weight(torch::randn({24, 32})), Catch::Contains("multiple of 16"));
  REQUIRE_THROWS_WITH(pack_amx_weight(torch::randn({16, 32}).to(torch::kBFloat16)), Catch::Contains("float32"));
}

TEST_CASE("without AMX tiles, amx_linear refuses to run", "[linear_amx]") {
  if (amx_linear_supported()) SKIP_CASE("this CPU and process can use AMX tiles");
  const torch::Tensor packed = pack_amx_weight(torch::randn({16, 32}));
  REQUIRE_THROWS_WITH(amx_linear(torch::randn({2, 32}), packed, 16, torch::Tensor()), Catch::Contains("AMX"));
}
