// KVCacheManager: prefix hits report the cached tokens, slots grow with
// tokens, the watermark, and freeing returns every block.
#include <catch2/catch.hpp>

#include "core/kv_cache_manager.h"

using namespace modelbench;

namespace {
CacheConfig cache(int num_blocks, int block_size = 4, double watermark = 0.0) {
  CacheConfig c;
  c.num_blocks = num_blocks;
  c.block_size = block_size;
  c.watermark = watermark;
  return c;
}
Sequence seq(const std::string& id, std::vector<int32_t> prompt) {
  return Sequence(id, std::move(prompt), SamplingParams(), 0, 0);
}
}  // namespace

TEST_CASE("a second prompt with the same prefix hits the cached blocks", "[kv_cache_manager]") {
  KVCacheManager kv(cache(16));
  Sequence a = seq("a", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  auto computed = kv.get_computed_blocks(a);
  REQUIRE(computed.num_computed_tokens == 0);
  REQUIRE(kv.allocate_slots(a, a.num_tokens(), &computed));
  REQUIRE(a.block_table.size() == 3);  // ceil(10 / 4)

  Sequence b = seq("b", {1, 2, 3, 4, 5, 6, 7, 8, 99, 98, 97});
  auto hit = kv.get_computed_blocks(b);
  REQUIRE(hit.num_computed_tokens == 8);
  REQUIRE(hit.block_ids == std::vector<int>{a.block_table[0], a.block_table[1]});
  REQUIRE(kv.allocate_slots(b, b.num_tokens() - 8, &hit));
  REQUIRE(b.num_computed_tokens == 8);
  REQUIRE(kv.pool().block(a.block_table[0]).ref_cnt == 2);
  REQUIRE(b.block_table[2] != a.block_table[2]);
}

TEST_CASE("the last prompt token is never a cache hit", "[kv_cache_manager]") {
  KVCacheManager kv(cache(16));
  Sequence a = seq("a", {1, 2, 3, 4, 5, 6, 7, 8});
  auto none = kv.get_computed_blocks(a);
  REQUIRE(kv.allocate_slots(a, 8, &none));
  Sequence b = seq("b", {1, 2, 3, 4, 5, 6, 7, 8});
  // Both blocks are cached, but the logits of token 8 must be computed.
  REQUIRE(kv.get_computed_blocks(b).num_computed_tokens == 4);
}

TEST_CASE("decode appends a block only when the last one is full", "[kv_cache_manager]") {
  KVCacheManager kv(cache(8));
  Sequence a = seq("a", {1, 2, 3});
  ComputedBlocks none;
  REQUIRE(kv.allocate_slots(a, 3, &none));
  a.num_computed_tokens = 3;
  a.append_token(4);
  REQUIRE(kv.allocate_slots(a, 1));
  REQUIRE(a.block_table.size() == 1);
  a.num_computed_tokens = 4;
  a.append_token(5);
  REQUIRE(kv.allocate_slots(a, 1));
  REQUIRE(a.block_table.size() == 2);
}

TEST_CASE("allocation that does not fit changes nothing", "[kv_cache_manager]") {
  KVCacheManager kv(cache(3));
  Sequence a = seq("a", {1, 2, 3, 4, 5, 6, 7, 8, 9});
  ComputedBlocks none;
  REQUIRE(kv.allocate_slots(a, 9, &none));
  Sequence b = seq("b", {1, 2, 3, 4, 50, 51});  // hits block 0, needs 1 more: none free
  auto hit = kv.get_computed_blocks(b);
  REQUIRE(hit.num_computed_tokens == 4);
  REQUIRE_FALSE(kv.allocate_slots(b, 2, &hit));
  REQUIRE(b.block_table.empty());
  REQUIRE(kv.pool().block(a.block_table[0]).ref_cnt == 1);
  REQUIRE(kv.num_free_blocks() == 0);
}

TEST_CASE("can_allocate keeps the watermark free", "[kv_cache_manager]") {
  KVCacheManager kv(cache(10, 4, 0.2));  // 2 blocks of watermark
  Sequence a = seq("a", std::vector<int32_t>(32, 1));  // 8 blocks
  ComputedBlocks none;
  REQUIRE(kv.can_allocate(a, none, 32));
  Sequence big = seq("big", std::vector<int32_t>(33, 2));  // 9 blocks: leaves 1 < 2
  REQUIRE_FALSE(kv.can_allocate(big, none, 33));
}

TEST_CASE("free returns every block, and cached content survives", "[kv_cache_manager]") {
  KVCacheManager kv(cache(8));
  Sequence a = seq("a", {1, 2, 3, 4, 5, 6, 7, 8, 9});
  ComputedBlocks none;
  REQUIRE(kv.allocate_slots(a, 9, &none));
  kv.free(a);
  REQUIRE(a.block_table.empty());
  REQUIRE(kv.num_free_blocks() == 8);
  REQUIRE(kv.usage() == 0.0);
  Sequence b = seq("b", {1, 2, 3, 4, 5, 6, 7, 8, 9});
  REQUIRE(kv.get_computed_blocks(b).num_computed_tokens == 8);
}
