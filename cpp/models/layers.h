// Layers shared by every architecture: checked weight loading (with fused
// projections), linear, RMSNorm, LayerNorm, rotary embedding (default,
// linear and llama3 scaling), the SwiGLU and GELU-tanh MLPs, and the
// attention block that writes K/V into the paged pool and attends over it.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "kernels/quant_matrix.h"
#include "models/model.h"

namespace modelbench {

// Hands out checkpoint tensors by Hugging Face name, checked against the
// shape the model expects and converted to the model's dtype and device.
// A tensor already in that dtype and device is shared, not copied.
// Quantized tensors (QuantOptions) come as QuantMatrix from get_quant, or
// dequantized from get.
class WeightLoader {
 public:
  WeightLoader(const WeightMap& weights, torch::ScalarType dtype, torch::Device device,
               QuantOptions quant = QuantOptions());

  // Throws InvalidArgument naming the tensor when it is missing or when its
  // shape is not `shape` (both shapes in the message).
  torch::Tensor get(const std::string& name, std::vector<int64_t> shape) const;
  bool contains(const std::string& name) const { return weights_.count(name) > 0; }
  torch::ScalarType dtype() const { return dtype_; }
  torch::Device device() const { return device_; }

  // Whether `name` is stored in GGUF blocks.
  bool is_quantized(const std::string& name) const { return quant_.ggml_types.count(name) > 0; }
  // The ggml type float weights are quantized to at load, or -1.
  int quantize_to() const { return quant_.quantize_to; }
  // `name` ([rows, cols]) as a QuantMatrix: its GGUF blocks repacked, or,
  // for a float tensor, quantized to `ggml_type`. Same errors as get.
  QuantMatrix get_quant(const std::string& name, std::vector<int64_t> shape, int ggml_type = -1) const;

 private:
  const torch::Tensor& find(const std::string& name, const std::vector<int64_t>& shape) const;

  const WeightMap& weights_;
  torch::ScalarType dtype_;
  torch::Device device_;
  QuantOptions quant_;
};

struct Linear {
  torch::Tensor weight;  // [out_features, in_features]; undefined once packed
  torch::Tensor bias;    // [out_features], or undefined
  // float32 on the CPU: the weight in panels for the packed kernel
  // (linear_cpu.h), [ceil(out_features / 64), in_features, 64]; bfloat16 on
  // a CPU with AVX512-BF16: panels of input pairs (linear_bf16.h); else undefined.
  // A bf16 weight on a CPU with AMX keeps `weight` too: batches of at least
  // kMinAmxRows rows go to torch::linear (oneDNN's AMX matmul).
  torch::Tensor packed;
  // Quantized: the weight in parts along out_features (one, unless fused
  // projections came in different formats), computed by quant_linear.
  std::vector<QuantMatrix> quant;
  // float32 computed with bf16 products on AMX tiles (linear_amx.h), where
  // a model asked for them: the weight as pack_amx_weight made it.
  torch::Tensor amx;
  int64_t out_features = 0;

  // [num_tokens, in_features] -> [num_tokens, out_features]
  torch::Tensor operator()(const torch::Tensor& x) const;
};

// Rows from which a bf16 Linear on an AMX CPU uses ATen's matmul rather
// than the packed kernel: oneDNN's AMX matmul measured faster from there,
// the packed kernel below it (docs/performance.md).
constexpr int64_t kMinAmxRows = 16;

// A Linear over `weight` (and `bias`), packed for a CPU kernel when it is
// float32 (or bfloat16, where the build has that kernel) on the CPU;
// `weight` itself is then not kept.
Linear make_linear(torch::Tensor weight, torch::Tensor bias = torch::Tensor());

// A float32 Linear whose products are bf16 on AMX tiles (linear_amx.h) when
// `bf16_products` is set, this process can use the tiles and the shape fits
// them; otherwise make_linear's.
Linear make_linear_bf16_products(torch::Tensor weight, torch::Tensor bias, bool bf16_products);

// A Linear over quantized parts (stacked into one where their formats allow).
Linear make_quant_linear(std::vector<QuantMatrix> parts, torch::Tensor bias = torch::Tensor());

// A token embedding: float rows, or rows of a QuantMatrix dequantized as
// they are looked up (so a tied head and the embedding share one copy).
struct Embedding {
  torch::Tensor weight;  // [vocab_size, hidden_size], or undefined
  QuantMatrix quant;

