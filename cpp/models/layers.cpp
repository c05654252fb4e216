// Shared layers: weight loading with shape checks, norms, rotary embedding,
// MLPs and the paged attention block.
#include "models/layers.h"

#include <ATen/record_function.h>

#include <cmath>
#include <sstream>

#include "kernels/attention.h"
#include "core/config.h"
#include "kernels/fused_cpu.h"
#include "kernels/linear_amx.h"
#include "kernels/linear_bf16.h"
#include "kernels/linear_cpu.h"
#include "kernels/quant_linear.h"
#include "kernels/quant_types.h"

namespace modelbench {
namespace {

std::string shape_string(at::IntArrayRef shape) {
  std::ostringstream out;
  out << shape;
  return out.str();
}

}  // namespace

WeightLoader::WeightLoader(const WeightMap& weights, torch::ScalarType dtype, torch::Device device,
                           QuantOptions quant)
    : weights_(weights), dtype_(dtype), device_(device), quant_(std::move(quant)) {}

const torch::Tensor& WeightLoader::find(const std::string& name, const std::vector<int64_t>& shape) const {
  auto it = weights_.find(name);
  if (it == weights_.end())
    throw InvalidArgument("checkpoint has no tensor '" + name + "' (expected shape " + shape_string(shape) + ")",
                          "weights");
  const torch::Tensor& tensor = it->second;
  // A quantized tensor's bytes per row depend on its type: repack_ggml checks them.
  const bool rows_only = is_quantized(name) && shape.size() == 2;
  if (!tensor.defined() || (rows_only ? tensor.dim() != 2 || tensor.size(0) != shape[0]
                                      : tensor.sizes() != at::IntArrayRef(shape)))
    throw InvalidArgument("tensor '" + name + "' has shape " +
                          (tensor.defined() ? shape_string(tensor.sizes()) : std::string("(undefined)")) +
                          ", expected " + shape_string(shape), "weights");
  return tensor;
}

torch::Tensor WeightLoader::get(const std::string& name, std::vector<int64_t> shape) const {
  const torch::Tensor& tensor = find(name, shape);
  if (is_quantized(name)) return dequantize(get_quant(name, shape)).to(device_, dtype_);
  return tensor.to(device_, dtype_).contiguous();
}

QuantMatrix WeightLoader::get_quant(const std::string& name, std::vector<int64_t> shape, int ggml_type) const {
  const torch::Tensor& tensor = find(name, shape);
  TORCH_INTERNAL_ASSERT(shape.size() == 2, "get_quant: a matrix");
  if (is_quantized(name)) return repack_ggml(tensor, quant_.ggml_types.at(name), shape[1], name);
  TORCH_INTERNAL_ASSERT(ggml_type >= 0, "get_quant: a float tensor needs the type to quantize to");
  return quantize_matrix(tensor, ggml_type);
}

Linear make_linear(torch::Tensor weight, torch::Tensor bias) {
  Linear linear;
  linear.out_features = weight.size(0);
  linear.bias = std::move(bias);
  if (weight.device().is_cpu() && weight.scalar_type() == torch::kFloat32)
    linear.packed = pack_linear_weight(weight);
  else if (weight.device().is_cpu() && weight.scalar_type() == torch::kBFloat16 && bf16_linear_supported()) {
    linear.packed = pack_linear_weight_bf16(weight);
    // With AMX, ATen's bf16 matmul (oneDNN) beats the packed kernel from
    // kMinAmxRows rows on, so the plain weight is kept too (twice the bf16
    // weight memory, on such CPUs alone).
    if (bf16_amx_supported()) linear.weight = std::move(weight);
  } else
    linear.weight = std::move(weight);
  return linear;
}

Linear make_linear_bf16_products(torch::Tensor weight, torch::Tensor bias, bool bf16_products) {
  if (!bf16_products || !weight.device().is_cpu() || weight.scalar_type() != torch::kFloat32 ||
      !amx_linear_fits(weight.size(0), weight.size(1)) || !amx_linear_supported())
    return make_linear(std::move(weight), std::move(bias));
  Linear linear;
  linear.out_features = weight.size(0);
  linear.amx = pack_amx_weight(weight);
  linear.bias = std::move(bias);
  return linear;
}

Linear make_quant_linear(std::vector<QuantMatrix> parts, torch::Tensor bias) {
  Linear linear;
  for (const QuantMatrix& part : parts) linear.out_features += part.rows;
  linear.quant = can_stack(parts) ? std::vector<QuantMatrix>{stack_rows(parts)} : std::move(parts);
  linear.bias = std::move(bias);
  return linear;
}

torch::Tensor Embedding::operator()(const torch::Tensor& ids) const {
  return quant.defined() ? dequantize_rows(quant, ids) : weight.index_select(0, ids);
}

Linear Embedding::as_linear() const { return quant.defined() ? make_quant_linear({quant}) : make_linear(weight); }

namespace {

// Whether a float matrix with `cols` columns is quantized at load.
bool quantizes(const WeightLoader& loader, int64_t cols) { return loader.quantize_to() >= 0 && cols % 32 == 0; }

}  // namespace

Embedding load_embedding(const WeightLoader& loader, const std::string& name, int64_t vocab_size, int64_t hidden) {
  Embedding embedding;
  if (loader.is_quantized(name) || quantizes(loader, hidden))
    embedding.quant = loader.get_quant(name, {vocab_size, hidden}, static_cast<int>(quant::GgmlType::Q8_0));
  else
    embedding.weight = loader.get(name, {vocab_size, hidden});
  return embedding;
}

Linear load_head(const WeightLoader& loader, const std::string& name, int64_t vocab_size, int64_t hidden) {
  if (loader.is_quantized(name) || quantizes(loader, hidden))
    return make_quant_linear({loader.get_quant(name, {vocab_size, hidden}, static_cast<int>(quant::GgmlType::Q8_0))});
  return make_linear(loader.get(name, {vocab_size, hidden}));
}

torch::Tensor Linear::operator()(const torch::Tensor& x) const {
  if (!quant.empty()) {
    const torch::Tensor rows = x.reshape({-1, x.size(-1)}).to(torch::kFloat32);
    torch::Tensor out = torch::empty({rows.size(0), out_features}, torch::kFloat32);
    quant_linear_parts_into(rows, quant, out, active_quant_isa());
    if (bias.defined()) out.add_(bias);
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = out_features;
    return out.view(shape);
  }
  if (amx.defined()) {
    const torch::Tensor rows = x.reshape({-1, x.size(-1)}).contiguous();
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = out_features;
    return amx_linear(rows, amx, out_features, bias).view(shape);
  }
  if (packed.defined()) {
    // Any leading shape: the kernel takes rows.
    const torch::Tensor rows = x.reshape({-1, x.size(-1)});
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = out_features;
    if (packed.scalar_type() == torch::kBFloat16) {
      if (weight.defined() && rows.size(0) >= kMinAmxRows) return torch::linear(x, weight, bias);
      return packed_linear_bf16(rows, packed, out_features, bias).view(shape);
    }
    return packed_linear(rows, packed, out_features, bias).view(shape);
  }
  return torch::linear(x, weight, bias);
}

Linear load_fused_linear(const WeightLoader& loader, const std::vector<std::string>& prefixes,
                         const std::vector<int64_t>& out_features, int64_t in_features, bool has_bias,
                         bool bf16_products) {
  TORCH_INTERNAL_ASSERT(prefixes.size() == out_features.size(), "one output size per fused projection");
  bool stored_quantized = false, all_quantized = true;
  for (const std::string& prefix : prefixes) {
    stored_quantized |= loader.is_quantized(prefix + ".weight");
    all_quantized &= loader.is_quantized(prefix + ".weight");
  }
  // Kept quantized: blocks from the file (a float part among them is
  // dequantized with the rest, unless it is quantized at load too), or a
  // float checkpoint quantized at load.
  if ((stored_quantized && (all_quantized || quantizes(loader, in_features))) ||
      (!stored_quantized && quantizes(loader, in_features))) {
    std::vector<QuantMatrix> parts;
    torch::Tensor bias;
    std::vector<torch::Tensor> biases;
    for (size_t i = 0; i < prefixes.size(); ++i) {
      parts.push_back(loader.get_quant(prefixes[i] + ".weight", {out_features[i], in_features}, loader.quantize_to()));
      if (has_bias) biases.push_back(loader.get(prefixes[i] + ".bias", {out_features[i]}));
    }
    if (has_bias) bias = torch::cat(biases, 0);
    return make_quant_linear(std::move(parts), std::move(bias));
  }
  std::vector<torch::Tensor> weights, biases;
  for (size_t i = 0; i < prefixes.size(); ++i) {
    weights.push_back(loader.get(prefixes[i] + ".weight", {out_features[i], in_features}));
    if (has_bias) biases.push_back(loader.get(prefixes[i] + ".bias", {out_features[i]}));
  }
  torch::Tensor weight = weights.size() == 1 ? weights[0] : torch::cat(weights, 0);  // [sum(out_features), in_features]
  torch::Tensor bias;
  if (has_bias) bias = biases.size() == 1 ? biases[0] : torch::cat(biases, 0);  // [sum(out_features)]
  return make_linear_bf16_products(std::move(weight), std::move(bias), bf16_products);
}

Linear load_conv1d(const WeightLoader& loader, const std::string& prefix, int64_t in_features,
                   int64_t out_features) {
  // [in_features, out_features] -> [out_features, in_features], made contiguous once.
  if (quantizes(loader, in_features))
    return make_quant_linear({quantize_matrix(loader.get(prefix + ".weight", {in_features, out_features}).t(),
                                              loader.quantize_to())},
                             loader.get(prefix + ".bias", {out_features}));
  return make_linear(loader.get(prefix + ".weight", {in_features, out_features}).t().contiguous(),
                     loader.get(prefix + ".bias", {out_features}));  // bias: [out_features]
}

torch::Tensor RMSNorm::operator()(const torch::Tensor& x) const {
  // The fused kernel records its own modelbench::rms_norm scope (one scope per norm, not two nested).
  if (x.dim() == 2 && fused_cpu_supported(x) && weight.scalar_type() == x.scalar_type())
    return rms_norm_cpu(x, weight, eps);
  RECORD_FUNCTION("modelbench::rms_norm", std::vector<c10::IValue>());
  // Same order of operations as transformers' LlamaRMSNorm, so that fp32
  // results match it to rounding and bf16 results round where it does.
  const torch::Tensor x32 = x.to(torch::kFloat32);                       // [num_tokens, hidden_size]
  const torch::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);  // [num_tokens, 1]
  return weight * (x32 * torch::rsqrt(variance + eps)).to(x.scalar_type());
}

