// The model interface: ModelSpec (what a checkpoint's config says, in our
// names), the flat batch one forward runs over, the Model every
// architecture implements, and build_model, the factory from a spec and a
// map of Hugging Face-named weights.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <unordered_map>

#include "kernels/attention.h"
#include "runner/kv_pool.h"

namespace modelbench {

struct RopeScaling {
  std::string type = "none";  // none | linear | llama3
  double factor = 1.0;        // linear and llama3: positions (frequencies) scaled by 1 / factor
  double low_freq_factor = 1.0;   // llama3 only
  double high_freq_factor = 4.0;  // llama3 only
  int original_max_position_embeddings = 8192;  // llama3 only
};

struct ModelSpec {
  std::string architecture;  // llama | qwen2 | mistral | gpt2
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int intermediate_size = 0;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;  // unused by gpt2 (learned positions)
  RopeScaling rope_scaling;
  int max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry biases (qwen2)
  int sliding_window = 0;       // 0: full causal attention; else keys within this many positions

  // Throws InvalidArgument naming the first inconsistent field.
  void validate() const;
};

using WeightMap = std::unordered_map<std::string, torch::Tensor>;

// Which weights stay quantized. A tensor named in ggml_types is uint8
// [rows, row_bytes] of GGUF blocks of that ggml type (its Hugging Face
// shape is [rows, cols]); linear layers keep it in those blocks
// (kernels/quant_matrix.h), other uses dequantize it. quantize_to, a ggml
// type (Q8_0 or Q4_0; -1 for none), quantizes float linear weights at load.
struct QuantOptions {
  std::unordered_map<std::string, int> ggml_types;
  int quantize_to = -1;
};

// "none" -> -1, "q8_0" -> Q8_0, "q4_0" -> Q4_0; InvalidArgument (param "quantization") otherwise.
int quantization_from_name(const std::string& name);

// One step's tokens, flattened across sequences (prefill chunks and decodes
// mixed); the runner builds it from the scheduler output.
struct ForwardBatch {
  torch::Tensor input_ids;     // [num_tokens] int64, on the model's device
  torch::Tensor positions;     // [num_tokens] int64, on the model's device
  torch::Tensor slot_mapping;  // [num_tokens] int64, on the model's device: where each token's K/V go
  AttentionMetadata attention; // per sequence, on the CPU
};

class Model {
 public:
  virtual ~Model() = default;
  const ModelSpec& spec() const { return spec_; }

  // Runs every layer over the batch. Each layer writes the batch's new K/V
  // into kv_pool before its attention reads the pool, so a sequence may read
  // blocks that another sequence of the same step writes (shared prefixes).
  // Returns hidden states after the final norm: [num_tokens, hidden_size].
  virtual torch::Tensor forward(const ForwardBatch& batch, KVPool& kv_pool) const = 0;

  // hidden: [num_rows, hidden_size] -> logits [num_rows, vocab_size] float32.
  // The head runs in the weight dtype; the result is converted to float32.
  virtual torch::Tensor compute_logits(const torch::Tensor& hidden) const = 0;

 protected:
  explicit Model(ModelSpec spec) : spec_(std::move(spec)) {}
  ModelSpec spec_;
};

// "float32" | "bfloat16" | "float16"; throws InvalidArgument otherwise, and
// for float16 on the CPU (no fast kernels there), with `param` as its field.
torch::ScalarType model_dtype_from_name(const std::string& name, const torch::Device& device,
                                        const std::string& param = "dtype");
// "cpu", "cuda", "cuda:1", ...; throws InvalidArgument for anything else.
torch::Device model_device_from_name(const std::string& name);

// Builds the model for spec.architecture, copying its weights (Hugging Face
// names) to `device` in `dtype`; fused projections are concatenated once here.
// A missing tensor or one of the wrong shape throws InvalidArgument naming it
// and both shapes. Tensors the model does not use are ignored.
std::unique_ptr<Model> build_model(const ModelSpec& spec, const WeightMap& weights,
                                   torch::ScalarType dtype, torch::Device device,
                                   const QuantOptions& quant = QuantOptions());

}  // namespace modelbench
