// Sampling: turns one row of logits per sequence into the next token, with
// penalties, temperature, top-k, top-p, min-p, per-request seeded
// generators, stop conditions that need masking (min_tokens), and
// logprobs of sampled and prompt tokens.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/logprobs.h"
#include "core/sequence.h"

namespace modelbench {

struct SamplerOutput {
  std::vector<int32_t> token_ids;  // one per row
  // One per row: empty, or one entry for the sampled token when
  // params.logprobs >= 0 (chosen + top params.logprobs alternatives).
  std::vector<std::vector<PositionLogprobs>> logprobs;
  // One per row: nonzero where the row is guided and its mask never came
  // (the guide failed, or was cancelled by an abort): its token is
  // meaningless and the request ends.
  std::vector<uint8_t> guide_failed;
};

class Sampler {
 public:
  // eos_token_id < 0: the model has none. Used to hold EOS back before min_tokens.
  explicit Sampler(int eos_token_id = -1);

  // logits: [num_rows, vocab_size], float32, on any device. seqs[i] is the
  // sequence of row i: its params, and its token ids (prompt followed by the
  // tokens generated so far) for penalties. A sequence with a seed samples
  // from its own generator, so its output does not depend on the batch.
  SamplerOutput sample(const torch::Tensor& logits, const std::vector<const Sequence*>& seqs);

  // logits: [n, vocab_size] float32; target_ids: [n] int64. Logprobs of each
  // target under log_softmax(logits) with its rank, plus the top num_top.
  static std::vector<PositionLogprobs> compute_logprobs(const torch::Tensor& logits,
                                                        const torch::Tensor& target_ids, int num_top);

  // How long sample() waits for a guided row's mask before it gives the
  // request up (a matcher thread that died must not hang the engine).
  static constexpr double kGuideWaitSeconds = 60.0;

  // Speculative decoding: verifies `drafts`, the tokens proposed to follow
  // seq's last one. logits: [1 + drafts, vocab_size], the rows of the last
  // known token and of each draft. Returns the tokens seq gains: the drafts
  // that stand, then one of the model's own (a draft's replacement, or the
  // token after them all). Greedy requests get exactly greedy decoding's
  // tokens; others are rejection-sampled, so each token has plain sampling's
  // distribution. Not for requests with penalties, logprobs or a guide.
  std::vector<int32_t> verify(const torch::Tensor& logits, const Sequence& seq, const std::vector<int32_t>& drafts);

  // Forget per-request state (seeded generators) of a finished request.
  void drop_request(const std::string& request_id);

 private:
  // logits: [num_rows, vocab_size] float32, contiguous, penalties applied;
  // overwritten in place. seqs: the rows' sequences, none greedy. Returns
  // [num_rows] int64 token ids.
  torch::Tensor sample_random(torch::Tensor logits, const std::vector<const Sequence*>& seqs);
  // sample_random's weights: exp(logits / T - row max) with what top-k,
  // top-p and min-p drop set to 0 (in place over logits, which it returns).
  torch::Tensor truncated_weights(torch::Tensor logits, const std::vector<const Sequence*>& seqs);
  // One uniform draw in [0, 1) for seq (from its own generator when seeded).
  double uniform(const Sequence& seq, const torch::Device& device);
  // Waits for the masks of the guided rows and sets every token they do not
  // allow to -inf in logits ([num_rows, vocab_size] float32). Rows whose
  // mask never comes, or allows nothing, are marked in `failed`.
  void apply_guides(torch::Tensor& logits, const std::vector<const Sequence*>& seqs,
                    const std::vector<int64_t>& guided_rows, std::vector<uint8_t>& failed);
  // The request's own generator on `device`, created from its seed on first use.
  at::Generator& generator_for(const Sequence& seq, const torch::Device& device);

  int eos_token_id_;
  // Not guarded: sample() and drop_request() run on the engine thread.
  std::unordered_map<std::string, at::Generator> generators_;
};

}  // namespace modelbench
