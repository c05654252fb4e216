// One request's state as the engine sees it: token ids, how many of them
// have K/V in the cache (num_computed_tokens), its block table, status,
// sampling parameters and timestamps.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/token_guide.h"

namespace modelbench {

struct SamplingParams {
  int max_tokens = 16;
  int min_tokens = 0;                 // stop ids and EOS are ignored before this many tokens
  float temperature = 1.0f;           // 0: greedy
  int top_k = 0;                      // 0: off
  float top_p = 1.0f;                 // in (0, 1]
  float min_p = 0.0f;                 // in [0, 1]
  float repetition_penalty = 1.0f;    // > 0; 1: off
  float presence_penalty = 0.0f;      // in [-2, 2]
  float frequency_penalty = 0.0f;     // in [-2, 2]
  std::optional<uint64_t> seed;       // a per-request generator when set
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int logprobs = -1;                  // -1: none; n >= 0: sampled token plus top-n
  int prompt_logprobs = -1;           // -1: none; n >= 0: per prompt token plus top-n
  // Guided decoding: each output token is drawn from the allowed set the
  // request's TokenGuide posts (Engine::post_token_mask). min_tokens and
  // ignore_eos do not apply: the grammar says when the output ends.
  bool guided = false;

  // Throws InvalidArgument naming the offending field and value.
  void validate() const;
  bool is_greedy() const { return temperature == 0.0f; }
};

enum class SequenceStatus { kWaiting, kRunning, kFinished };

enum class FinishReason { kNone, kStop, kLength, kAbort };

const char* finish_reason_name(FinishReason reason);

using Clock = std::chrono::steady_clock;

class Sequence {
 public:
  Sequence(std::string request_id, std::vector<int32_t> prompt_token_ids, SamplingParams params,
           int priority, uint64_t arrival_index);

  const std::string& request_id() const { return request_id_; }
  const std::vector<int32_t>& token_ids() const { return token_ids_; }
  const SamplingParams& params() const { return params_; }
  int priority() const { return priority_; }
  uint64_t arrival_index() const { return arrival_index_; }

  int num_tokens() const { return static_cast<int>(token_ids_.size()); }
  int num_prompt_tokens() const { return num_prompt_tokens_; }
  int num_output_tokens() const { return num_tokens() - num_prompt_tokens_; }
  int32_t last_token_id() const { return token_ids_.back(); }
  // Tokens whose K/V are in the cache (or are being written by the step in flight).
  int num_computed_tokens = 0;
  // Prompt tokens found in the prefix cache at the last admission.
  int num_cached_tokens = 0;
  // Prompt positions whose logprobs were delivered (a recompute after
  // preemption must not deliver them twice).
  int num_prompt_logprobs_sent = 0;
  // Times this sequence lost its blocks to preemption and was recomputed.
  int num_preemptions = 0;
  // Set when params.guided: where the sampler finds this request's masks.
  std::shared_ptr<TokenGuide> guide;
  // Speculative decoding: after a proposal wholly rejected, steps to go
  // without one, and the next such pause (doubling up to a cap).
  int spec_backoff = 0;
  int spec_backoff_next = 1;
  // Block ids in logical order: token i lives in block_table[i / block_size].
  std::vector<int> block_table;
  SequenceStatus status = SequenceStatus::kWaiting;
  FinishReason finish_reason = FinishReason::kNone;

  Clock::time_point arrival_time;
  std::optional<Clock::time_point> first_scheduled_time;
  std::optional<Clock::time_point> first_token_time;

  void append_token(int32_t token_id) { token_ids_.push_back(token_id); }
  bool is_finished() const { return status == SequenceStatus::kFinished; }
  bool is_prefill() const { return num_computed_tokens < num_prompt_tokens_; }

 private:
  std::string request_id_;
  std::vector<int32_t> token_ids_;  // prompt followed by generated tokens
  int num_prompt_tokens_;
  SamplingParams params_;
  int priority_;            // lower runs first
  uint64_t arrival_index_;  // FIFO order within a priority level
};

}  // namespace modelbench
