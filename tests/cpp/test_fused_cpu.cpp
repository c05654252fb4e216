// The fused float32 CPU ops against the ATen expressions they replace (the
// ones transformers computes), on contiguous and strided inputs, with batches
// that run inline and batches that split across threads.
#include <torch/torch.h>
#undef CHECK  // torch's CHECK would shadow Catch2's
#include <catch2/catch.hpp>

#include <cstdint>

#include "fused_cpu.h"
#include "models/layers.h"

using namespace modelbench;

namespace {

torch::Tensor reference_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return weight * (x * torch::rsqrt(x.pow(2).mean(-1, true) + eps));
}

bool close(const torch::Tensor& a, const torch::Tensor& b) { return torch::allclose(a, b, 1e-5, 1e-5); }

}  // namespace

TEST_CASE("rms_norm_cpu and add_rms_norm_cpu equal the ATen norm", "[fused_cpu]") {
  torch::manual_seed(0);
  for (int64_t rows : {1, 7, 32, 300}) {  // 300 rows of 576 split across threads
    const torch::Tensor weight = torch::randn({576});
    const torch::Tensor wide = torch::randn({rows, 700});
    const torch::Tensor x = wide.narrow(1, 0, 576);  // rows 700 apart
    REQUIRE(close(rms_norm_cpu(x, weight, 1e-5), reference_rms_norm(x, weight, 1e-5)));

    torch::Tensor residual = torch::randn({rows, 576});
    const torch::Tensor sum = residual + x;
    const torch::Tensor normed = add_rms_norm_cpu(residual, x, weight, 1e-6);
    REQUIRE(close(residual, sum));  // updated in place
    REQUIRE(close(normed, reference_rms_norm(sum, weight, 1e-6)));
  }
}

TEST_CASE("RMSNorm::add_and_norm is the same on the fused and the ATen path", "[fused_cpu]") {
  torch::manual_seed(1);
  const RMSNorm norm{torch::randn({64}), 1e-5};
  torch::Tensor residual = torch::randn({5, 64});
  const torch::Tensor x = torch::randn({5, 64});
  torch::Tensor residual16 = residual.to(torch::kBFloat16);  // not fused: the sum replaces residual
  const torch::Tensor expected = reference_rms_norm(residual + x, norm.weight, 1e-5);
  REQUIRE(close(norm.add_and_norm(residual, x), expected));
  const torch::Tensor out16 = norm.add_and_norm(residual16, x.to(torch::kBFloat16));
  REQUIRE(torch::allclose(out16.to(torch::kFloat32), expected, 5e-2, 5e-2));
}

TEST_CASE("silu_mul_cpu equals silu(gate) * up", "[fused_cpu]") {
  torch::manual_seed(2);
  for (int64_t rows : {1, 32, 100}) {
    const torch::Tensor gate_up = torch::randn({rows, 2 * 1536}) * 4;
    const auto halves = gate_up.chunk(2, -1);
    REQUIRE(close(silu_mul_cpu(gate_up), torch::silu(halves[0]) * halves[1]));
  }
  REQUIRE_THROWS(silu_mul_cpu(torch::randn({2, 7})));                            // odd width
  REQUIRE_THROWS(silu_mul_cpu(torch::randn({2, 8}).to(torch::kBFloat16)));       // not float32
}

TEST_CASE("rotary_cpu_ rotates q and k heads of a fused qkv row in place as apply_rotary does", "[fused_cpu]") {
  torch::manual_seed(3);
  const int64_t tokens = 40, heads = 9, kv_heads = 3, dim = 64;
  const torch::Tensor positions = torch::randint(0, 2048, {tokens}, torch::kLong);
  const torch::Tensor inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, dim, 2).to(torch::kFloat32) / dim);
  const torch::Tensor freqs = positions.to(torch::kFloat32).unsqueeze(1) * inv_freq.unsqueeze(0);
  const torch::Tensor angles = torch::cat({freqs, freqs}, -1).unsqueeze(1);  // [tokens, 1, dim]
  const RopeTables rope{angles.cos(), angles.sin()};

  torch::Tensor qkv = torch::randn({tokens, (heads + 2 * kv_heads) * dim});
  const torch::Tensor before = qkv.clone();
  torch::Tensor qk = qkv.narrow(1, 0, (heads + kv_heads) * dim).view({tokens, heads + kv_heads, dim});
  rotary_cpu_(qk, rope.cos, rope.sin);
  const torch::Tensor expected =
      apply_rotary(before.narrow(1, 0, (heads + kv_heads) * dim).view({tokens, heads + kv_heads, dim}), rope);
  REQUIRE(close(qk, expected));
  REQUIRE(torch::equal(qkv.narrow(1, (heads + kv_heads) * dim, kv_heads * dim),
                       before.narrow(1, (heads + kv_heads) * dim, kv_heads * dim)));  // v untouched

  torch::Tensor wrong = torch::randn({tokens, heads, dim}).to(torch::kBFloat16);
  REQUIRE_THROWS(rotary_cpu_(wrong, rope.cos, rope.sin));
}
