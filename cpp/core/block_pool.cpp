// BlockPool: free queue, reference counts, and the hash -> block map.
#include "core/block_pool.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/config.h"

namespace modelbench {

namespace {
// splitmix64 finaliser: a well-mixed 64-bit step.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

BlockHash hash_block_tokens(BlockHash parent_hash, const int32_t* token_ids, int num_tokens) {
  uint64_t h = mix(parent_hash ^ 0x6d6f64656c62656eULL);
  for (int i = 0; i < num_tokens; ++i) h = mix(h ^ static_cast<uint32_t>(token_ids[i]));
  return mix(h ^ static_cast<uint64_t>(num_tokens));
}

BlockPool::BlockPool(int num_blocks, bool enable_caching)
    : enable_caching_(enable_caching),
      blocks_(num_blocks),
      free_position_(num_blocks),
      is_free_(num_blocks, true) {
  if (num_blocks < 1)
    throw InvalidArgument("num_blocks must be >= 1, got " + std::to_string(num_blocks), "num_blocks");
  for (int i = 0; i < num_blocks; ++i) {
    blocks_[i].block_id = i;
    free_position_[i] = free_queue_.insert(free_queue_.end(), i);
  }
}

double BlockPool::usage() const {
  return static_cast<double>(num_held_) / static_cast<double>(blocks_.size());
}

void BlockPool::evict(KVCacheBlock& block) {
  if (!block.block_hash) return;
  auto range = hash_to_block_.equal_range(*block.block_hash);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second == block.block_id) {
      hash_to_block_.erase(it);
      break;
    }
  }
  block.block_hash.reset();
  block.token_ids.clear();
  block.parent_hash = 0;
}

std::optional<std::vector<int>> BlockPool::get_new_blocks(int n) {
  if (n < 0) throw std::logic_error("get_new_blocks: n must be >= 0, got " + std::to_string(n));
  if (n > num_free_blocks()) return std::nullopt;
  std::vector<int> ids;
  ids.reserve(n);
  for (int i = 0; i < n; ++i) {
    const int id = free_queue_.front();
    free_queue_.pop_front();
    is_free_[id] = false;
    KVCacheBlock& block = blocks_[id];
    if (block.ref_cnt != 0) throw std::logic_error("free block " + std::to_string(id) + " has ref_cnt " + std::to_string(block.ref_cnt));
    evict(block);
    block.ref_cnt = 1;
    ids.push_back(id);
  }
  num_held_ += n;
  return ids;
}

std::optional<int> BlockPool::get_cached_block(BlockHash parent_hash, const int32_t* token_ids,
                                               int num_tokens) const {
  if (!enable_caching_) return std::nullopt;
  const BlockHash h = hash_block_tokens(parent_hash, token_ids, num_tokens);
  auto range = hash_to_block_.equal_range(h);
  for (auto it = range.first; it != range.second; ++it) {
    const KVCacheBlock& block = blocks_[it->second];
    // A 64-bit hash can collide: only an exact match of parent and tokens is a hit.
    if (block.parent_hash == parent_hash &&
        static_cast<int>(block.token_ids.size()) == num_tokens &&
        std::equal(block.token_ids.begin(), block.token_ids.end(), token_ids))
      return block.block_id;
  }
  return std::nullopt;
}

void BlockPool::touch(const std::vector<int>& block_ids) {
  for (int id : block_ids) {
    KVCacheBlock& block = blocks_.at(id);
    if (block.ref_cnt == 0) {
      if (!is_free_[id]) throw std::logic_error("block " + std::to_string(id) + " has ref_cnt 0 but is not free");
      free_queue_.erase(free_position_[id]);
      is_free_[id] = false;
      ++num_held_;
    }
    ++block.ref_cnt;
  }
}

void BlockPool::free_blocks(const std::vector<int>& block_ids) {
  for (int id : block_ids) {
    KVCacheBlock& block = blocks_.at(id);
    if (block.ref_cnt <= 0) throw std::logic_error("double free of block " + std::to_string(id));
    if (--block.ref_cnt > 0) continue;
    --num_held_;
    is_free_[id] = true;
    if (block.block_hash) {
      free_position_[id] = free_queue_.insert(free_queue_.end(), id);
    } else {
      free_position_[id] = free_queue_.insert(free_queue_.begin(), id);
    }
  }
}

void BlockPool::cache_full_block(int block_id, BlockHash parent_hash, const int32_t* token_ids,
                                 int num_tokens) {
  if (!enable_caching_) return;
  KVCacheBlock& block = blocks_.at(block_id);
  if (block.ref_cnt <= 0) throw std::logic_error("caching unheld block " + std::to_string(block_id));
  if (block.block_hash) return;  // already cached (a prefix hit, or cached earlier)
  const BlockHash h = hash_block_tokens(parent_hash, token_ids, num_tokens);
  block.block_hash = h;
  block.parent_hash = parent_hash;
  block.token_ids.assign(token_ids, token_ids + num_tokens);
  hash_to_block_.emplace(h, block_id);
}

void BlockPool::reset_prefix_cache() {
  for (KVCacheBlock& block : blocks_) evict(block);
}

}  // namespace modelbench
