// The pool of fixed-size KV blocks: which are free, how many sequences hold
// each one (ref_cnt), and the content hash of every full block so that
// identical prefixes map to the same blocks. A freed block that has a hash
// stays in the pool, reusable by a later prefix hit, until it is evicted:
// uncached free blocks are handed out first, then cached ones least recently
// freed first.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

namespace modelbench {

using BlockHash = uint64_t;

// Hash of a full block chained with its prefix's hash (0 for the first block).
BlockHash hash_block_tokens(BlockHash parent_hash, const int32_t* token_ids, int num_tokens);

struct KVCacheBlock {
  int block_id = 0;
  int ref_cnt = 0;
  std::optional<BlockHash> block_hash;  // set once the block is full and cached
  BlockHash parent_hash = 0;
  std::vector<int32_t> token_ids;       // the block's tokens, to verify hash hits exactly
};

class BlockPool {
 public:
  BlockPool(int num_blocks, bool enable_caching);

  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  // Blocks with ref_cnt 0, cached or not.
  int num_free_blocks() const { return static_cast<int>(free_queue_.size()); }
  // Fraction of blocks held by at least one sequence.
  double usage() const;

  // n blocks with ref_cnt 1, evicting cached free blocks as needed;
  // std::nullopt (and nothing changed) when fewer than n are free.
  std::optional<std::vector<int>> get_new_blocks(int n);

  // The cached block holding exactly these tokens after this parent, if any.
  std::optional<int> get_cached_block(BlockHash parent_hash, const int32_t* token_ids,
                                      int num_tokens) const;

  // One more holder for each block (a prefix hit); takes free ones off the free queue.
  void touch(const std::vector<int>& block_ids);

  // One holder fewer for each block. Blocks reaching 0 go to the free queue;
  // give them tail first so that a sequence's last blocks are evicted first.
  void free_blocks(const std::vector<int>& block_ids);

  // Record that a full, held block has this content.
  void cache_full_block(int block_id, BlockHash parent_hash, const int32_t* token_ids,
                        int num_tokens);

  // Drop every cached hash (e.g. after weights change). Held blocks stay held.
  void reset_prefix_cache();

  const KVCacheBlock& block(int block_id) const { return blocks_.at(block_id); }
  bool enable_caching() const { return enable_caching_; }
  int num_cached_blocks() const { return static_cast<int>(hash_to_block_.size()); }

 private:
  void evict(KVCacheBlock& block);

  bool enable_caching_;
  std::vector<KVCacheBlock> blocks_;
  // Free blocks: uncached at the front (used first), cached at the back in the order freed.
  std::list<int> free_queue_;
  std::vector<std::list<int>::iterator> free_position_;  // valid where ref_cnt == 0
  std::vector<bool> is_free_;
  std::unordered_multimap<BlockHash, int> hash_to_block_;
  int num_held_ = 0;
};

}  // namespace modelbench
