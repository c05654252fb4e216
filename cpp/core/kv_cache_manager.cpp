// KVCacheManager: prefix hits, slot allocation, block caching, freeing.
#include "core/kv_cache_manager.h"

#include <algorithm>
#include <stdexcept>

namespace modelbench {

KVCacheManager::KVCacheManager(const CacheConfig& config)
    : block_size_(config.block_size),
      num_watermark_blocks_(config.num_watermark_blocks()),
      pool_((config.validate(), config.num_blocks), config.enable_prefix_caching) {}

ComputedBlocks KVCacheManager::get_computed_blocks(const Sequence& seq) const {
  ComputedBlocks computed;
  if (!pool_.enable_caching()) return computed;
  const int max_hit_tokens = seq.num_tokens() - 1;
  const int32_t* tokens = seq.token_ids().data();
  BlockHash parent = 0;
  for (int start = 0; start + block_size_ <= max_hit_tokens; start += block_size_) {
    auto hit = pool_.get_cached_block(parent, tokens + start, block_size_);
    if (!hit) break;
    computed.block_ids.push_back(*hit);
    parent = *pool_.block(*hit).block_hash;
  }
  computed.num_computed_tokens = static_cast<int>(computed.block_ids.size()) * block_size_;
  return computed;
}

int KVCacheManager::num_blocks_needed(const Sequence& seq, int num_tokens) const {
  const int needed = (num_tokens + block_size_ - 1) / block_size_;
  return std::max(0, needed - static_cast<int>(seq.block_table.size()));
}

bool KVCacheManager::can_allocate(const Sequence& seq, const ComputedBlocks& computed,
                                  int num_new_tokens) const {
  const int total = computed.num_computed_tokens + num_new_tokens;
  const int num_new_blocks = (total + block_size_ - 1) / block_size_ -
                             static_cast<int>(computed.block_ids.size());
  // Hit blocks that sit free in the pool stop counting as free once held.
  int num_free_hits = 0;
  for (int id : computed.block_ids)
    if (pool_.block(id).ref_cnt == 0) ++num_free_hits;
  (void)seq;
  return pool_.num_free_blocks() - num_free_hits - num_new_blocks >= num_watermark_blocks_;
}

bool KVCacheManager::allocate_slots(Sequence& seq, int num_new_tokens,
                                    const ComputedBlocks* computed) {
  if (num_new_tokens < 1) throw std::logic_error("allocate_slots: num_new_tokens must be >= 1");
  if (computed != nullptr) {
    if (!seq.block_table.empty())
      throw std::logic_error("allocate_slots: computed blocks given for " + seq.request_id() +
                             ", which already holds blocks");
    // Take the hits first so that allocation below cannot evict them.
    pool_.touch(computed->block_ids);
    seq.block_table = computed->block_ids;
    seq.num_computed_tokens = computed->num_computed_tokens;
  }
  const int total = seq.num_computed_tokens + num_new_tokens;
  const int n = num_blocks_needed(seq, total);
  if (n > 0) {
    auto blocks = pool_.get_new_blocks(n);
    if (!blocks) {
      if (computed != nullptr) {
        pool_.free_blocks(computed->block_ids);
        seq.block_table.clear();
        seq.num_computed_tokens = 0;
      }
      return false;
    }
    seq.block_table.insert(seq.block_table.end(), blocks->begin(), blocks->end());
  }
  cache_full_blocks(seq, total);
  return true;
}

void KVCacheManager::cache_full_blocks(Sequence& seq, int num_tokens) {
  if (!pool_.enable_caching()) return;
  // Only tokens that are known can be hashed: the step computes K/V for
  // positions below num_tokens, and all of them are in token_ids already.
  const int num_full = std::min(num_tokens, seq.num_tokens()) / block_size_;
  const int32_t* tokens = seq.token_ids().data();
  // Blocks are cached in order, so only the tail past the last hashed block needs work.
  int first = num_full;
  while (first > 0 && !pool_.block(seq.block_table[first - 1]).block_hash) --first;
  BlockHash parent = first == 0 ? 0 : *pool_.block(seq.block_table[first - 1]).block_hash;
  for (int i = first; i < num_full; ++i) {
    const int id = seq.block_table[i];
    pool_.cache_full_block(id, parent, tokens + i * block_size_, block_size_);
    parent = *pool_.block(id).block_hash;
  }
}

void KVCacheManager::free(Sequence& seq) {
  std::vector<int> reversed(seq.block_table.rbegin(), seq.block_table.rend());
  pool_.free_blocks(reversed);
  seq.block_table.clear();
  seq.num_computed_tokens = 0;
}

}  // namespace modelbench
