// The Llama family: LlamaForCausalLM, Qwen2ForCausalLM (q/k/v biases) and
// MistralForCausalLM (optional sliding window) share this code; the spec's
// flags (attention_bias, sliding_window, tie_word_embeddings, rope_scaling)
// carry their differences. Pre-norm decoder: RMSNorm, rotary self-attention,
// RMSNorm, SwiGLU MLP, residuals around both.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "models/layers.h"
#include "models/model.h"

namespace modelbench {

class LlamaForCausalLM : public Model {
 public:
  // Reads the Hugging Face names model.embed_tokens, model.layers.{i}.*,
  // model.norm and lm_head (absent when tied).
  LlamaForCausalLM(const ModelSpec& spec, const WeightLoader& loader);

  torch::Tensor forward(const ForwardBatch& batch, KVPool& kv_pool) const override;
  torch::Tensor compute_logits(const torch::Tensor& hidden) const override;

 private:
  struct Layer {
    RMSNorm input_norm;
    AttentionBlock attention;
    RMSNorm post_attention_norm;
    GatedMLP mlp;
  };

  Embedding embed_tokens_;  // [vocab_size, hidden_size]
  std::vector<Layer> layers_;
  RMSNorm norm_;
  Linear lm_head_;  // [vocab_size, hidden_size]: the embed_tokens_ when tied (packed apart in float32 on the CPU)
  RotaryEmbedding rotary_;
};

}  // namespace modelbench
