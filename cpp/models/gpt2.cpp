// GPT2LMHeadModel: loading (Conv1D transposes, optional name prefix) and
// the forward over a flat paged batch.
#include "models/gpt2.h"

#include <ATen/record_function.h>

#include <cmath>


namespace modelbench {

GPT2LMHeadModel::GPT2LMHeadModel(const ModelSpec& spec, const WeightLoader& loader) : Model(spec) {
  const int64_t hidden = spec.hidden_size;
  const std::string root = loader.contains("transformer.wte.weight") || !loader.contains("wte.weight")
                               ? "transformer."
                               : "";
  auto layer_norm = [&](const std::string& prefix) {
    return LayerNorm{loader.get(prefix + ".weight", {hidden}), loader.get(prefix + ".bias", {hidden}),
                     spec.norm_eps};
  };
  wte_ = load_embedding(loader, root + "wte.weight", spec.vocab_size, hidden);
  wpe_ = loader.get(root + "wpe.weight", {spec.max_position_embeddings, hidden});
  layers_.reserve(spec.num_layers);
  for (int i = 0; i < spec.num_layers; ++i) {
    const std::string prefix = root + "h." + std::to_string(i) + ".";
    Layer layer;
    layer.ln_1 = layer_norm(prefix + "ln_1");
    AttentionBlock& attn = layer.attention;
    // c_attn's output columns are q, k, v in that order, like our fused layout.
    attn.qkv = load_conv1d(loader, prefix + "attn.c_attn", hidden, 3 * hidden);
    attn.out = load_conv1d(loader, prefix + "attn.c_proj", hidden, hidden);
    attn.num_heads = spec.num_heads;
    attn.num_kv_heads = spec.num_heads;
    attn.head_dim = spec.head_dim;
    attn.scale = 1.0 / std::sqrt(static_cast<double>(spec.head_dim));
    layer.ln_2 = layer_norm(prefix + "ln_2");
    layer.mlp.fc = load_conv1d(loader, prefix + "mlp.c_fc", hidden, spec.intermediate_size);
    layer.mlp.proj = load_conv1d(loader, prefix + "mlp.c_proj", spec.intermediate_size, hidden);
    layers_.push_back(std::move(layer));
  }
  ln_f_ = layer_norm(root + "ln_f");
  // Tied: a quantized embedding is the head's weight too; the float packed
  // kernel gets its own copy (the lookup needs rows of the embedding).
  lm_head_ = spec.tie_word_embeddings ? wte_.as_linear()
                                      : load_head(loader, "lm_head.weight", spec.vocab_size, hidden);
}

torch::Tensor GPT2LMHeadModel::forward(const ForwardBatch& batch, KVPool& kv_pool) const {
  // [num_tokens, hidden_size]
  torch::Tensor hidden = wte_(batch.input_ids) + wpe_.index_select(0, batch.positions);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    hidden = hidden + layer.attention(layer.ln_1(hidden), nullptr, batch, kv_pool, static_cast<int>(i));
    hidden = hidden + layer.mlp(layer.ln_2(hidden));
  }
  return ln_f_(hidden);
}

torch::Tensor GPT2LMHeadModel::compute_logits(const torch::Tensor& hidden) const {
  RECORD_FUNCTION("modelbench::lm_head", std::vector<c10::IValue>());
  return lm_head_(hidden).to(torch::kFloat32);  // [num_rows, vocab_size]
}

}  // namespace modelbench
