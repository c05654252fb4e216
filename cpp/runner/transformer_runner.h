// The real model runner: turns a SchedulerOutput into one flat token batch
// (input ids, positions, slot mapping, per-sequence block tables), runs the
// model over the paged KV pools it owns, computes logits for the rows that
// need them, samples, and reports logprobs and prompt logprobs.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "runner/kv_pool.h"
#include "core/model_runner.h"
#include "models/model.h"
#include "runner/draft_proposer.h"
#include "runner/sampler.h"

namespace modelbench {

// Logits of one sequence's scheduled tokens in one step (debugging and parity tests).
struct RecordedLogits {
  std::string request_id;
  int first_position = 0;  // position of row 0
  torch::Tensor logits;    // [num_scheduled_tokens, vocab_size] float32
};

class TransformerRunner : public ModelRunner {
 public:
  // Builds the model from Hugging Face-named weights (see build_model) in
  // `dtype` ("float32" | "bfloat16" | "float16") on `device` ("cpu",
  // "cuda", ...), and KV pools of config.cache.num_blocks blocks of
  // config.cache.block_size tokens in `kv_cache_dtype` ("auto": the
  // model's; a float32 model may also use "bfloat16", or "float16" off the
  // CPU). config.eos_token_id goes to the sampler (min_tokens). `quant`
  // says which weights stay quantized (QuantOptions). Throws
  // InvalidArgument for a bad spec, dtype, device or weight.
  TransformerRunner(const ModelSpec& spec, const WeightMap& weights, const EngineConfig& config,
                    const std::string& dtype = "float32", const std::string& device = "cpu",
                    const std::string& kv_cache_dtype = "auto", const QuantOptions& quant = QuantOptions());

  RunnerOutput execute_model(const SchedulerOutput& scheduler_output) override;

  const ModelSpec& spec() const { return model_->spec(); }
  const KVPool& kv_pool() const { return kv_pool_; }
  torch::ScalarType dtype() const { return dtype_; }
  torch::ScalarType kv_cache_dtype() const { return kv_dtype_; }
  torch::Device device() const { return device_; }

  // Text embeddings: for each prompt, the mean over its positions of the
  // model's final hidden states (after the final norm), L2-normalized.
  // Runs the model over a scratch KV pool of its own, so it may run on
  // another thread while the engine steps (the model's weights are only
  // read). Throws InvalidArgument for an empty prompt, a token id outside
  // the vocabulary, or a prompt longer than max_model_len. Prompts run in
  // groups of at most max_num_batched_tokens tokens (a longer one alone).
  // Returns [num_prompts, hidden_size] float32 on the CPU.
  torch::Tensor embed(const std::vector<std::vector<int64_t>>& prompts) const;

  // When on, each execute_model also keeps the float32 logits of every
  // scheduled token (the head runs over the whole batch, so it is slower),
  // one entry per scheduled sequence, until the next step. The engine's
  // own forward produces them: tests compare them with a reference model.
  void set_record_logits(bool record) { record_logits_ = record; }

  // Speculative decoding with a draft model (SpeculativeConfig.draft_model):
  // built from its weights in this runner's dtype and device, with a KV
  // pool of its own in this runner's block layout. Throws InvalidArgument
  // (param "speculative_config") when its vocabulary is not this model's.
  void set_draft_model(const ModelSpec& spec, const WeightMap& weights, const QuantOptions& quant);
  bool has_draft_model() const { return draft_ != nullptr; }
  bool record_logits() const { return record_logits_; }
  const std::vector<RecordedLogits>& recorded_logits() const { return recorded_logits_; }

 private:
  ForwardBatch prepare_inputs(const SchedulerOutput& scheduler_output);
  // embed's work for prompts[begin, end), all in one forward over a scratch
  // pool: their unnormalized means, [end - begin, hidden_size] float32 on the CPU.
  torch::Tensor mean_hidden_states(const std::vector<std::vector<int64_t>>& prompts, size_t begin,
                                   size_t end) const;

  torch::Device device_;
  torch::ScalarType dtype_;
  torch::ScalarType kv_dtype_;
  int block_size_;
  int max_model_len_;
  int max_num_batched_tokens_;
  std::unique_ptr<Model> model_;
  KVPool kv_pool_;
  Sampler sampler_;
  bool record_logits_ = false;
  std::vector<RecordedLogits> recorded_logits_;

  // Host staging buffers, reused across steps; on the CPU the batch tensors
  // alias them for the duration of a step.
  std::vector<int64_t> input_ids_;        // [num_tokens]
  std::vector<int64_t> positions_;        // [num_tokens]
  std::vector<int64_t> slot_mapping_;     // [num_tokens]
  std::vector<int64_t> query_start_loc_;  // [num_seqs + 1]
  std::vector<int64_t> context_lens_;     // [num_seqs]
  std::vector<int32_t> block_tables_;     // [num_seqs, max_blocks_per_seq], row-major
  // Attention sees a sequence verifying drafts as one decode per position:
  // the scheduled sequence of each attention sequence, and where each
  // scheduled sequence's tokens start in the batch ([num_scheduled + 1]).
  std::vector<size_t> attention_seq_;
  std::vector<int64_t> token_start_;
  std::unique_ptr<DraftProposer> draft_;
  std::vector<std::vector<int32_t>> drafts_;  // this step's, from the draft model, per scheduled sequence
  // The draft tokens of scheduled[i]: the draft model's, or the scheduler's n-gram proposal.
  const std::vector<int32_t>& drafts_of(const SchedulerOutput& out, size_t i) const {
    return i < drafts_.size() && !drafts_[i].empty() ? drafts_[i] : out.scheduled[i].draft_token_ids;
  }
};

}  // namespace modelbench
