// Sequence and SamplingParams: construction and validation.
#include "core/sequence.h"

#include <cmath>
#include <sstream>

#include "core/config.h"

namespace modelbench {

namespace {
template <typename T>
[[noreturn]] void bad(const char* field, const std::string& rule, T value) {
  std::ostringstream message;
  message << field << " must be " << rule << ", got " << value;
  throw InvalidArgument(message.str(), field);
}
}  // namespace

void SamplingParams::validate() const {
  if (max_tokens < 1) bad("max_tokens", ">= 1", max_tokens);
  if (min_tokens < 0) bad("min_tokens", ">= 0", min_tokens);
  if (min_tokens > max_tokens)
    bad("min_tokens", "<= max_tokens (" + std::to_string(max_tokens) + ")", min_tokens);
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    bad("temperature", "a finite number >= 0", temperature);
  if (top_k < 0) bad("top_k", ">= 0 (0 disables it)", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) bad("top_p", "in (0, 1]", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) bad("min_p", "in [0, 1]", min_p);
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty))
    bad("repetition_penalty", "a finite number > 0", repetition_penalty);
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    bad("presence_penalty", "in [-2, 2]", presence_penalty);
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    bad("frequency_penalty", "in [-2, 2]", frequency_penalty);
  for (int32_t id : stop_token_ids)
    if (id < 0) bad("stop_token_ids", "non-negative token ids", id);
  if (logprobs < -1) bad("logprobs", ">= 0, or -1 for none", logprobs);
  if (prompt_logprobs < -1) bad("prompt_logprobs", ">= 0, or -1 for none", prompt_logprobs);
  if (guided && min_tokens > 0)
    bad("min_tokens", "0 for a guided request (the grammar decides where the output ends)", min_tokens);
  if (guided && ignore_eos)
    bad("ignore_eos", "false for a guided request (the grammar ends the output with EOS)", "true");
}

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kNone: break;
  }
  return "";
}

Sequence::Sequence(std::string request_id, std::vector<int32_t> prompt_token_ids,
                   SamplingParams params, int priority, uint64_t arrival_index)
    : arrival_time(Clock::now()),
      request_id_(std::move(request_id)),
      token_ids_(std::move(prompt_token_ids)),
      num_prompt_tokens_(static_cast<int>(token_ids_.size())),
      params_(std::move(params)),
      priority_(priority),
      arrival_index_(arrival_index) {}

}  // namespace modelbench
