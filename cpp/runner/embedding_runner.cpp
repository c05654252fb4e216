// EmbeddingRunner: input checks, length-sorted packed forwards, pooling.
#include "runner/embedding_runner.h"

#include <algorithm>
#include <numeric>

#include "core/config.h"
#include "models/dtype.h"

namespace modelbench {

EmbeddingRunner::EmbeddingRunner(const BertSpec& spec, const WeightMap& weights, const std::string& dtype,
                                 const std::string& device, const std::string& pooling, bool normalize,
                                 int max_seq_len, int max_batch_tokens, const std::string& matmul_precision)
    : pooling_(pooling_from_name(pooling)),
      normalize_(normalize),
      max_seq_len_(max_seq_len),
      max_batch_tokens_(max_batch_tokens) {
  if (max_seq_len < 1 || max_seq_len > spec.max_position_embeddings)
    throw InvalidArgument("max_seq_len must be between 1 and the model's max_position_embeddings (" +
                              std::to_string(spec.max_position_embeddings) + "), got " + std::to_string(max_seq_len),
                          "max_seq_len");
  if (max_batch_tokens < 1)
    throw InvalidArgument("max_batch_tokens must be >= 1, got " + std::to_string(max_batch_tokens),
                          "max_batch_tokens");
  if (matmul_precision != "highest" && matmul_precision != "medium")
    throw InvalidArgument("matmul_precision must be 'highest' or 'medium', got '" + matmul_precision + "'",
                          "matmul_precision");
  const torch::Device dev = model_device_from_name(device);
  model_ = std::make_unique<BertModel>(spec, weights, model_dtype_from_name(dtype, dev), dev,
                                       matmul_precision == "medium");
}

torch::Tensor EmbeddingRunner::embed(const std::vector<std::vector<int64_t>>& prompts) const {
  if (prompts.empty()) throw InvalidArgument("embed needs at least one prompt", "prompt");
  const int64_t vocab = model_->spec().vocab_size;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int64_t>& p = prompts[i];
    const std::string which = "prompt " + std::to_string(i);
    if (p.empty()) throw InvalidArgument(which + " is empty", "prompt");
    if (static_cast<int64_t>(p.size()) > max_seq_len_)
      throw InvalidArgument(which + " has " + std::to_string(p.size()) + " tokens; the model takes at most " +
                                std::to_string(max_seq_len_),
                            "prompt");
    for (int64_t id : p)
      if (id < 0 || id >= vocab)
        throw InvalidArgument(which + " holds token id " + std::to_string(id) + ", outside the vocabulary [0, " +
                                  std::to_string(vocab) + ")",
                              "prompt");
  }
  c10::InferenceMode guard;
  // Shortest first: neighbours in a forward have similar lengths.
  std::vector<size_t> order(prompts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return prompts[a].size() < prompts[b].size(); });
  std::vector<std::vector<int64_t>> sorted;
  sorted.reserve(prompts.size());
  for (size_t i : order) sorted.push_back(prompts[i]);

  const int64_t hidden = model_->spec().hidden_size;
  torch::Tensor result = torch::empty({static_cast<int64_t>(prompts.size()), hidden}, torch::kFloat32);
  size_t begin = 0;
  while (begin < sorted.size()) {
    size_t end = begin + 1;
    int64_t tokens = static_cast<int64_t>(sorted[begin].size());
    while (end < sorted.size() && tokens + static_cast<int64_t>(sorted[end].size()) <= max_batch_tokens_)
      tokens += static_cast<int64_t>(sorted[end++].size());
    const PackedBatch batch = pack_sequences(sorted, begin, end, model_->device());
    const torch::Tensor states = model_->forward(batch).to(torch::kFloat32);  // [tokens, hidden]
    const auto lens = torch::tensor(batch.seq_lens, torch::kLong).to(states.device());
    torch::Tensor pooled;
    if (pooling_ == Pooling::kCls) {
      pooled = states.index_select(0, lens.cumsum(0) - lens);  // each sequence's first token
    } else if (lens.size(0) == 1) {
      pooled = states.mean(0, /*keepdim=*/true);
    } else {
      const auto seq_of_token = torch::repeat_interleave(torch::arange(lens.size(0), lens.options()), lens);
      pooled = torch::zeros({lens.size(0), hidden}, states.options())
                   .index_add_(0, seq_of_token, states)
                   .div_(lens.unsqueeze(1).to(torch::kFloat32));
    }
    if (normalize_) pooled = torch::nn::functional::normalize(pooled, torch::nn::functional::NormalizeFuncOptions().dim(1));
    std::vector<int64_t> rows(order.begin() + static_cast<std::ptrdiff_t>(begin),
                              order.begin() + static_cast<std::ptrdiff_t>(end));
    result.index_copy_(0, torch::tensor(rows, torch::kLong), pooled.cpu());
    begin = end;
  }
  return result;
}

}  // namespace modelbench