torch::Tensor RMSNorm::add_and_norm(torch::Tensor& residual, const torch::Tensor& x) const {
  if (x.dim() == 2 && fused_cpu_supported(x) && weight.scalar_type() == x.scalar_type() &&
      residual.is_contiguous() && residual.scalar_type() == x.scalar_type() && residual.device().is_cpu())
    return add_rms_norm_cpu(residual, x, weight, eps);
  residual = residual + x;
  return (*this)(residual);
}

torch::Tensor LayerNorm::operator()(const torch::Tensor& x) const {
  return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps);
}

RotaryEmbedding::RotaryEmbedding(const ModelSpec& spec, torch::Device device) {
  const int64_t dim = spec.head_dim;
  // As transformers computes it: base ** (arange(0, dim, 2) / dim) in float32.
  const auto exponents = torch::arange(0, dim, 2, torch::kLong).to(torch::kFloat32) / static_cast<double>(dim);
  torch::Tensor inv_freq = 1.0 / torch::pow(spec.rope_theta, exponents);  // [head_dim / 2]
  const RopeScaling& scaling = spec.rope_scaling;
  if (scaling.type == "linear") {
    inv_freq = inv_freq / scaling.factor;
  } else if (scaling.type == "llama3") {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept,
    // the band between interpolated smoothly.
    const double old_context = scaling.original_max_position_embeddings;
    const double low_freq_wavelen = old_context / scaling.low_freq_factor;
    const double high_freq_wavelen = old_context / scaling.high_freq_factor;
    const torch::Tensor wavelen = 2 * M_PI / inv_freq;
    torch::Tensor scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq);
    const torch::Tensor smooth = (old_context / wavelen - scaling.low_freq_factor) /
                                 (scaling.high_freq_factor - scaling.low_freq_factor);
    const torch::Tensor smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled;
    const torch::Tensor is_medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
    inv_freq = torch::where(is_medium, smoothed, scaled);
  }
  inv_freq_ = inv_freq.to(device);
}

