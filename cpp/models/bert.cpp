// BertModel: loading (optional "bert." prefix, q/k/v fused) and the packed
// forward with bidirectional attention per sequence.
#include "models/bert.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>

#include "core/config.h"

namespace modelbench {
namespace {

void check_positive(int value, const char* name) {
  if (value < 1)
    throw InvalidArgument(std::string("BertSpec.") + name + " must be >= 1, got " + std::to_string(value), name);
}

}  // namespace

void BertSpec::validate() const {
  check_positive(vocab_size, "vocab_size");
  check_positive(hidden_size, "hidden_size");
  check_positive(num_layers, "num_layers");
  check_positive(num_heads, "num_heads");
  check_positive(intermediate_size, "intermediate_size");
  check_positive(max_position_embeddings, "max_position_embeddings");
  check_positive(type_vocab_size, "type_vocab_size");
  if (hidden_size % num_heads != 0)
    throw InvalidArgument("BertSpec.hidden_size (" + std::to_string(hidden_size) +
                              ") must be a multiple of num_heads (" + std::to_string(num_heads) + ")",
                          "hidden_size");
  if (!(layer_norm_eps > 0))
    throw InvalidArgument("BertSpec.layer_norm_eps must be > 0, got " + std::to_string(layer_norm_eps),
                          "layer_norm_eps");
  if (hidden_act != "gelu" && hidden_act != "gelu_new" && hidden_act != "gelu_pytorch_tanh")
    throw InvalidArgument("BertSpec.hidden_act must be gelu, gelu_new or gelu_pytorch_tanh, got '" + hidden_act + "'",
                          "hidden_act");
}

Pooling pooling_from_name(const std::string& name) {
  if (name == "mean") return Pooling::kMean;
  if (name == "cls") return Pooling::kCls;
  throw InvalidArgument("pooling must be 'mean' or 'cls', got '" + name + "'", "pooling");
}

namespace {

// Consecutive sequences [begin, end) of `lens` grouped (see AttentionGroup).
std::vector<std::pair<int64_t, int64_t>> group_ranges(const std::vector<int64_t>& lens) {
  std::vector<std::pair<int64_t, int64_t>> out;
  const auto n = static_cast<int64_t>(lens.size());
  int64_t begin = 0;
  while (begin < n) {
    int64_t end = begin + 1, longest = lens[begin], real = lens[begin] * lens[begin];
    while (end < n) {
      const int64_t l = lens[end], m = std::max(longest, l), r = real + l * l;
      if ((end - begin + 1) * m * m - r > std::max(kGroupPaddingAllowance, r / 4)) break;
      longest = m, real = r, ++end;
    }
    out.emplace_back(begin, end);
    begin = end;
  }
  return out;
}

}  // namespace

PackedBatch pack_sequences(const std::vector<std::vector<int64_t>>& prompts, size_t begin, size_t end,
                           torch::Device device) {
  PackedBatch batch;
  int64_t total = 0;
  for (size_t i = begin; i < end; ++i) {
    const auto len = static_cast<int64_t>(prompts[i].size());
    batch.seq_lens.push_back(len);
    batch.max_len = std::max(batch.max_len, len);
    total += len;
  }
  auto ids = torch::empty({total}, torch::kLong);
  auto positions = torch::empty({total}, torch::kLong);
  int64_t* id_ptr = ids.data_ptr<int64_t>();
  int64_t* pos_ptr = positions.data_ptr<int64_t>();
  int64_t t = 0;
  for (size_t i = begin; i < end; ++i)
    for (size_t p = 0; p < prompts[i].size(); ++p, ++t) {
      id_ptr[t] = prompts[i][p];
      pos_ptr[t] = static_cast<int64_t>(p);
    }
  int64_t first_token = 0;
  for (const auto& [g0, g1] : group_ranges(batch.seq_lens)) {
    AttentionGroup group;
    group.first_token = first_token;
    group.num_seqs = g1 - g0;
    for (int64_t s = g0; s < g1; ++s) {
      group.num_tokens += batch.seq_lens[s];
      group.max_len = std::max(group.max_len, batch.seq_lens[s]);
    }
    if (group.num_tokens != group.num_seqs * group.max_len) {
      auto padded = torch::empty({group.num_tokens}, torch::kLong);
      auto mask = torch::zeros({group.num_seqs, 1, 1, group.max_len}, torch::kBool);
      int64_t* pad_ptr = padded.data_ptr<int64_t>();
      bool* mask_ptr = mask.data_ptr<bool>();
      int64_t u = 0;
      for (int64_t s = 0; s < group.num_seqs; ++s)
        for (int64_t p = 0; p < batch.seq_lens[g0 + s]; ++p, ++u) {
          pad_ptr[u] = s * group.max_len + p;
          mask_ptr[s * group.max_len + p] = true;
        }
      group.padded_index = padded.to(device);
      group.key_mask = mask.to(device);
    }
    first_token += group.num_tokens;
    batch.groups.push_back(std::move(group));
  }
  batch.input_ids = ids.to(device);
  batch.positions = positions.to(device);
  return batch;
}

BertModel::BertModel(const BertSpec& spec, const WeightMap& weights, torch::ScalarType dtype, torch::Device device,
                     bool bf16_products)
    : spec_(spec), dtype_(dtype), device_(device) {
  spec_.validate();
  gelu_tanh_ = spec_.hidden_act != "gelu";
  const WeightLoader loader(weights, dtype, device);
  const int64_t hidden = spec_.hidden_size;
  const std::string root = loader.contains("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  auto norm = [&](const std::string& prefix) {
    return LayerNorm{loader.get(prefix + ".weight", {hidden}), loader.get(prefix + ".bias", {hidden}),
                     spec_.layer_norm_eps};
  };
  auto linear = [&](const std::string& prefix, int64_t out, int64_t in) {
    return make_linear_bf16_products(loader.get(prefix + ".weight", {out, in}), loader.get(prefix + ".bias", {out}),
                                     bf16_products);
  };
  word_embeddings_ = loader.get(root + "embeddings.word_embeddings.weight", {spec_.vocab_size, hidden});
  // Every input is one segment (token type 0), as sentence-transformers
  // encodes it: that row is added to every position's once, here.
  const torch::Tensor types =
      loader.get(root + "embeddings.token_type_embeddings.weight", {spec_.type_vocab_size, hidden});
  position_embeddings_ =
      loader.get(root + "embeddings.position_embeddings.weight", {spec_.max_position_embeddings, hidden}) +
      types[0];
  embeddings_norm_ = norm(root + "embeddings.LayerNorm");
  layers_.reserve(static_cast<size_t>(spec_.num_layers));
  for (int i = 0; i < spec_.num_layers; ++i) {
    const std::string prefix = root + "encoder.layer." + std::to_string(i) + ".";
    Layer layer;
    layer.qkv = load_fused_linear(
        loader, {prefix + "attention.self.query", prefix + "attention.self.key", prefix + "attention.self.value"},
        {hidden, hidden, hidden}, hidden, true, bf16_products);
    layer.attn_out = linear(prefix + "attention.output.dense", hidden, hidden);
    layer.attn_norm = norm(prefix + "attention.output.LayerNorm");
    layer.intermediate = linear(prefix + "intermediate.dense", spec_.intermediate_size, hidden);
    layer.output = linear(prefix + "output.dense", hidden, spec_.intermediate_size);
    layer.output_norm = norm(prefix + "output.LayerNorm");
    bf16_products_ = layer.qkv.amx.defined();
    layers_.push_back(std::move(layer));
  }
}

torch::Tensor BertModel::attention(const torch::Tensor& qkv, const PackedBatch& batch) const {
  const int64_t hidden = spec_.hidden_size;
  const int64_t heads = spec_.num_heads;
  const int64_t head_dim = hidden / heads;
  const int64_t num_tokens = qkv.size(0);
  // A group's rows [n * len, 3 * hidden] -> q, k, v [n, heads, len, head_dim] ->
  // [n * len, hidden]; no mask when every input has len tokens (4-D: ATen's
  // flash kernel for the CPU takes it, rather than the math path).
  auto attend = [&](const torch::Tensor& rows, const AttentionGroup& g) {
    const auto parts = rows.view({g.num_seqs, g.max_len, 3, heads, head_dim}).permute({2, 0, 3, 1, 4}).unbind(0);
    const torch::Tensor out = g.key_mask.defined()
                                  ? at::scaled_dot_product_attention(parts[0], parts[1], parts[2], g.key_mask)
                                  : at::scaled_dot_product_attention(parts[0], parts[1], parts[2]);
    return out.transpose(1, 2).reshape({g.num_seqs * g.max_len, hidden});
  };
  if (batch.groups.size() == 1 && !batch.groups[0].padded_index.defined())
    return attend(qkv, batch.groups[0]);  // one length (one input, or several alike): no copy
  torch::Tensor context = torch::empty({num_tokens, hidden}, qkv.options());
  for (const AttentionGroup& g : batch.groups) {
    const torch::Tensor rows = qkv.narrow(0, g.first_token, g.num_tokens);
    torch::Tensor out = context.narrow(0, g.first_token, g.num_tokens);
    if (!g.padded_index.defined()) {
      out.copy_(attend(rows, g));
      continue;
    }
    // Lengths differ: the group's rows scattered into [num_seqs, max_len],
    // padded keys masked out, and gathered back.
    torch::Tensor padded = torch::zeros({g.num_seqs * g.max_len, 3 * hidden}, qkv.options());
    padded.index_copy_(0, g.padded_index, rows);
    out.copy_(attend(padded, g).index_select(0, g.padded_index));
  }
  return context;
}

torch::Tensor BertModel::forward(const PackedBatch& batch) const {
  RECORD_FUNCTION("modelbench::bert_forward", std::vector<c10::IValue>());
  torch::Tensor hidden = embeddings_norm_(word_embeddings_.index_select(0, batch.input_ids) +
                                          position_embeddings_.index_select(0, batch.positions));
  for (const Layer& layer : layers_) {
    const torch::Tensor context = attention(layer.qkv(hidden), batch);
    hidden = layer.attn_norm(layer.attn_out(context) + hidden);
    torch::Tensor inner = layer.intermediate(hidden);
    inner = gelu_tanh_ ? torch::gelu(inner, "tanh") : torch::gelu(inner);
    hidden = layer.output_norm(layer.output(inner) + hidden);
  }
  return hidden;
}

}  // namespace modelbench
