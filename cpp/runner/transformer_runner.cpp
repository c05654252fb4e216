// TransformerRunner: flat batch construction, the forward under
// InferenceMode, logits for sampled and prompt-logprob rows, sampling.
#include "runner/transformer_runner.h"

#include "models/dtype.h"

#include <ATen/record_function.h>

#include <algorithm>

namespace modelbench {
namespace {

KVCacheSpec kv_cache_spec(const ModelSpec& spec, const CacheConfig& cache, torch::ScalarType dtype,
                          torch::Device device) {
  KVCacheSpec kv;
  kv.num_layers = spec.num_layers;
  kv.num_kv_heads = spec.num_kv_heads;
  kv.head_dim = spec.head_dim;
  kv.block_size = cache.block_size;
  kv.dtype = dtype;
  kv.device = device;
  return kv;
}

// A CPU tensor over a staging buffer (no copy), then on `device`.
torch::Tensor to_device(std::vector<int64_t>& values, torch::Device device) {
  return torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, torch::kLong).to(device);
}

// Rows of the batch whose logits give prompt logprobs for one sequence.
struct PromptLogprobRows {
  size_t index;        // in scheduler_output.scheduled
  int first_position;  // prompt position of the first row
  int64_t first_row;   // in the batch
  int64_t num_rows;
};

// The KV cache's dtype: "auto" is the model's; a float32 model may keep it
// in bfloat16 (half the bytes: twice the sequences, half the reads) or in
// int8 rows with a scale each (a quarter of float32's bytes, plus 4 a row).
torch::ScalarType kv_cache_dtype_from_name(const std::string& name, torch::ScalarType model_dtype,
                                           const torch::Device& device) {
  if (name == "auto") return model_dtype;
  if (name != "int8" && name != "float32" && name != "bfloat16" && name != "float16")
    throw InvalidArgument("kv_cache_dtype must be one of auto, float32, bfloat16, float16, int8, got '" + name + "'",
                          "kv_cache_dtype");
  if (name == "int8" && !device.is_cpu())
    throw InvalidArgument("kv_cache_dtype int8 runs on the CPU; on " + device.str() + " use 'auto' or 'bfloat16'",
                          "kv_cache_dtype");
  const torch::ScalarType kv =
      name == "int8" ? torch::kChar : model_dtype_from_name(name, device, "kv_cache_dtype");
  if (kv != model_dtype && model_dtype != torch::kFloat32)
    throw InvalidArgument("kv_cache_dtype " + name + " needs a float32 model (or 'auto'), the model is " +
                          dtype_name(model_dtype),
                          "kv_cache_dtype");
  return kv;
}

}  // namespace

TransformerRunner::TransformerRunner(const ModelSpec& spec, const WeightMap& weights, const EngineConfig& config,
                                     const std::string& dtype, const std::string& device,
                                     const std::string& kv_cache_dtype, const QuantOptions& quant)
    : device_(model_device_from_name(device)),
      dtype_(model_dtype_from_name(dtype, device_)),
      kv_dtype_(kv_cache_dtype_from_name(kv_cache_dtype, dtype_, device_)),
      block_size_(config.cache.block_size),
      max_model_len_(config.scheduler.max_model_len),
      max_num_batched_tokens_(config.scheduler.max_num_batched_tokens),
      model_([&] {
        // Weights and pools are made inside InferenceMode like every tensor of a step.
        c10::InferenceMode guard;
        config.validate();
        if (spec.architecture == "gpt2" && config.scheduler.max_model_len > spec.max_position_embeddings)
          throw InvalidArgument("max_model_len (" + std::to_string(config.scheduler.max_model_len) +
                                ") exceeds gpt2's learned positions (max_position_embeddings=" +
                                std::to_string(spec.max_position_embeddings) + ")",
                                "max_model_len");
        return build_model(spec, weights, dtype_, device_, quant);
      }()),
      kv_pool_([&] {
        c10::InferenceMode guard;
        return KVPool(kv_cache_spec(spec, config.cache, kv_dtype_, device_), config.cache.num_blocks);
      }()),
      sampler_(config.eos_token_id) {}

