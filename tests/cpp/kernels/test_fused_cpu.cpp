// The fused float32 CPU ops against the ATen expressions they replace (the
// ones transformers computes), on contiguous and strided inputs, with batches
// that run inline and batches that split across threads.
#include <torch/torch.h>
#undef CHECK  // torch's CHECK would shadow Catch2's
#include <catch2/catch.hpp>

#include <cstdint>

#include "kernels/fused_cpu.h"
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
  torch::Tensor residual16 = residual.to(torch::kHalf);  // float16 is not fused: the sum replaces residual
  const torch::Tensor sum = residual + x;
  const torch::Tensor expected = reference_rms_norm(sum, norm.weight, 1e-5);
  REQUIRE(close(norm.add_and_norm(residual, x), expected));
  const RMSNorm norm16{norm.weight.to(torch::kHalf), 1e-5};
  const torch::Tensor out16 = norm16.add_and_norm(residual16, x.to(torch::kHalf));
  REQUIRE(torch::allclose(residual16.to(torch::kFloat32), sum, 1e-2, 1e-2));
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
  REQUIRE_THROWS(silu_mul_cpu(torch::randn({2, 8}).to(torch::kHalf)));           // neither float32 nor bf16
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

  torch::Tensor wrong = torch::randn({tokens, heads, dim}).to(torch::kHalf);
  REQUIRE_THROWS(rotary_cpu_(wrong, rope.cos, rope.sin));
}

namespace {

// bf16 results computed in the same order of operations as ATen's bf16 ops
// round where they round; sums taken in another order may move a rare
// element by one bf16 step.
void require_bf16_match(const torch::Tensor& ours, const torch::Tensor& expected) {
  REQUIRE(ours.scalar_type() == torch::kBFloat16);
  const double equal = ours.eq(expected).to(torch::kFloat32).mean().item<double>();
  REQUIRE(equal > 0.99);
  REQUIRE(torch::allclose(ours.to(torch::kFloat32), expected.to(torch::kFloat32), 1e-2, 1e-2));
}

}  // namespace

TEST_CASE("the fused ops in bfloat16 round where ATen's bfloat16 ops round", "[fused_cpu]") {
  torch::manual_seed(4);
  const auto bf16 = torch::kBFloat16;
  for (int64_t rows : {1, 32, 300}) {
    const torch::Tensor weight = torch::randn({576}).to(bf16);
    const torch::Tensor x = torch::randn({rows, 576}).to(bf16);
    const RMSNorm norm{weight, 1e-5};
    // transformers' LlamaRMSNorm: normalise in fp32, back to bf16, times the weight in bf16.
    const auto x32 = x.to(torch::kFloat32);
    const torch::Tensor expected = weight * (x32 * torch::rsqrt(x32.pow(2).mean(-1, true) + 1e-5)).to(bf16);
    require_bf16_match(rms_norm_cpu(x, weight, 1e-5), expected);

    torch::Tensor residual = torch::randn({rows, 576}).to(bf16);
    const torch::Tensor sum = residual + x;  // a bf16 add
    const auto sum32 = sum.to(torch::kFloat32);
    const torch::Tensor normed = add_rms_norm_cpu(residual, x, weight, 1e-5);
    REQUIRE(torch::equal(residual, sum));
    require_bf16_match(normed, weight * (sum32 * torch::rsqrt(sum32.pow(2).mean(-1, true) + 1e-5)).to(bf16));

    const torch::Tensor gate_up = (torch::randn({rows, 2 * 1536}) * 4).to(bf16);
    const auto halves = gate_up.chunk(2, -1);
    require_bf16_match(silu_mul_cpu(gate_up), torch::silu(halves[0]) * halves[1]);
  }

  const int64_t tokens = 40, heads = 12, dim = 64;
  const torch::Tensor positions = torch::randint(0, 2048, {tokens}, torch::kLong);
  const torch::Tensor inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, dim, 2).to(torch::kFloat32) / dim);
  const torch::Tensor freqs = positions.to(torch::kFloat32).unsqueeze(1) * inv_freq.unsqueeze(0);
  const torch::Tensor angles = torch::cat({freqs, freqs}, -1).unsqueeze(1);
  const RopeTables rope{angles.cos().to(bf16), angles.sin().to(bf16)};
  torch::Tensor qk = torch::randn({tokens, heads, dim}).to(bf16);
  const torch::Tensor expected = apply_rotary(qk, rope);
  rotary_cpu_(qk, rope.cos, rope.sin);
  require_bf16_match(qk, expected);
}
