// BlockPool: no block handed out twice, reference counts, prefix hits,
// eviction order, exhaustion as a return value.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <set>

#include "core/block_pool.h"

using namespace modelbench;

namespace {
std::vector<int32_t> tokens(int start, int n) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = start + i;
  return t;
}
}  // namespace

TEST_CASE("blocks are never handed out twice", "[block_pool]") {
  BlockPool pool(64, true);
  std::mt19937 rng(7);
  std::vector<int> held;
  std::set<int> held_set;
  for (int round = 0; round < 2000; ++round) {
    if (held.empty() || rng() % 2 == 0) {
      const int n = static_cast<int>(rng() % 5);
      auto got = pool.get_new_blocks(n);
      if (!got) {
        REQUIRE(n > pool.num_free_blocks());
        continue;
      }
      for (int id : *got) {
        REQUIRE(held_set.insert(id).second);  // not already held
        held.push_back(id);
      }
    } else {
      const size_t i = rng() % held.size();
      pool.free_blocks({held[i]});
      held_set.erase(held[i]);
      held.erase(held.begin() + static_cast<long>(i));
    }
    REQUIRE(pool.num_free_blocks() + static_cast<int>(held.size()) == pool.num_blocks());
  }
}

TEST_CASE("reference counts: a block is free only when its last holder frees it", "[block_pool]") {
  BlockPool pool(4, true);
  auto ids = *pool.get_new_blocks(1);
  pool.touch(ids);  // a second holder
  REQUIRE(pool.block(ids[0]).ref_cnt == 2);
  pool.free_blocks(ids);
  REQUIRE(pool.num_free_blocks() == 3);
  pool.free_blocks(ids);
  REQUIRE(pool.num_free_blocks() == 4);
  REQUIRE(pool.usage() == 0.0);
  REQUIRE_THROWS_WITH(pool.free_blocks(ids), Catch::Contains("double free"));
}

TEST_CASE("identical prefixes map to the same cached blocks", "[block_pool]") {
  BlockPool pool(8, true);
  const auto a = tokens(100, 4);
  const auto b = tokens(200, 4);
  auto ids = *pool.get_new_blocks(2);
  pool.cache_full_block(ids[0], 0, a.data(), 4);
  const BlockHash ha = *pool.block(ids[0]).block_hash;
  pool.cache_full_block(ids[1], ha, b.data(), 4);

  REQUIRE(pool.get_cached_block(0, a.data(), 4) == ids[0]);
  REQUIRE(pool.get_cached_block(ha, b.data(), 4) == ids[1]);
  // Same tokens after a different prefix is not a hit: hashes are chained.
  REQUIRE_FALSE(pool.get_cached_block(0, b.data(), 4));
  REQUIRE_FALSE(pool.get_cached_block(ha + 1, b.data(), 4));

  // Freed cached blocks stay reusable until evicted.
  pool.free_blocks({ids[1], ids[0]});
  REQUIRE(pool.get_cached_block(0, a.data(), 4) == ids[0]);
  REQUIRE(pool.num_cached_blocks() == 2);
}

TEST_CASE("caching off: no hits", "[block_pool]") {
  BlockPool pool(4, false);
  const auto a = tokens(1, 4);
  auto ids = *pool.get_new_blocks(1);
  pool.cache_full_block(ids[0], 0, a.data(), 4);
  REQUIRE_FALSE(pool.get_cached_block(0, a.data(), 4));
}

TEST_CASE("eviction: uncached free blocks first, then cached ones least recently freed first", "[block_pool]") {
  BlockPool pool(4, true);
  auto ids = *pool.get_new_blocks(4);
  std::vector<std::vector<int32_t>> content;
  for (int i = 0; i < 3; ++i) {
    content.push_back(tokens(10 * i, 2));
    pool.cache_full_block(ids[i], 0, content[i].data(), 2);
  }
  // Free cached blocks in the order 2, 0, 1, then the uncached block 3.
  pool.free_blocks({ids[2]});
  pool.free_blocks({ids[0]});
  pool.free_blocks({ids[1]});
  pool.free_blocks({ids[3]});
  REQUIRE(pool.num_free_blocks() == 4);

  auto first = *pool.get_new_blocks(1);
  REQUIRE(first[0] == ids[3]);  // the uncached one goes first
  REQUIRE(pool.num_cached_blocks() == 3);
  auto second = *pool.get_new_blocks(1);
  REQUIRE(second[0] == ids[2]);  // least recently freed cached block
  REQUIRE_FALSE(pool.get_cached_block(0, content[2].data(), 2));  // its hash is gone
  REQUIRE(pool.get_cached_block(0, content[0].data(), 2) == ids[0]);

  // A hit refreshes recency: touch block 0 and free it again, so 1 is now the oldest.
  pool.touch({ids[0]});
  pool.free_blocks({ids[0]});
  auto third = *pool.get_new_blocks(1);
  REQUIRE(third[0] == ids[1]);
}

TEST_CASE("exhaustion is a return value, not a crash", "[block_pool]") {
  BlockPool pool(3, true);
  auto ids = pool.get_new_blocks(3);
  REQUIRE(ids);
  REQUIRE_FALSE(pool.get_new_blocks(1));
  REQUIRE(pool.num_free_blocks() == 0);
  REQUIRE(pool.usage() == 1.0);
  pool.free_blocks(*ids);
  REQUIRE_FALSE(pool.get_new_blocks(4));  // more than the pool has: nothing changes
  REQUIRE(pool.num_free_blocks() == 3);
}

TEST_CASE("hash collisions cannot produce a false hit", "[block_pool]") {
  // Two blocks cached under the same content but checked against other
  // tokens: the pool compares tokens, not just hashes.
  BlockPool pool(4, true);
  const auto a = tokens(5, 3);
  auto ids = *pool.get_new_blocks(1);
  pool.cache_full_block(ids[0], 0, a.data(), 3);
  auto other = a;
  other[2] += 1;
  REQUIRE_FALSE(pool.get_cached_block(0, other.data(), 3));
  REQUIRE(hash_block_tokens(0, a.data(), 3) != hash_block_tokens(0, other.data(), 3));
}
