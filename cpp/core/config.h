// Engine configuration: the cache and scheduler structs, validated at
// construction so that every later component can trust its numbers.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace modelbench {

// Thrown for anything a user can get wrong. The message names the value;
// `param` names the offending field ("max_tokens", "prompt", ...), or is
// empty when no single field is at fault. The bindings raise it as
// modelbench._core.InvalidArgument, a ValueError with `.param`.
class InvalidArgument : public std::invalid_argument {
 public:
  explicit InvalidArgument(const std::string& message, std::string param = "")
      : std::invalid_argument(message), param_(std::move(param)) {}
  const std::string& param() const { return param_; }

 private:
  std::string param_;
};

struct CacheConfig {
  int block_size = 16;          // tokens per KV block
  int num_blocks = 0;           // blocks in the pool (per layer: one K and one V block each)
  bool enable_prefix_caching = true;
  double watermark = 0.01;      // fraction of blocks kept free when admitting new prompts

  // Throws InvalidArgument naming the offending value.
  void validate() const;
  int num_watermark_blocks() const;
};

// Speculative decoding by n-gram (prompt lookup), as vLLM's "ngram" method:
// the last n tokens of a sequence (n from prompt_lookup_max down to
// prompt_lookup_min) are looked up earlier in its prompt and output; the k
// tokens that followed there are proposed, and one forward over the paged
// cache verifies them all.
struct SpeculativeConfig {
  int num_speculative_tokens = 0;  // k; 0: off
  int prompt_lookup_max = 3;
  int prompt_lookup_min = 2;
  // No proposals while more than this many sequences run (0: no limit):
  // verifying costs compute a large batch no longer has to spare.
  int disable_by_batch_size = 0;
  // vLLM's "draft_model" method: the runner's draft model proposes instead
  // of the n-gram lookup (the scheduler only reserves the slots).
  bool draft_model = false;

  bool enabled() const { return num_speculative_tokens > 0; }
  void validate() const;
};

struct SchedulerConfig {
  int max_num_batched_tokens = 2048;  // token budget of one step
  int max_num_seqs = 256;             // sequences in one step
  int max_model_len = 2048;           // prompt + generated tokens of one sequence
  bool enable_chunked_prefill = true; // split prompts longer than the remaining budget
  SpeculativeConfig speculative;

  void validate() const;
};

struct EngineConfig {
  CacheConfig cache;
  SchedulerConfig scheduler;
  int eos_token_id = -1;  // -1: the model has none; generation stops on stop ids or length
  int vocab_size = 0;     // 0: unknown; otherwise prompt ids must be below it

  void validate() const;
};

}  // namespace modelbench