  // ids: [n] int64 -> [n, hidden_size]
  torch::Tensor operator()(const torch::Tensor& ids) const;
  // The head over these rows: the same QuantMatrix, or the float weight (packed apart).
  Linear as_linear() const;
};

// The embedding `name`, kept quantized when stored so (or, quantizing a
// float checkpoint, as Q8_0: the head it may tie to stays at 8 bits).
Embedding load_embedding(const WeightLoader& loader, const std::string& name, int64_t vocab_size, int64_t hidden);

// A head ("lm_head.weight"), quantized as load_embedding would.
Linear load_head(const WeightLoader& loader, const std::string& name, int64_t vocab_size, int64_t hidden);

// Several checkpoint linears over the same input, stacked row-wise into one
// weight so that one matmul computes them all (q/k/v, gate/up). Reads
// "<prefix>.weight" ([out_features[i], in_features]) and, with has_bias,
// "<prefix>.bias" for each prefix. A float weight is made with
// make_linear_bf16_products(..., bf16_products).
Linear load_fused_linear(const WeightLoader& loader, const std::vector<std::string>& prefixes,
                         const std::vector<int64_t>& out_features, int64_t in_features, bool has_bias,
                         bool bf16_products = false);

// GPT-2's Conv1D stores its weight [in_features, out_features]; transposed
// once here so that every forward is a plain linear. Always has a bias.
Linear load_conv1d(const WeightLoader& loader, const std::string& prefix, int64_t in_features,
                   int64_t out_features);

struct RMSNorm {
  torch::Tensor weight;  // [hidden_size]
  double eps = 1e-5;

  // [num_tokens, hidden_size]; normalises in float32, then scales in the input dtype (as HF does).
  torch::Tensor operator()(const torch::Tensor& x) const;
  // residual += x (in place when the fused float32 CPU kernel takes it,
  // else residual is replaced by the sum), then the norm of the sum.
  torch::Tensor add_and_norm(torch::Tensor& residual, const torch::Tensor& x) const;
};

struct LayerNorm {
  torch::Tensor weight;  // [hidden_size]
  torch::Tensor bias;    // [hidden_size]
  double eps = 1e-5;

  torch::Tensor operator()(const torch::Tensor& x) const;
};

// cos and sin of each token's rotation angles, shared by all layers of a step.
struct RopeTables {
  torch::Tensor cos;  // [num_tokens, 1, head_dim]
  torch::Tensor sin;  // [num_tokens, 1, head_dim]
};

class RotaryEmbedding {
 public:
  // Inverse frequencies from spec.rope_theta, spec.head_dim and spec.rope_scaling.
  RotaryEmbedding(const ModelSpec& spec, torch::Device device);

  // positions: [num_tokens] int64. Angles in float32, tables cast to dtype.
  RopeTables tables(const torch::Tensor& positions, torch::ScalarType dtype) const;

 private:
  torch::Tensor inv_freq_;  // [head_dim / 2] float32
};

// x * cos + rotate_half(x) * sin over the halves of head_dim (the HF
// "rotate half" layout). x: [num_tokens, num_heads, head_dim].
torch::Tensor apply_rotary(const torch::Tensor& x, const RopeTables& rope);

// SwiGLU: down(silu(gate(x)) * up(x)), gate and up fused into one matmul.
struct GatedMLP {
  Linear gate_up;  // [2 * intermediate_size, hidden_size]: gate rows, then up rows
  Linear down;     // [hidden_size, intermediate_size]

  torch::Tensor operator()(const torch::Tensor& x) const;
};

// GPT-2's MLP: proj(gelu_tanh(fc(x))).
struct GeluMLP {
  Linear fc;    // [intermediate_size, hidden_size]
  Linear proj;  // [hidden_size, intermediate_size]

  torch::Tensor operator()(const torch::Tensor& x) const;
};

// Self-attention over the paged KV pool: fused q/k/v projection, optional
// rotary embedding, K/V written into the pool, paged attention, output
// projection.
struct AttentionBlock {
  Linear qkv;  // [(num_heads + 2 * num_kv_heads) * head_dim, hidden_size]: q rows, k rows, v rows
  Linear out;  // [hidden_size, num_heads * head_dim]
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double scale = 1.0;
  int64_t sliding_window = 0;

  // hidden: [num_tokens, hidden_size] -> [num_tokens, hidden_size]. rope:
  // nullptr for models with learned positions.
  torch::Tensor operator()(const torch::Tensor& hidden, const RopeTables* rope, const ForwardBatch& batch,
                           KVPool& kv_pool, int layer) const;
};

}  // namespace modelbench