RopeTables RotaryEmbedding::tables(const torch::Tensor& positions, torch::ScalarType dtype) const {
  const torch::Tensor freqs = positions.to(torch::kFloat32).unsqueeze(1) * inv_freq_.unsqueeze(0);  // [num_tokens, head_dim / 2]
  const torch::Tensor angles = torch::cat({freqs, freqs}, -1).unsqueeze(1);  // [num_tokens, 1, head_dim]
  return {angles.cos().to(dtype), angles.sin().to(dtype)};
}

torch::Tensor apply_rotary(const torch::Tensor& x, const RopeTables& rope) {
  RECORD_FUNCTION("modelbench::rotary", std::vector<c10::IValue>());
  const int64_t half = x.size(-1) / 2;
  const auto x1 = x.narrow(-1, 0, half);     // [num_tokens, num_heads, head_dim / 2]
  const auto x2 = x.narrow(-1, half, half);  // [num_tokens, num_heads, head_dim / 2]
  const auto rotated = torch::cat({-x2, x1}, -1);  // [num_tokens, num_heads, head_dim]
  return x * rope.cos + rotated * rope.sin;
}

torch::Tensor GatedMLP::operator()(const torch::Tensor& x) const {
  const auto gate_up_out = gate_up(x);  // [num_tokens, 2 * intermediate_size]
  if (gate_up_out.dim() == 2 && fused_cpu_supported(gate_up_out)) return down(silu_mul_cpu(gate_up_out));
  const auto halves = gate_up_out.chunk(2, -1);
  return down(torch::silu(halves[0]) * halves[1]);
}