ForwardBatch TransformerRunner::prepare_inputs(const SchedulerOutput& scheduler_output) {
  const auto& scheduled = scheduler_output.scheduled;
  input_ids_.clear();
  positions_.clear();
  slot_mapping_.clear();
  query_start_loc_.assign(1, 0);
  context_lens_.clear();
  token_start_.assign(1, 0);
  attention_seq_.clear();
  int64_t max_blocks = 0;
  for (size_t i = 0; i < scheduled.size(); ++i) {
    const ScheduledSequence& s = scheduled[i];
    const Sequence& seq = *s.seq;
    const auto& token_ids = seq.token_ids();
    const auto& block_table = seq.block_table;
    const int end = s.num_computed_tokens + s.num_scheduled_tokens;
    const int known = seq.num_tokens();  // then the draft tokens
    TORCH_INTERNAL_ASSERT(end <= known + static_cast<int>(s.draft_token_ids.size()) &&
                              static_cast<int64_t>(block_table.size()) * block_size_ >= end,
                          "request ", seq.request_id(), " scheduled up to position ", end, " with ",
                          seq.num_tokens(), " tokens, ", s.draft_token_ids.size(), " drafts and ",
                          block_table.size(), " blocks");
    const std::vector<int32_t>& drafts = drafts_of(scheduler_output, i);
    for (int p = s.num_computed_tokens; p < end; ++p) {
      const int32_t token = p < known ? token_ids[p] : drafts[p - known];
      TORCH_CHECK(token >= 0, "request ", seq.request_id(), " has draft slots but no draft model filled them");
      input_ids_.push_back(token);
      positions_.push_back(p);
      slot_mapping_.push_back(static_cast<int64_t>(block_table[p / block_size_]) * block_size_ + p % block_size_);
      // A sequence verifying drafts attends as one decode per position (its
      // K/V are all written before attention runs), so each row is computed
      // by the kernels, and in the order, that plain decoding would use.
      if (!s.draft_token_ids.empty()) {
        query_start_loc_.push_back(static_cast<int64_t>(input_ids_.size()));
        context_lens_.push_back(p + 1);
        attention_seq_.push_back(i);
      }
    }
    if (s.draft_token_ids.empty()) {
      query_start_loc_.push_back(static_cast<int64_t>(input_ids_.size()));
      context_lens_.push_back(end);
      attention_seq_.push_back(i);
    }
    token_start_.push_back(static_cast<int64_t>(input_ids_.size()));
    max_blocks = std::max<int64_t>(max_blocks, (end + block_size_ - 1) / block_size_);
  }
  const auto num_seqs = static_cast<int64_t>(attention_seq_.size());
  block_tables_.assign(num_seqs * max_blocks, 0);
  for (int64_t i = 0; i < num_seqs; ++i) {
    const auto& table = scheduled[attention_seq_[i]].seq->block_table;
    const int64_t n = std::min<int64_t>(max_blocks, static_cast<int64_t>(table.size()));
    std::copy(table.begin(), table.begin() + n, block_tables_.begin() + i * max_blocks);
  }

  ForwardBatch batch;
  batch.input_ids = to_device(input_ids_, device_);
  batch.positions = to_device(positions_, device_);
  batch.slot_mapping = to_device(slot_mapping_, device_);
  batch.attention.query_start_loc = torch::from_blob(query_start_loc_.data(), {num_seqs + 1}, torch::kLong);
  batch.attention.context_lens = torch::from_blob(context_lens_.data(), {num_seqs}, torch::kLong);
  batch.attention.block_tables = torch::from_blob(block_tables_.data(), {num_seqs, max_blocks}, torch::kInt);
  return batch;
}

