// Validation of the configuration structs.
#include "core/config.h"
#include "core/dynamic_batcher.h"

#include <algorithm>
#include <cmath>

namespace modelbench {

namespace {
[[noreturn]] void fail(const char* param, const std::string& message) { throw InvalidArgument(message, param); }
}  // namespace

void CacheConfig::validate() const {
  if (block_size < 1 || block_size > 1024)
    fail("block_size", "block_size must be in [1, 1024], got " + std::to_string(block_size));
  if (num_blocks < 1)
    fail("num_blocks", "num_blocks must be >= 1, got " + std::to_string(num_blocks));
  if (!(watermark >= 0.0 && watermark < 1.0))
    fail("watermark", "watermark must be in [0, 1), got " + std::to_string(watermark));
}

int CacheConfig::num_watermark_blocks() const {
  return static_cast<int>(std::floor(watermark * num_blocks));
}

void DynamicBatcherConfig::validate() const {
  if (max_batch_size < 1)
    fail("max_batch_size", "max_batch_size must be >= 1, got " + std::to_string(max_batch_size));
  for (int size : preferred_batch_sizes)
    if (size < 1 || size > max_batch_size)
      fail("preferred_batch_sizes", "preferred_batch_sizes must lie in [1, max_batch_size=" +
                                        std::to_string(max_batch_size) + "], got " + std::to_string(size));
  if (max_queue_delay_us < 0)
    fail("max_queue_delay_us", "max_queue_delay_us must be >= 0, got " + std::to_string(max_queue_delay_us));
  if (max_queue_size < 1)
    fail("max_queue_size", "max_queue_size must be >= 1, got " + std::to_string(max_queue_size));
}

void SpeculativeConfig::validate() const {
  if (num_speculative_tokens < 0 || num_speculative_tokens > 32)
    fail("num_speculative_tokens",
         "num_speculative_tokens must be in [0, 32] (0: off), got " + std::to_string(num_speculative_tokens));
  if (!enabled()) return;
  if (prompt_lookup_min < 1)
    fail("prompt_lookup_min", "prompt_lookup_min must be >= 1, got " + std::to_string(prompt_lookup_min));
  if (prompt_lookup_max < prompt_lookup_min)
    fail("prompt_lookup_max", "prompt_lookup_max (" + std::to_string(prompt_lookup_max) +
                                  ") must be >= prompt_lookup_min (" + std::to_string(prompt_lookup_min) + ")");
  if (disable_by_batch_size < 0)
    fail("disable_by_batch_size",
         "disable_by_batch_size must be >= 0 (0: no limit), got " + std::to_string(disable_by_batch_size));
}

void SchedulerConfig::validate() const {
  speculative.validate();
  if (max_num_batched_tokens < 1)
    fail("max_num_batched_tokens",
         "max_num_batched_tokens must be >= 1, got " + std::to_string(max_num_batched_tokens));
  if (max_num_seqs < 1)
    fail("max_num_seqs", "max_num_seqs must be >= 1, got " + std::to_string(max_num_seqs));
  if (max_model_len < 1)
    fail("max_model_len", "max_model_len must be >= 1, got " + std::to_string(max_model_len));
  if (!enable_chunked_prefill && max_num_batched_tokens < max_model_len)
    fail("max_num_batched_tokens", "without chunked prefill, max_num_batched_tokens (" +
         std::to_string(max_num_batched_tokens) + ") must be >= max_model_len (" +
         std::to_string(max_model_len) + ") so that every prompt fits in one step");
}

void EngineConfig::validate() const {
  cache.validate();
  scheduler.validate();
  if (vocab_size < 0)
    fail("vocab_size", "vocab_size must be >= 0 (0: unknown), got " + std::to_string(vocab_size));
  const int64_t capacity = static_cast<int64_t>(cache.num_blocks) * cache.block_size;
  if (capacity < scheduler.max_model_len)
    // Named for the cache, the side a user sizes; max_model_len usually comes from the model.
    fail("num_blocks", "the KV cache holds " + std::to_string(capacity) + " tokens (" +
         std::to_string(cache.num_blocks) + " blocks of " + std::to_string(cache.block_size) +
         "), fewer than max_model_len=" + std::to_string(scheduler.max_model_len) +
         ": give the cache more memory or lower max_model_len");
}

}  // namespace modelbench
