// EmbeddingRunner: an encoder model (BertModel) with its pooling, turning
// lists of token ids into one vector each. Inputs are sorted by length and
// run in packed forwards of at most max_batch_tokens tokens, so a batch of
// short sentences is one forward and the attention's padding stays small.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "models/bert.h"

namespace modelbench {

class EmbeddingRunner {
 public:
  // pooling: "mean" | "cls"; normalize: L2-normalize each vector;
  // max_seq_len: the longest input accepted (at most the model's
  // max_position_embeddings); max_batch_tokens: tokens per forward (an input
  // longer than that runs alone). dtype and device as TransformerRunner's.
  // matmul_precision (torch's names): "highest", float32 products; "medium",
  // a float32 model's linears multiply in bf16 with fp32 sums where the CPU
  // has AMX tiles (elsewhere it is "highest": nothing faster to trade for).
  EmbeddingRunner(const BertSpec& spec, const WeightMap& weights, const std::string& dtype,
                  const std::string& device, const std::string& pooling, bool normalize, int max_seq_len,
                  int max_batch_tokens = 8192, const std::string& matmul_precision = "highest");

  // [num_prompts, hidden_size] float32 on the CPU, in the prompts' order.
  // Throws InvalidArgument (param "prompt") for no prompts, an empty one, a
  // token id outside the vocabulary or a prompt longer than max_seq_len.
  // Safe to call from several threads at once (the weights are only read).
  torch::Tensor embed(const std::vector<std::vector<int64_t>>& prompts) const;

  const BertSpec& spec() const { return model_->spec(); }
  int max_seq_len() const { return max_seq_len_; }
  bool normalize() const { return normalize_; }
  std::string pooling() const { return pooling_ == Pooling::kMean ? "mean" : "cls"; }
  // What the linears really do: "medium" only where bf16 products run.
  std::string matmul_precision() const { return model_->bf16_products() ? "medium" : "highest"; }

 private:
  std::unique_ptr<BertModel> model_;
  Pooling pooling_;
  bool normalize_;
  int max_seq_len_;
  int max_batch_tokens_;
};

}  // namespace modelbench
