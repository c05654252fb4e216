// LlamaForCausalLM (also Qwen2 and Mistral): loading with fused q/k/v and
// gate/up projections, and the forward over a flat paged batch.
#include "models/llama.h"

#include <ATen/record_function.h>

#include <cmath>
#include <string>


namespace modelbench {

LlamaForCausalLM::LlamaForCausalLM(const ModelSpec& spec, const WeightLoader& loader)
    : Model(spec), rotary_(spec, loader.device()) {
  const int64_t hidden = spec.hidden_size;
  const int64_t q_size = static_cast<int64_t>(spec.num_heads) * spec.head_dim;
  const int64_t kv_size = static_cast<int64_t>(spec.num_kv_heads) * spec.head_dim;
  embed_tokens_ = load_embedding(loader, "model.embed_tokens.weight", spec.vocab_size, hidden);
  layers_.reserve(spec.num_layers);
  for (int i = 0; i < spec.num_layers; ++i) {
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    Layer layer;
    layer.input_norm = {loader.get(prefix + "input_layernorm.weight", {hidden}), spec.norm_eps};
    AttentionBlock& attn = layer.attention;
    attn.qkv = load_fused_linear(
        loader, {prefix + "self_attn.q_proj", prefix + "self_attn.k_proj", prefix + "self_attn.v_proj"},
        {q_size, kv_size, kv_size}, hidden, spec.attention_bias);
    attn.out = load_fused_linear(loader, {prefix + "self_attn.o_proj"}, {hidden}, q_size, false);
    attn.num_heads = spec.num_heads;
    attn.num_kv_heads = spec.num_kv_heads;
    attn.head_dim = spec.head_dim;
    attn.scale = 1.0 / std::sqrt(static_cast<double>(spec.head_dim));
    attn.sliding_window = spec.sliding_window;
    layer.post_attention_norm = {loader.get(prefix + "post_attention_layernorm.weight", {hidden}),
                                 spec.norm_eps};
    layer.mlp.gate_up = load_fused_linear(loader, {prefix + "mlp.gate_proj", prefix + "mlp.up_proj"},
                                          {spec.intermediate_size, spec.intermediate_size}, hidden, false);
    layer.mlp.down = load_fused_linear(loader, {prefix + "mlp.down_proj"}, {hidden}, spec.intermediate_size, false);
    layers_.push_back(std::move(layer));
  }
  norm_ = {loader.get("model.norm.weight", {hidden}), spec.norm_eps};
  // Tied: a quantized embedding is the head's weight too; the float packed
  // kernel gets its own copy (the lookup needs rows of the embedding).
  lm_head_ = spec.tie_word_embeddings ? embed_tokens_.as_linear()
                                      : load_head(loader, "lm_head.weight", spec.vocab_size, hidden);
}

torch::Tensor LlamaForCausalLM::forward(const ForwardBatch& batch, KVPool& kv_pool) const {
  // residual: the stream each block adds to; x: its normed input. Each add
  // and the norm after it are one op (RMSNorm::add_and_norm).
  torch::Tensor residual = embed_tokens_(batch.input_ids);  // [num_tokens, hidden_size]
  const RopeTables rope = rotary_.tables(batch.positions, residual.scalar_type());
  torch::Tensor x = layers_.empty() ? residual : layers_[0].input_norm(residual);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    const torch::Tensor attn = layer.attention(x, &rope, batch, kv_pool, static_cast<int>(i));
    x = layer.post_attention_norm.add_and_norm(residual, attn);
    const RMSNorm& next_norm = i + 1 < layers_.size() ? layers_[i + 1].input_norm : norm_;
    x = next_norm.add_and_norm(residual, layer.mlp(x));
  }
  return layers_.empty() ? norm_(residual) : x;
}

torch::Tensor LlamaForCausalLM::compute_logits(const torch::Tensor& hidden) const {
  RECORD_FUNCTION("modelbench::lm_head", std::vector<c10::IValue>());
  return lm_head_(hidden).to(torch::kFloat32);  // [num_rows, vocab_size]
}

}  // namespace modelbench
