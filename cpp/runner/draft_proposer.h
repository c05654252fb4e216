// Speculative decoding with a draft model (vLLM's "draft_model" method): a
// smaller model with the same vocabulary proposes each sequence's next k
// tokens, greedily, before the target model's step verifies them. The draft
// keeps K/V of its own in a pool with the target's block layout, so it uses
// the sequences' block tables as they are; what it has computed of each
// sequence is tracked here and caught up before it proposes.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "core/scheduler_output.h"
#include "models/model.h"
#include "runner/kv_pool.h"

namespace modelbench {

class DraftProposer {
 public:
  DraftProposer(std::unique_ptr<Model> model, KVCacheSpec kv_spec, int num_blocks);

  // For each scheduled sequence with draft slots (draft_token_ids, whose
  // values the scheduler leaves at -1), the tokens the draft proposes for
  // them; empty elsewhere.
  std::vector<std::vector<int32_t>> propose(const SchedulerOutput& scheduler_output);
  // After verification: `request_id` keeps `num_valid` positions of the
  // draft's K/V (its last token's and the accepted drafts').
  void keep(const std::string& request_id, int num_valid);
  // A finished or preempted request: its blocks are gone.
  void drop(const std::string& request_id) { computed_.erase(request_id); }

  const ModelSpec& spec() const { return model_->spec(); }

 private:
  // One forward of the draft over (token, position) rows of the sequences
  // `rows_of`, each row its own query over the sequence's blocks up to its
  // position; returns each row's greedy next token.
  std::vector<int64_t> decode(const std::vector<const Sequence*>& seqs, const std::vector<int64_t>& tokens,
                              const std::vector<int64_t>& positions);

  std::unique_ptr<Model> model_;
  KVPool kv_pool_;
  int block_size_;
  std::unordered_map<std::string, int> computed_;  // positions with the draft's K/V, per request
};

}  // namespace modelbench