torch::Tensor TransformerRunner::embed(const std::vector<std::vector<int64_t>>& prompts) const {
  c10::InferenceMode guard;
  const ModelSpec& spec = model_->spec();
  if (prompts.empty()) throw InvalidArgument("prompts must hold at least one prompt", "prompts");
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto len = static_cast<int64_t>(prompts[i].size());
    const std::string which = "prompt " + std::to_string(i);
    if (len == 0) throw InvalidArgument("prompt must not be empty (" + which + ")", "prompt");
    if (len > max_model_len_)
      throw InvalidArgument("prompt has " + std::to_string(len) + " tokens, more than max_model_len=" +
                            std::to_string(max_model_len_) + " (" + which + ")",
                            "prompt");
    for (int64_t id : prompts[i])
      if (id < 0 || id >= spec.vocab_size)
        throw InvalidArgument("prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                              std::to_string(spec.vocab_size) + ") (" + which + ")",
                              "prompt");
  }

  // Consecutive prompts go through the model together while they fit in one
  // engine step's token budget (a longer prompt goes alone), so the scratch
  // pool and the activations stay the size of a step however many prompts
  // one call brings.
  std::vector<torch::Tensor> pooled;  // per group: [group_size, hidden_size] float32, CPU
  size_t begin = 0;
  while (begin < prompts.size()) {
    size_t end = begin + 1;
    auto tokens = static_cast<int64_t>(prompts[begin].size());
    while (end < prompts.size() && tokens + static_cast<int64_t>(prompts[end].size()) <= max_num_batched_tokens_)
      tokens += static_cast<int64_t>(prompts[end++].size());
    pooled.push_back(mean_hidden_states(prompts, begin, end));
    begin = end;
  }
  const torch::Tensor means = torch::cat(pooled);  // [num_prompts, hidden_size]
  return torch::nn::functional::normalize(means, torch::nn::functional::NormalizeFuncOptions().p(2).dim(1));
}

torch::Tensor TransformerRunner::mean_hidden_states(const std::vector<std::vector<int64_t>>& prompts, size_t begin,
                                                    size_t end) const {
  const auto num_seqs = static_cast<int64_t>(end - begin);
  int64_t max_blocks = 0;
  for (size_t i = begin; i < end; ++i) {
    const auto len = static_cast<int64_t>(prompts[i].size());
    max_blocks = std::max<int64_t>(max_blocks, (len + block_size_ - 1) / block_size_);
  }

  // Each prompt is one whole prefill into consecutive blocks of its own in a
  // pool just big enough; nothing is shared with the engine's pool.
  std::vector<int64_t> input_ids, positions, slot_mapping, query_start_loc{0}, context_lens;
  std::vector<int32_t> block_tables(num_seqs * max_blocks, 0);
  int32_t next_block = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const std::vector<int64_t>& prompt = prompts[begin + s];
    const auto len = static_cast<int64_t>(prompt.size());
    const int32_t first_block = next_block;
    const auto num_blocks = static_cast<int32_t>((len + block_size_ - 1) / block_size_);
    for (int32_t b = 0; b < num_blocks; ++b) block_tables[s * max_blocks + b] = first_block + b;
    next_block += num_blocks;
    for (int64_t p = 0; p < len; ++p) {
      input_ids.push_back(prompt[p]);
      positions.push_back(p);
      slot_mapping.push_back(static_cast<int64_t>(first_block) * block_size_ + p);
    }
    query_start_loc.push_back(static_cast<int64_t>(input_ids.size()));
    context_lens.push_back(len);
  }
  KVPool scratch(kv_pool_.spec(), next_block);

  ForwardBatch batch;
  batch.input_ids = to_device(input_ids, device_);
  batch.positions = to_device(positions, device_);
  batch.slot_mapping = to_device(slot_mapping, device_);
  batch.attention.query_start_loc = torch::from_blob(query_start_loc.data(), {num_seqs + 1}, torch::kLong);
  batch.attention.context_lens = torch::from_blob(context_lens.data(), {num_seqs}, torch::kLong);
  batch.attention.block_tables = torch::from_blob(block_tables.data(), {num_seqs, max_blocks}, torch::kInt);
  // Means in float32 whatever the model's dtype.
  const torch::Tensor hidden = model_->forward(batch, scratch).to(torch::kFloat);  // [num_tokens, hidden_size]

  std::vector<torch::Tensor> means;  // per prompt: [hidden_size]
  means.reserve(num_seqs);
  for (int64_t s = 0; s < num_seqs; ++s)
    means.push_back(hidden.narrow(0, query_start_loc[s], context_lens[s]).mean(0));
  return torch::stack(means).cpu();  // one copy to the host per group
}

