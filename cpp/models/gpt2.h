// GPT2LMHeadModel: learned position embeddings, pre-LayerNorm blocks,
// fused c_attn projection, gelu_new MLP, head tied to the token embedding
// (or lm_head when a config unties it).
// Conv1D weights are stored [in, out] in checkpoints and transposed at load.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/layers.h"
#include "models/model.h"

namespace modelbench {

class GPT2LMHeadModel : public Model {
 public:
  // Reads transformer.wte, transformer.wpe, transformer.h.{i}.*,
  // transformer.ln_f (also without the "transformer." prefix, as the
  // original gpt2 checkpoints store them), and lm_head when not tied.
  GPT2LMHeadModel(const ModelSpec& spec, const WeightLoader& loader);

  torch::Tensor forward(const ForwardBatch& batch, KVPool& kv_pool) const override;
  torch::Tensor compute_logits(const torch::Tensor& hidden) const override;

 private:
  struct Layer {
    LayerNorm ln_1;
    AttentionBlock attention;
    LayerNorm ln_2;
    GeluMLP mlp;
  };

  Embedding wte_;  // [vocab_size, hidden_size]
  torch::Tensor wpe_;  // [max_position_embeddings, hidden_size]
  std::vector<Layer> layers_;
  LayerNorm ln_f_;
  Linear lm_head_;  // [vocab_size, hidden_size]: the wte_ when tied (packed apart in float32 on the CPU)
};

}  // namespace modelbench
