// The packed float32 linear kernel against torch::linear: every tail of the
// row tiles (1 to 6 rows and more), panels cut short by out_features, odd
// in_features, with and without bias, several row chunks, and odd panel
// counts (cut between threads along in_features), in_features that are not
// a whole number of the kernel's k chunks.
#include <torch/torch.h>
#undef CHECK  // torch's CHECK would shadow Catch2's
#include <catch2/catch.hpp>

#include <cstdint>

#include "kernels/linear_cpu.h"

using namespace modelbench;

TEST_CASE("packed_linear equals torch::linear", "[linear_cpu]") {
  torch::manual_seed(0);
  const int64_t W = linear_panel_width();  // 64 (AVX-512) or 16 (AVX2)
  REQUIRE((W == 16 || W == 64));
  // Odd panel counts (576 and 960 outputs in 64-wide panels: 9 and 15; 144
  // and 240 in 16-wide ones): panels that do not split evenly over 2
  // threads, cut along in_features from 8 rows on.
  for (const auto& [in_features, out_features] :
       {std::pair<int64_t, int64_t>{64, 64}, {70, 33}, {129, 200}, {576, 576}, {1536, 576}, {576, 960}, {100, 130},
        {576, 144}, {300, 240}, {17, 7}}) {
    const torch::Tensor weight = torch::randn({out_features, in_features});
    const torch::Tensor bias = torch::randn({out_features});
    const torch::Tensor packed = pack_linear_weight(weight);
    REQUIRE(packed.sizes() == at::IntArrayRef({(out_features + W - 1) / W, in_features, W}));
    // 97 rows and more: several row chunks of 96; from 1,536 inputs (and at
    // 500 rows from 576), more than one pass over the panels (1 MiB of x each);
    // from 512 rows, ATen's GEMM over the unpacked panels.
    for (int64_t rows : {1, 2, 3, 4, 5, 6, 7, 8, 13, 32, 96, 97, 250, 500, 600}) {
      const torch::Tensor x = torch::randn({rows, in_features});
      const torch::Tensor with_bias = packed_linear(x, packed, out_features, bias);
      REQUIRE(with_bias.sizes() == at::IntArrayRef({rows, out_features}));
      // Against float64: a sum of in_features fp32 products in order is off by
      // up to about 1e-7 * in_features here (2e-4 at 1,536); a missed or
      // doubled term is off by about 1.
      const double atol = 3e-7 * static_cast<double>(in_features);
      const torch::Tensor x64 = x.to(torch::kDouble), w64 = weight.to(torch::kDouble);
      REQUIRE(torch::allclose(with_bias.to(torch::kDouble), torch::linear(x64, w64, bias.to(torch::kDouble)), 1e-5,
                              atol));
      REQUIRE(torch::allclose(packed_linear(x, packed, out_features, torch::Tensor()).to(torch::kDouble),
                              torch::linear(x64, w64), 1e-5, atol));
    }
  }
}

TEST_CASE("packed_linear rejects what it cannot compute", "[linear_cpu]") {
  const torch::Tensor packed = pack_linear_weight(torch::randn({10, 8}));
  REQUIRE_THROWS(packed_linear(torch::randn({2, 9}), packed, 10, torch::Tensor()));        // in_features
  REQUIRE_THROWS(packed_linear(torch::randn({2, 8}), packed, 65, torch::Tensor()));        // out_features
  REQUIRE_THROWS(packed_linear(torch::randn({2, 8}).to(torch::kBFloat16), packed, 10, torch::Tensor()));
  REQUIRE_THROWS(packed_linear(torch::randn({2, 8}), packed, 10, torch::randn({9})));      // bias
  REQUIRE_THROWS(pack_linear_weight(torch::randn({10, 8}).to(torch::kBFloat16)));
  REQUIRE(packed_linear(torch::randn({0, 8}), packed, 10, torch::Tensor()).size(0) == 0);
}
