// BertModel, the encoder of sentence-transformers models (all-MiniLM-L6-v2):
// word + absolute position + token type embeddings and a LayerNorm, then
// post-LayerNorm blocks of bidirectional self-attention (q/k/v fused into
// one matmul at load) and an erf-GELU MLP. No KV cache: every forward sees
// whole sequences. The batch is packed (padding-free): linears, norms and
// the MLP run over the concatenated tokens of all sequences; only the
// attention's score matrices are per sequence.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/layers.h"
#include "models/model.h"

namespace modelbench {

struct BertSpec {
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int intermediate_size = 0;
  int max_position_embeddings = 512;
  int type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  std::string hidden_act = "gelu";  // gelu (erf) | gelu_new | gelu_pytorch_tanh (tanh)

  // Throws InvalidArgument naming the first inconsistent field.
  void validate() const;
};

// How a sequence's token states become one vector.
enum class Pooling { kMean, kCls };

// "mean" | "cls"; InvalidArgument (param "pooling") otherwise.
Pooling pooling_from_name(const std::string& name);

// Sequences packed end to end, as one forward runs them.
struct PackedBatch {
  torch::Tensor input_ids;  // [num_tokens] int64, on the model's device
  torch::Tensor positions;  // [num_tokens] int64 (0.. within each sequence)
  std::vector<int64_t> seq_lens;  // per sequence, summing to num_tokens
  // For the attention of several sequences: each token's row in the padded
  // [num_seqs * max_len] layout, and which padded keys are real.
  torch::Tensor padded_index;  // [num_tokens] int64
  torch::Tensor key_mask;      // [num_seqs, 1, 1, max_len] bool (true: a token)
  int64_t max_len = 0;
};

// Packs `prompts[begin, end)` (token ids, checked by the caller) for `device`.
PackedBatch pack_sequences(const std::vector<std::vector<int64_t>>& prompts, size_t begin, size_t end,
                           torch::Device device);

class BertModel {
 public:
  // Weights under Hugging Face names, with or without the "bert." prefix:
  // embeddings.{word,position,token_type}_embeddings, embeddings.LayerNorm,
  // encoder.layer.{i}.attention.self.{query,key,value},
  // attention.output.{dense,LayerNorm}, intermediate.dense,
  // output.{dense,LayerNorm}. A pooler, if present, is ignored.
  BertModel(const BertSpec& spec, const WeightMap& weights, torch::ScalarType dtype, torch::Device device);

  const BertSpec& spec() const { return spec_; }
  torch::ScalarType dtype() const { return dtype_; }
  torch::Device device() const { return device_; }

  // Final hidden states of every packed token: [num_tokens, hidden_size]
  // in the model's dtype. Token types are all 0 (one segment per input).
  torch::Tensor forward(const PackedBatch& batch) const;

 private:
  struct Layer {
    Linear qkv;  // [3 * hidden, hidden]: query rows, key rows, value rows
    Linear attn_out;
    LayerNorm attn_norm;
    Linear intermediate;
    Linear output;
    LayerNorm output_norm;
  };

  torch::Tensor attention(const torch::Tensor& qkv, const PackedBatch& batch) const;

  BertSpec spec_;
  torch::ScalarType dtype_;
  torch::Device device_;
  bool gelu_tanh_ = false;
  torch::Tensor word_embeddings_;      // [vocab_size, hidden]
  torch::Tensor position_embeddings_;  // [max_position_embeddings, hidden], token type 0's row added
  LayerNorm embeddings_norm_;
  std::vector<Layer> layers_;
};

}  // namespace modelbench
