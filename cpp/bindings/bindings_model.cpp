// Bindings of the model part of modelbench._core: ModelSpec and the
// TransformerRunner (a ModelRunner the Engine accepts); in
// modelbench._core.testing, the attention and linear kernels and the
// runner's logit recording. Conversions and docstrings only.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <torch/extension.h>

#include "kernels/attention.h"
#include "models/dtype.h"
#include "kernels/linear_bf16.h"
#include "kernels/linear_cpu.h"
#include "models/model.h"
#include "runner/tensor_model.h"
#include "runner/transformer_runner.h"

namespace py = pybind11;
using namespace modelbench;

namespace {

AttentionMetadata make_metadata(torch::Tensor query_start_loc, torch::Tensor context_lens,
                                torch::Tensor block_tables) {
  return {std::move(query_start_loc), std::move(context_lens), std::move(block_tables)};
}


}  // namespace

void bind_model(py::module_& m, py::module_& testing) {
  py::class_<RopeScaling>(m, "RopeScaling", "Rotary embedding scaling: type none | linear | llama3.")
      .def(py::init<>())
      .def_readwrite("type", &RopeScaling::type)
      .def_readwrite("factor", &RopeScaling::factor)
      .def_readwrite("low_freq_factor", &RopeScaling::low_freq_factor)
      .def_readwrite("high_freq_factor", &RopeScaling::high_freq_factor)
      .def_readwrite("original_max_position_embeddings", &RopeScaling::original_max_position_embeddings);

  py::class_<ModelSpec>(m, "ModelSpec",
                        "A model's shape in modelbench's names; build one from a Hugging Face config "
                        "with modelbench.models.spec.model_spec_from_hf_config.")
      .def(py::init<>())
      .def_readwrite("architecture", &ModelSpec::architecture, "llama | qwen2 | mistral | gpt2")
      .def_readwrite("vocab_size", &ModelSpec::vocab_size)
      .def_readwrite("hidden_size", &ModelSpec::hidden_size)
      .def_readwrite("num_layers", &ModelSpec::num_layers)
      .def_readwrite("num_heads", &ModelSpec::num_heads)
      .def_readwrite("num_kv_heads", &ModelSpec::num_kv_heads)
      .def_readwrite("head_dim", &ModelSpec::head_dim)
      .def_readwrite("intermediate_size", &ModelSpec::intermediate_size)
      .def_readwrite("norm_eps", &ModelSpec::norm_eps)
      .def_readwrite("rope_theta", &ModelSpec::rope_theta)
      .def_readwrite("rope_scaling", &ModelSpec::rope_scaling)
      .def_readwrite("max_position_embeddings", &ModelSpec::max_position_embeddings)
      .def_readwrite("tie_word_embeddings", &ModelSpec::tie_word_embeddings)
      .def_readwrite("attention_bias", &ModelSpec::attention_bias, "q/k/v projections carry biases")
      .def_readwrite("sliding_window", &ModelSpec::sliding_window, "0: full causal attention")
      .def("validate", &ModelSpec::validate,
           "Raise InvalidArgument (a ValueError) naming the first inconsistent field; its `param` is the field.")
      .def("__repr__", [](const ModelSpec& s) {
        return "ModelSpec(architecture='" + s.architecture + "', num_layers=" + std::to_string(s.num_layers) +
               ", hidden_size=" + std::to_string(s.hidden_size) + ", num_heads=" + std::to_string(s.num_heads) +
               ", num_kv_heads=" + std::to_string(s.num_kv_heads) + ", vocab_size=" + std::to_string(s.vocab_size) +
               ")";
      });

  py::class_<DynamicBatcherConfig>(m, "DynamicBatcherConfig", "A tensor model's dynamic batching, as Triton's.")
      .def(py::init<>())
      .def_readwrite("max_batch_size", &DynamicBatcherConfig::max_batch_size)
      .def_readwrite("preferred_batch_sizes", &DynamicBatcherConfig::preferred_batch_sizes)
      .def_readwrite("max_queue_delay_us", &DynamicBatcherConfig::max_queue_delay_us)
      .def_readwrite("max_queue_size", &DynamicBatcherConfig::max_queue_size)
      .def_readwrite("enabled", &DynamicBatcherConfig::enabled, "False: each request runs alone (no batching).")
      .def("validate", &DynamicBatcherConfig::validate);
  py::class_<DynamicBatcherStats>(m, "DynamicBatcherStats")
      .def_readonly("num_requests", &DynamicBatcherStats::num_requests)
      .def_readonly("num_rejected", &DynamicBatcherStats::num_rejected)
      .def_readonly("num_timed_out", &DynamicBatcherStats::num_timed_out)
      .def_readonly("num_failed", &DynamicBatcherStats::num_failed)
      .def_readonly("num_batches", &DynamicBatcherStats::num_batches)
      .def_readonly("num_batched_rows", &DynamicBatcherStats::num_batched_rows)
      .def_readonly("queue_size", &DynamicBatcherStats::queue_size);
  py::class_<TensorResult>(m, "TensorResult", "A tensor model request's outputs, or why it has none.")
      .def_readonly("ticket", &TensorResult::ticket)
      .def_readonly("outputs", &TensorResult::outputs)
      .def_readonly("error", &TensorResult::error)
      .def_readonly("timed_out", &TensorResult::timed_out);
  py::class_<TensorModel, std::shared_ptr<TensorModel>>(
      m, "TensorModel", "A TorchScript module served through the C++ dynamic batcher.")
      .def(py::init<const std::string&, int, int, const std::string&, DynamicBatcherConfig>(), py::arg("path"),
           py::arg("num_inputs"), py::arg("num_outputs"), py::arg("device") = "cpu",
           py::arg("batching") = DynamicBatcherConfig(), py::call_guard<py::gil_scoped_release>())
      .def("submit", &TensorModel::submit, py::arg("inputs"), py::arg("timeout_s") = 0.0,
           "Queue a request (one tensor per input, each [rows, ...]); its ticket, or -1 when the queue is full.")
      .def("wait_results", &TensorModel::wait_results, py::arg("timeout_s") = -1.0,
           py::call_guard<py::gil_scoped_release>(), "Wait for results and return all that are ready.")
      .def("run_one", &TensorModel::run_one, py::arg("inputs"), py::call_guard<py::gil_scoped_release>(),
           "Run inputs straight through the module, unbatched.")
      .def("stats", &TensorModel::stats)
      .def_property_readonly("batching", &TensorModel::batching)
      .def("shutdown", &TensorModel::shutdown, py::call_guard<py::gil_scoped_release>());

  py::class_<RecordedLogits>(testing, "RecordedLogits", "One sequence's logits from the last step.")
      .def_readonly("request_id", &RecordedLogits::request_id)
      .def_readonly("first_position", &RecordedLogits::first_position, "Position of row 0.")
      .def_readonly("logits", &RecordedLogits::logits, "[num_scheduled_tokens, vocab_size] float32");

  py::class_<TransformerRunner, ModelRunner, std::shared_ptr<TransformerRunner>>(
      m, "TransformerRunner",
      "The model runner over LibTorch: paged KV pools, batched forward, sampler. Pass it to Engine.")
      .def(py::init([](const ModelSpec& spec, const WeightMap& weights, const EngineConfig& config,
                       const std::string& dtype, const std::string& device, const std::string& kv_cache_dtype,
                       const std::unordered_map<std::string, int>& quant_types, const std::string& quantization) {
             QuantOptions quant;
             quant.ggml_types = quant_types;
             quant.quantize_to = quantization_from_name(quantization);
             return std::make_shared<TransformerRunner>(spec, weights, config, dtype, device, kv_cache_dtype, quant);
           }),
           py::arg("spec"), py::arg("weights"), py::arg("config"), py::arg("dtype") = "float32",
           py::arg("device") = "cpu", py::arg("kv_cache_dtype") = "auto",
           py::arg("quant_types") = std::unordered_map<std::string, int>(), py::arg("quantization") = "none",
           py::call_guard<py::gil_scoped_release>(),
           "weights: Hugging Face name -> tensor. kv_cache_dtype: 'auto' (the model's dtype), or 'bfloat16' "
           "for a float32 model. quant_types: name -> ggml type id for weights given as uint8 [rows, row_bytes] "
           "GGUF blocks, kept quantized. quantization: 'none', 'q8_0' or 'q4_0' quantizes float linear weights "
           "at load. Raises ValueError naming a missing or misshapen tensor, or a bad dtype.")
      .def(
          "set_draft_model",
          [](TransformerRunner& runner, const ModelSpec& spec, const WeightMap& weights,
             const std::unordered_map<std::string, int>& quant_types) {
            QuantOptions quant;
            quant.ggml_types = quant_types;
            runner.set_draft_model(spec, weights, quant);
          },
          py::arg("spec"), py::arg("weights"), py::arg("quant_types") = std::unordered_map<std::string, int>(),
          py::call_guard<py::gil_scoped_release>(),
          "Speculative decoding's draft model (SpeculativeConfig.draft_model): built in this runner's dtype "
          "and device with a KV pool in its block layout. Raises ValueError when its vocabulary differs.")
      .def_property_readonly("has_draft_model", &TransformerRunner::has_draft_model)
      .def_property_readonly("spec", &TransformerRunner::spec)
      .def_property_readonly("dtype", [](const TransformerRunner& r) { return dtype_name(r.dtype()); },
                             "float32 | bfloat16 | float16")
      .def_property_readonly("kv_cache_dtype", [](const TransformerRunner& r) { return dtype_name(r.kv_cache_dtype()); },
                             "the KV pools' dtype: float32 | bfloat16 | float16")
      .def_property_readonly("device", [](const TransformerRunner& r) { return r.device().str(); })
      .def_property_readonly("num_kv_blocks", [](const TransformerRunner& r) { return r.kv_pool().num_blocks(); })
      .def_property_readonly("kv_cache_bytes", [](const TransformerRunner& r) { return r.kv_pool().num_bytes(); },
                             "bytes of the K and V pools, all layers")
      .def("embed", &TransformerRunner::embed, py::arg("prompts"), py::call_guard<py::gil_scoped_release>(),
           "Mean-pooled, L2-normalized final hidden states of each prompt (lists of token ids): "
           "[num_prompts, hidden_size] float32. Runs over a scratch KV pool, so it may run while the "
           "engine steps, in groups of at most max_num_batched_tokens tokens. Raises ValueError for an "
           "empty prompt, an id outside the vocabulary, or a prompt longer than max_model_len.");

  testing.def("set_record_logits", &TransformerRunner::set_record_logits, py::arg("runner"), py::arg("record"),
              "Keep every scheduled token's logits of the runner's last step (slower).");
  testing.def("recorded_logits", &TransformerRunner::recorded_logits, py::arg("runner"),
              "list[RecordedLogits] of the runner's last step, when set_record_logits is on.");
  testing.def("paged_attention_cpu",
        [](const torch::Tensor& query, const torch::Tensor& key_pool, const torch::Tensor& value_pool,
           torch::Tensor query_start_loc, torch::Tensor context_lens, torch::Tensor block_tables, double scale,
           int64_t sliding_window, const std::optional<torch::Tensor>& key_scales,
           const std::optional<torch::Tensor>& value_scales) {
          const KVRowScales kv_scales{key_scales.value_or(torch::Tensor()), value_scales.value_or(torch::Tensor())};
          return paged_attention_cpu(query, key_pool, value_pool,
                                     make_metadata(query_start_loc, context_lens, block_tables), scale,
                                     sliding_window, kv_scales);
        },
        py::arg("query"), py::arg("key_pool"), py::arg("value_pool"), py::arg("query_start_loc"),
        py::arg("context_lens"), py::arg("block_tables"), py::arg("scale"), py::arg("sliding_window") = 0,
        py::arg("key_scales") = py::none(), py::arg("value_scales") = py::none(),
        py::call_guard<py::gil_scoped_release>(),
        "The Eigen paged attention kernel. query [T, H, D]; pools [N, H_kv, block_size, D]; "
        "query_start_loc [S+1] int64, context_lens [S] int64, block_tables [S, max_blocks] int32 (CPU); "
        "int8 pools with key_scales and value_scales [N, H_kv, block_size] float32 (a row is int8 * scale).");
  testing.def("paged_attention_reference",
        [](const torch::Tensor& query, const torch::Tensor& key_pool, const torch::Tensor& value_pool,
           torch::Tensor query_start_loc, torch::Tensor context_lens, torch::Tensor block_tables, double scale,
           int64_t sliding_window, const std::optional<torch::Tensor>& key_scales,
           const std::optional<torch::Tensor>& value_scales) {
          const KVRowScales kv_scales{key_scales.value_or(torch::Tensor()), value_scales.value_or(torch::Tensor())};
          return paged_attention_reference(query, key_pool, value_pool,
                                           make_metadata(query_start_loc, context_lens, block_tables), scale,
                                           sliding_window, kv_scales);
        },
        py::arg("query"), py::arg("key_pool"), py::arg("value_pool"), py::arg("query_start_loc"),
        py::arg("context_lens"), py::arg("block_tables"), py::arg("scale"), py::arg("sliding_window") = 0,
        py::arg("key_scales") = py::none(), py::arg("value_scales") = py::none(),
        py::call_guard<py::gil_scoped_release>(),
        "The ATen paged attention path (gather + matmul + softmax); same arguments as paged_attention_cpu.");
  testing.def("pack_linear_weight", &pack_linear_weight, py::arg("weight"), py::call_guard<py::gil_scoped_release>(),
        "weight [N, K] float32 -> panels [ceil(N / W), K, W] for packed_linear (what model layers keep); W is 64 with AVX-512, 16 with AVX2.");
  testing.def("packed_linear",
        [](const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
           const std::optional<torch::Tensor>& bias) {
          return packed_linear(x, packed, out_features, bias.value_or(torch::Tensor()));
        },
        py::arg("x"), py::arg("packed"), py::arg("out_features"), py::arg("bias") = py::none(),
        py::call_guard<py::gil_scoped_release>(),
        "The CPU float32 linear kernel of model layers: x [M, K] @ weight^T + bias -> [M, out_features], "
        "with the weight from pack_linear_weight.");
  testing.def("bf16_linear_supported", &bf16_linear_supported,
        "Whether this build has the bfloat16 linear kernel (compiled for a CPU with AVX512-BF16).");
  testing.def("pack_linear_weight_bf16", &pack_linear_weight_bf16, py::arg("weight"),
        py::call_guard<py::gil_scoped_release>(),
        "weight [N, K] bfloat16 -> panels [ceil(N / 64), ceil(K / 2), 64, 2] for packed_linear_bf16.");
  testing.def("packed_linear_bf16",
        [](const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
           const std::optional<torch::Tensor>& bias) {
          return packed_linear_bf16(x, packed, out_features, bias.value_or(torch::Tensor()));
        },
        py::arg("x"), py::arg("packed"), py::arg("out_features"), py::arg("bias") = py::none(),
        py::call_guard<py::gil_scoped_release>(),
        "The CPU bfloat16 linear kernel of model layers: x [M, K] @ weight^T + bias -> [M, out_features] "
        "bfloat16 (fp32 accumulation, one rounding), with the weight from pack_linear_weight_bf16.");
}
