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

// Consecutive sequences whose attention runs as one padded batch: lengths
// close enough that padding them to the longest wastes little (an input
// alone, or inputs of one length, are not padded at all).
struct AttentionGroup {
  int64_t first_token = 0;  // the group's tokens are packed rows [first_token, first_token + num_tokens)
  int64_t num_tokens = 0;
  int64_t num_seqs = 0;
  int64_t max_len = 0;
  // Inputs of different lengths: each token's row in the group's padded
  // [num_seqs * max_len] layout, and which padded keys are real; undefined
  // when every input of the group has max_len tokens.
  torch::Tensor padded_index;  // [num_tokens] int64
  torch::Tensor key_mask;      // [num_seqs, 1, 1, max_len] bool (true: a token)
};

// Sequences packed end to end, as one forward runs them.
struct PackedBatch {
  torch::Tensor input_ids;  // [num_tokens] int64, on the model's device
  torch::Tensor positions;  // [num_tokens] int64 (0.. within each sequence)
  std::vector<int64_t> seq_lens;  // per sequence, summing to num_tokens
  std::vector<AttentionGroup> groups;  // covering the sequences in order
  int64_t max_len = 0;
};

// Padded score entries a group may waste (n * max_len^2 - sum of len^2)
// before the next input starts a group of its own: at least this many, or a
// quarter of the group's real entries. An extra group costs one more
// attention call per layer; padding costs score and softmax work.
constexpr int64_t kGroupPaddingAllowance = 4096;

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
  // bf16_products: a float32 model's linears multiply in bf16 on AMX tiles
  // (sums in fp32: linear_amx.h) where this CPU has them; see bf16_products().
  BertModel(const BertSpec& spec, const WeightMap& weights, torch::ScalarType dtype, torch::Device device,
            bool bf16_products = false);

  const BertSpec& spec() const { return spec_; }
  torch::ScalarType dtype() const { return dtype_; }
  torch::Device device() const { return device_; }
  // Whether the linears really run with bf16 products (asked for, and possible here).
  bool bf16_products() const { return bf16_products_; }

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
  bool bf16_products_ = false;
  torch::Tensor word_embeddings_;      // [vocab_size, hidden]
  torch::Tensor position_embeddings_;  // [max_position_embeddings, hidden], token type 0's row added
  LayerNorm embeddings_norm_;
  std::vector<Layer> layers_;
};

}  // namespace modelbench