void TransformerRunner::set_draft_model(const ModelSpec& spec, const WeightMap& weights, const QuantOptions& quant) {
  c10::InferenceMode guard;
  if (spec.vocab_size != model_->spec().vocab_size)
    throw InvalidArgument("the draft model's vocabulary has " + std::to_string(spec.vocab_size) +
                              " tokens, the model's " + std::to_string(model_->spec().vocab_size) +
                              ": a draft model must share the model's tokenizer",
                          "speculative_config");
  KVCacheSpec kv = kv_pool_.spec();
  kv.num_layers = spec.num_layers;
  kv.num_kv_heads = spec.num_kv_heads;
  kv.head_dim = spec.head_dim;
  draft_ = std::make_unique<DraftProposer>(build_model(spec, weights, dtype_, device_, quant), kv,
                                           kv_pool_.num_blocks());
}

RunnerOutput TransformerRunner::execute_model(const SchedulerOutput& scheduler_output) {
  c10::InferenceMode inference_mode;
  for (const std::string& request_id : scheduler_output.finished_request_ids) sampler_.drop_request(request_id);
  const auto& scheduled = scheduler_output.scheduled;
  RunnerOutput result;
  result.sampled_token_ids.assign(scheduled.size(), -1);
  recorded_logits_.clear();
  if (scheduled.empty()) return result;

  drafts_.clear();
  if (draft_) {
    RECORD_FUNCTION("modelbench::draft_propose", std::vector<c10::IValue>());
    drafts_ = draft_->propose(scheduler_output);
  }
  ForwardBatch batch;
  {
    RECORD_FUNCTION("modelbench::prepare_inputs", std::vector<c10::IValue>());
    batch = prepare_inputs(scheduler_output);
  }
  torch::Tensor hidden;  // [num_tokens, hidden_size]
  {
    RECORD_FUNCTION("modelbench::forward", std::vector<c10::IValue>());
    hidden = model_->forward(batch, kv_pool_);
  }
  RECORD_FUNCTION("modelbench::logits_and_sampling", std::vector<c10::IValue>());

  // Only some rows need logits: the last token of each sequence that samples,
  // and the prompt positions whose next prompt token wants a logprob.
  std::vector<int64_t> rows;  // batch rows: sampled rows first, then prompt-logprob rows
  std::vector<size_t> sample_index;
  std::vector<const Sequence*> sample_seqs;
  std::vector<PromptLogprobRows> prompt_rows;
  bool wants_logprobs = false;
  for (size_t i = 0; i < scheduled.size(); ++i) {
    const ScheduledSequence& s = scheduled[i];
    if (!s.needs_sample || !s.draft_token_ids.empty()) continue;  // drafts: verified below
    rows.push_back(token_start_[i + 1] - 1);
    sample_index.push_back(i);
    sample_seqs.push_back(s.seq);
    wants_logprobs |= s.seq->params().logprobs >= 0;
  }
  const auto num_sampled = static_cast<int64_t>(rows.size());
  // Speculative decoding: a sequence with drafts is verified from the logits
  // of its last known token and of each draft (1 + drafts rows, after the
  // sampled ones).
  std::vector<std::pair<size_t, int64_t>> spec_rows;  // (scheduled index, first row)
  for (size_t i = 0; i < scheduled.size(); ++i) {
    const auto num_drafts = static_cast<int64_t>(scheduled[i].draft_token_ids.size());
    if (num_drafts == 0) continue;
    spec_rows.emplace_back(i, static_cast<int64_t>(rows.size()));
    for (int64_t r = 0; r <= num_drafts; ++r) rows.push_back(token_start_[i + 1] - 1 - num_drafts + r);
  }
  for (size_t i = 0; i < scheduled.size(); ++i) {
    const ScheduledSequence& s = scheduled[i];
    if (s.seq->params().prompt_logprobs < 0) continue;
    // Position p scores prompt token p + 1, so the last prompt position has none.
    const int end = std::min(s.num_computed_tokens + s.num_scheduled_tokens, s.seq->num_prompt_tokens() - 1);
    const int num_rows = std::max(0, end - s.num_computed_tokens);
    prompt_rows.push_back({i, s.num_computed_tokens, static_cast<int64_t>(rows.size()), num_rows});
    for (int r = 0; r < num_rows; ++r) rows.push_back(token_start_[i] + r);
  }

  torch::Tensor logits;  // [rows.size(), vocab_size] float32
  if (record_logits_) {
    const torch::Tensor all_logits = model_->compute_logits(hidden);  // [num_tokens, vocab_size]
    for (size_t i = 0; i < scheduled.size(); ++i)
      recorded_logits_.push_back({scheduled[i].seq->request_id(), scheduled[i].num_computed_tokens,
                                  all_logits.narrow(0, token_start_[i], scheduled[i].num_scheduled_tokens)});
    if (!rows.empty()) logits = all_logits.index_select(0, to_device(rows, device_));
  } else if (!rows.empty()) {
    logits = model_->compute_logits(hidden.index_select(0, to_device(rows, device_)));
  }

  if (num_sampled > 0) {
    SamplerOutput sampled = sampler_.sample(logits.narrow(0, 0, num_sampled), sample_seqs);
    if (wants_logprobs) result.logprobs.resize(scheduled.size());
    for (int64_t j = 0; j < num_sampled; ++j) {
      if (sampled.guide_failed[j]) {
        if (result.guide_failed.empty()) result.guide_failed.assign(scheduled.size(), 0);
        result.guide_failed[sample_index[j]] = 1;
      }
      result.sampled_token_ids[sample_index[j]] = sampled.token_ids[j];
      if (wants_logprobs && j < static_cast<int64_t>(sampled.logprobs.size()))
        result.logprobs[sample_index[j]] = std::move(sampled.logprobs[j]);
    }
  }
  if (!spec_rows.empty()) {
    result.spec_token_ids.resize(scheduled.size());
    for (const auto& [i, first_row] : spec_rows) {
      const ScheduledSequence& s = scheduled[i];
      const auto n = static_cast<int64_t>(s.draft_token_ids.size()) + 1;
      const std::vector<int32_t>& drafts = drafts_of(scheduler_output, i);
      std::vector<int32_t> tokens = sampler_.verify(logits.narrow(0, first_row, n), *s.seq, drafts);
      result.sampled_token_ids[i] = tokens.front();
      result.spec_token_ids[i].assign(tokens.begin() + 1, tokens.end());
      if (draft_) {
        // The draft's K/V stand for the last token and the accepted drafts
        // it took as input (the last draft never was one).
        const auto accepted = static_cast<int>(tokens.size()) - 1;
        draft_->keep(s.seq->request_id(),
                     s.seq->num_tokens() + std::min(accepted, static_cast<int>(drafts.size()) - 1));
      }
    }
  }
  if (!prompt_rows.empty()) {
    result.prompt_logprobs.resize(scheduled.size());
    for (const PromptLogprobRows& p : prompt_rows) {
      if (p.num_rows == 0) continue;
      const Sequence& seq = *scheduled[p.index].seq;
      const auto& token_ids = seq.token_ids();
      std::vector<int64_t> targets(token_ids.begin() + p.first_position + 1,
                                   token_ids.begin() + p.first_position + 1 + p.num_rows);  // [num_rows]
      result.prompt_logprobs[p.index] = Sampler::compute_logprobs(
          logits.narrow(0, p.first_row, p.num_rows), to_device(targets, device_), seq.params().prompt_logprobs);
    }
  }
  return result;
}

}  // namespace modelbench
