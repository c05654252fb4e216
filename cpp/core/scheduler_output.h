// The only types that cross between the scheduler and the model runner.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/logprobs.h"
#include "core/sequence.h"

namespace modelbench {

struct ScheduledSequence {
  // Owned by the scheduler; valid until the next call to schedule().
  const Sequence* seq = nullptr;
  // K/V of positions [0, num_computed_tokens) are in the cache already.
  int num_computed_tokens = 0;
  // The step computes positions [num_computed_tokens, num_computed_tokens + num_scheduled_tokens).
  int num_scheduled_tokens = 0;
  // True when this step reaches the sequence's last known token, so the
  // runner must sample the next one; false for a prompt chunk that is not the last.
  bool needs_sample = false;
  // Speculative decoding: tokens proposed to follow the sequence's last one.
  // They are the step's inputs after it (positions num_tokens() onwards,
  // counted in num_scheduled_tokens), and the runner verifies them. With a
  // draft model they are -1, slots the runner's draft fills.
  std::vector<int32_t> draft_token_ids;
};

struct SchedulerOutput {
  // Sequences that continue (decodes and prompt chunks of admitted sequences), then newly admitted ones.
  std::vector<ScheduledSequence> scheduled;
  int num_batched_tokens = 0;
  // Requests that ended or lost their blocks since the last step: a runner
  // drops any per-request state it keeps (sampler generators, ...).
  std::vector<std::string> finished_request_ids;
  std::vector<std::string> preempted_request_ids;

  bool empty() const { return scheduled.empty(); }
};

struct RunnerOutput {
  // One entry per ScheduledSequence, in order: the sampled token id, or -1
  // where needs_sample was false.
  std::vector<int32_t> sampled_token_ids;
  // Empty, or one entry per ScheduledSequence: the sampled token's logprobs
  // where params.logprobs >= 0 and a token was sampled (else empty).
  std::vector<std::vector<PositionLogprobs>> logprobs;
  // Empty, or one entry per ScheduledSequence where params.prompt_logprobs
  // >= 0: for each prompt position p computed this step with p + 1 <
  // num_prompt_tokens, the logprobs of prompt token p + 1.
  std::vector<std::vector<PositionLogprobs>> prompt_logprobs;
  // Empty, or one entry per ScheduledSequence: nonzero where a guided
  // request's mask never came (its guide failed): it ends with "abort"
  // and its sampled_token_ids entry is ignored.
  std::vector<uint8_t> guide_failed;
  // Empty, or one entry per ScheduledSequence: for a sequence with draft
  // tokens, the tokens it gained after sampled_token_ids' (the drafts it
  // accepted but the first, then the model's own next token); each
  // accepted draft's K/V is already in the cache.
  std::vector<std::vector<int32_t>> spec_token_ids;
};

}  // namespace modelbench