torch::Tensor GeluMLP::operator()(const torch::Tensor& x) const {
  // GPT-2's gelu_new is the tanh approximation.
  return proj(torch::gelu(fc(x), "tanh"));
}

torch::Tensor AttentionBlock::operator()(const torch::Tensor& hidden, const RopeTables* rope,
                                         const ForwardBatch& batch, KVPool& kv_pool, int layer) const {
  const int64_t num_tokens = hidden.size(0);
  const auto qkv_out = qkv(hidden);  // [num_tokens, (num_heads + 2 * num_kv_heads) * head_dim]
  const auto parts = qkv_out.split_with_sizes(
      {num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim}, -1);
  torch::Tensor q = parts[0].view({num_tokens, num_heads, head_dim});     // [num_tokens, num_heads, head_dim]
  torch::Tensor k = parts[1].view({num_tokens, num_kv_heads, head_dim});  // [num_tokens, num_kv_heads, head_dim]
  const torch::Tensor v = parts[2].view({num_tokens, num_kv_heads, head_dim});
  if (rope != nullptr && fused_cpu_supported(qkv_out) && rope->cos.scalar_type() == qkv_out.scalar_type()) {
    // q and k heads are adjacent in each row: rotated in place, in one pass.
    torch::Tensor qk = qkv_out.narrow(-1, 0, (num_heads + num_kv_heads) * head_dim)
                           .view({num_tokens, num_heads + num_kv_heads, head_dim});
    rotary_cpu_(qk, rope->cos, rope->sin);
  } else if (rope != nullptr) {
    q = apply_rotary(q, *rope);
    k = apply_rotary(k, *rope);
  }
  // Before attention: this step's queries read these very slots.
  torch::Tensor attn;  // [num_tokens, num_heads, head_dim]
  {
    RECORD_FUNCTION("modelbench::kv_write", std::vector<c10::IValue>());
    kv_pool.write(layer, batch.slot_mapping, k, v);
  }
  {
    RECORD_FUNCTION("modelbench::paged_attention", std::vector<c10::IValue>());
    attn = paged_attention(q, kv_pool.key(layer), kv_pool.value(layer), batch.attention, scale, sliding_window,
                           kv_pool.row_scales(layer));
  }
  return out(attn.view({num_tokens, num_heads * head_dim}));
}

}  // namespace modelbench
