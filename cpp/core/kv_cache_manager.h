// Each sequence's block table: find the cached prefix of a new prompt,
// allocate slots for the tokens a step will compute, cache blocks as they
// fill, and free everything a sequence holds. Talks to the BlockPool only.
#pragma once

#include <vector>

#include "core/block_pool.h"
#include "core/config.h"
#include "core/sequence.h"

namespace modelbench {

struct ComputedBlocks {
  std::vector<int> block_ids;  // full blocks of the prompt found in the cache
  int num_computed_tokens = 0; // block_ids.size() * block_size
};

class KVCacheManager {
 public:
  explicit KVCacheManager(const CacheConfig& config);

  int block_size() const { return block_size_; }
  int num_free_blocks() const { return pool_.num_free_blocks(); }
  double usage() const { return pool_.usage(); }
  const BlockPool& pool() const { return pool_; }

  // The longest cached prefix of a waiting sequence, in full blocks. The last
  // prompt token is never a hit: its logits must be computed. Holds nothing.
  ComputedBlocks get_computed_blocks(const Sequence& seq) const;

  // Whether a waiting sequence may be admitted with these hits and tokens
  // while keeping the watermark of free blocks for running sequences.
  bool can_allocate(const Sequence& seq, const ComputedBlocks& computed, int num_new_tokens) const;

  // Make room for num_new_tokens more tokens after seq.num_computed_tokens
  // (for a waiting sequence, after the computed prefix, whose blocks it then
  // holds). Returns false, changing nothing, when the pool has too few free
  // blocks. Caches the blocks that these tokens fill.
  bool allocate_slots(Sequence& seq, int num_new_tokens, const ComputedBlocks* computed = nullptr);

  // Release every block the sequence holds, tail first, and clear its table.
  void free(Sequence& seq);

  void reset_prefix_cache() { pool_.reset_prefix_cache(); }

 private:
  int num_blocks_needed(const Sequence& seq, int num_tokens) const;
  void cache_full_blocks(Sequence& seq, int num_tokens);

  int block_size_;
  int num_watermark_blocks_;
  BlockPool pool_;
};

}  // namespace modelbench
