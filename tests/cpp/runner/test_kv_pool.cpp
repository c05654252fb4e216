// KVPool: sizing from a memory budget, pool shapes, slot writes.
#include <torch/torch.h>
#undef CHECK  // torch's CHECK would shadow Catch2's
#include <catch2/catch.hpp>

#include "core/config.h"
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
