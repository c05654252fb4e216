// ModelSpec validation, dtype and device names, and the build_model factory.
#include "models/model.h"

#include "core/config.h"
#include "kernels/quant_types.h"
#include "models/dtype.h"
#include "models/gpt2.h"
#include "models/layers.h"
#include "models/llama.h"

namespace modelbench {
namespace {

void check_positive(int value, const char* name) {
  if (value < 1)
    throw InvalidArgument(std::string("ModelSpec.") + name + " must be >= 1, got " + std::to_string(value), name);
}

}  // namespace

void ModelSpec::validate() const {
  if (architecture != "llama" && architecture != "qwen2" && architecture != "mistral" && architecture != "gpt2")
    throw InvalidArgument("ModelSpec.architecture must be one of llama, qwen2, mistral, gpt2, got '" +
                          architecture + "'",
                          "architecture");
  check_positive(vocab_size, "vocab_size");
  check_positive(hidden_size, "hidden_size");
  check_positive(num_layers, "num_layers");
  check_positive(num_heads, "num_heads");
  check_positive(num_kv_heads, "num_kv_heads");
  check_positive(head_dim, "head_dim");
  check_positive(intermediate_size, "intermediate_size");
  check_positive(max_position_embeddings, "max_position_embeddings");
  if (num_heads % num_kv_heads != 0)
    throw InvalidArgument("ModelSpec.num_heads (" + std::to_string(num_heads) +
                          ") must be a multiple of num_kv_heads (" + std::to_string(num_kv_heads) + ")",
                          "num_heads");
  if (head_dim % 2 != 0 && architecture != "gpt2")
    throw InvalidArgument("ModelSpec.head_dim must be even for rotary embeddings, got " + std::to_string(head_dim),
                          "head_dim");
  if (!(norm_eps > 0))
    throw InvalidArgument("ModelSpec.norm_eps must be > 0, got " + std::to_string(norm_eps), "norm_eps");
  if (!(rope_theta > 0))
    throw InvalidArgument("ModelSpec.rope_theta must be > 0, got " + std::to_string(rope_theta), "rope_theta");
  if (sliding_window < 0)
    throw InvalidArgument("ModelSpec.sliding_window must be >= 0, got " + std::to_string(sliding_window),
                          "sliding_window");
  const RopeScaling& rope = rope_scaling;
  if (rope.type != "none" && rope.type != "linear" && rope.type != "llama3")
    throw InvalidArgument("ModelSpec.rope_scaling.type must be one of none, linear, llama3, got '" + rope.type + "'",
                          "rope_scaling.type");
  if (rope.type != "none" && !(rope.factor > 0))
    throw InvalidArgument("ModelSpec.rope_scaling.factor must be > 0, got " + std::to_string(rope.factor),
                          "rope_scaling.factor");
  if (rope.type == "llama3" && !(rope.high_freq_factor > rope.low_freq_factor && rope.low_freq_factor > 0 &&
                                 rope.original_max_position_embeddings > 0))
    throw InvalidArgument("ModelSpec.rope_scaling needs high_freq_factor > low_freq_factor > 0 and "
                          "original_max_position_embeddings > 0 for llama3",
                          "rope_scaling");
  if (architecture == "gpt2") {
    if (num_kv_heads != num_heads || head_dim * num_heads != hidden_size)
      throw InvalidArgument("gpt2 needs num_kv_heads == num_heads and head_dim * num_heads == hidden_size");
  }
}

torch::ScalarType model_dtype_from_name(const std::string& name, const torch::Device& device,
                                        const std::string& param) {
  const torch::ScalarType dtype = dtype_from_name(name, param);
  if (dtype == torch::kFloat16 && device.is_cpu())
    throw InvalidArgument("dtype float16 is not supported on cpu; use float32 or bfloat16", param);
  return dtype;
}

torch::Device model_device_from_name(const std::string& name) {
  try {
    return torch::Device(name);
  } catch (const c10::Error&) {
    throw InvalidArgument("device must be like 'cpu' or 'cuda:0', got '" + name + "'", "device");
  }
}

int quantization_from_name(const std::string& name) {
  if (name == "none") return -1;
  if (name == "q8_0") return static_cast<int>(quant::GgmlType::Q8_0);
  if (name == "q4_0") return static_cast<int>(quant::GgmlType::Q4_0);
  throw InvalidArgument("quantization must be one of none, q8_0, q4_0, got '" + name + "'", "quantization");
}

std::unique_ptr<Model> build_model(const ModelSpec& spec, const WeightMap& weights, torch::ScalarType dtype,
                                   torch::Device device, const QuantOptions& quant) {
  spec.validate();
  if ((!quant.ggml_types.empty() || quant.quantize_to >= 0) && (dtype != torch::kFloat32 || !device.is_cpu()))
    throw InvalidArgument("quantized weights run on the CPU in float32 (dtype 'auto' or 'float32'); for dtype '" +
                              dtype_name(dtype) + "' on " + device.str() +
                              " load the weights dequantized (quantization None, and for a GGUF file an explicit dtype)",
                          "dtype");
  const WeightLoader loader(weights, dtype, device, quant);
  if (spec.architecture == "gpt2") return std::make_unique<GPT2LMHeadModel>(spec, loader);
  return std::make_unique<LlamaForCausalLM>(spec, loader);  // llama, qwen2, mistral
}

}  // namespace modelbench
