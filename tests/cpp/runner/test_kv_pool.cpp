// KVPool: sizing from a memory budget, pool shapes, slot writes.
#include <torch/torch.h>
#undef CHECK  // torch's CHECK would shadow Catch2's
#include <catch2/catch.hpp>

#include "core/config.h"
#include "kernels/hadamard.h"
#include "runner/kv_pool.h"

using namespace modelbench;

namespace {
KVCacheSpec small_spec(torch::ScalarType dtype = torch::kFloat32) {
  KVCacheSpec spec;
  spec.num_layers = 3;
  spec.num_kv_heads = 2;
  spec.head_dim = 8;
  spec.block_size = 4;
  spec.dtype = dtype;
  return spec;
}
}  // namespace

TEST_CASE("the pool is sized from a byte budget", "[kv_pool]") {
  const KVCacheSpec spec = small_spec();
  // K and V, 3 layers, 4 tokens, 2 heads, 8 dims, 4 bytes.
  REQUIRE(spec.bytes_per_block() == 2 * 3 * 4 * 2 * 8 * 4);
  REQUIRE(num_blocks_for_memory(spec, 10 * spec.bytes_per_block()) == 10);
  REQUIRE(num_blocks_for_memory(spec, 10 * spec.bytes_per_block() - 1) == 9);
  REQUIRE(num_blocks_for_memory(small_spec(torch::kBFloat16), 10 * spec.bytes_per_block()) == 20);
  REQUIRE_THROWS_AS(num_blocks_for_memory(spec, -1), InvalidArgument);
  REQUIRE(available_host_memory_bytes() > 0);
}

TEST_CASE("slot writes land at block * block_size + offset, in one layer only", "[kv_pool]") {
  KVPool pool(small_spec(), 6);
  REQUIRE(pool.key(0).sizes() == torch::IntArrayRef({6, 2, 4, 8}));  // [blocks, kv heads, block_size, head_dim]
  REQUIRE(pool.num_bytes() == 6 * small_spec().bytes_per_block());
  auto k = torch::randn({3, 2, 8});
  auto v = torch::randn({3, 2, 8});
  auto slots = torch::tensor({0, 9, 23}, torch::kLong);  // (0,0), (2,1), (5,3)
  pool.write(1, slots, k, v);
  using torch::indexing::Slice;
  REQUIRE(torch::equal(pool.key(1).index({0, Slice(), 0}), k[0]));
  REQUIRE(torch::equal(pool.key(1).index({2, Slice(), 1}), k[1]));
  REQUIRE(torch::equal(pool.value(1).index({5, Slice(), 3}), v[2]));
  REQUIRE(pool.key(1).count_nonzero().item<int64_t>() == 3 * 2 * 8);  // nothing else written
  REQUIRE_THROWS(pool.write(0, torch::tensor({24}, torch::kLong), k.narrow(0, 0, 1), v.narrow(0, 0, 1)));
  REQUIRE(pool.key(0).abs().sum().item<float>() == 0.0f);
  REQUIRE(pool.key(2).abs().sum().item<float>() == 0.0f);
}

TEST_CASE("a write with the wrong shape is refused", "[kv_pool]") {
  KVPool pool(small_spec(), 2);
  auto slots = torch::tensor({0, 1}, torch::kLong);
  REQUIRE_THROWS(pool.write(0, slots, torch::randn({2, 2, 4}), torch::randn({2, 2, 4})));
  REQUIRE_THROWS_AS(KVPool(small_spec(), 0), InvalidArgument);
}

TEST_CASE("an int8 pool keeps each row as int8 with a scale beside it", "[kv_pool]") {
  const KVCacheSpec spec = small_spec(torch::kChar);
  REQUIRE(spec.int8());
  REQUIRE(spec.bytes_per_block() == 2 * 3 * 4 * 2 * (8 + 4));  // 8 int8s and a float32 scale a row
  KVPool pool(spec, 6);
  REQUIRE(pool.key(0).scalar_type() == torch::kChar);
  const KVRowScales scales = pool.row_scales(1);
  REQUIRE(scales.defined());
  REQUIRE(scales.key.sizes() == torch::IntArrayRef({6, 2, 4}));
  auto k = torch::randn({3, 2, 8}) * 10;
  auto v = torch::randn({3, 2, 8});
  v[1][0].zero_();
  auto slots = torch::tensor({0, 9, 23}, torch::kLong);
  pool.write(1, slots, k, v);
  REQUIRE(int8_keys_rotated(8));  // keys are stored as H k (hadamard.h)
  const torch::Tensor h = hadamard_matrix(8);
  REQUIRE(torch::allclose(torch::matmul(h, h), torch::eye(8), 1e-5, 1e-6));
  // Every device's formula: s = max|x| / 127, q = round(x / s) (x * 127 / max|x|, half to even).
  // `steps`: how far an int8 may be from the formula's (the pool rotates keys by butterflies,
  // this test by a matmul: a value at a rounding boundary may land one step apart).
  auto check = [&](const torch::Tensor& given, const torch::Tensor& data, const torch::Tensor& row_scales,
                   int steps) {
    const std::vector<std::pair<int64_t, int64_t>> where{{0, 0}, {2, 1}, {5, 3}};
    for (int64_t t = 0; t < 3; ++t) {
      using torch::indexing::Slice;
      const auto [block, offset] = where[t];
      const torch::Tensor absmax = given[t].abs().amax(-1);  // [heads]
      const torch::Tensor inverse = torch::where(absmax > 0, 127.0f / absmax, torch::zeros_like(absmax));
      const torch::Tensor expected = (given[t] * inverse.unsqueeze(-1)).round().clamp(-127, 127).to(torch::kChar);
      REQUIRE((data.index({block, Slice(), offset}).to(torch::kInt) - expected.to(torch::kInt)).abs().max().item<int>() <=
              steps);
      REQUIRE(torch::allclose(row_scales.index({block, Slice(), offset}), absmax / 127.0f, 1e-5));
      const torch::Tensor back = data.index({block, Slice(), offset}).to(torch::kFloat) *
                                 row_scales.index({block, Slice(), offset}).unsqueeze(-1);
      REQUIRE(((back - given[t]).abs() <= absmax.unsqueeze(-1) / 254.0f * 1.001f + 1e-6f).all().item<bool>());
    }
  };
  check(torch::matmul(k, h), int8_keys_by_row(pool.key(1)), scales.key, 1);  // keys pair-major in their blocks
  check(v, pool.value(1), scales.value, 0);
  REQUIRE(scales.value[2][0][1].item<float>() == 0.0f);  // a row of zeros: scale 0
  REQUIRE(!pool.row_scales(0).key.count_nonzero().item<int64_t>());
  REQUIRE(!KVPool(small_spec(), 1).row_scales(0).defined());  // float pools have none
}
