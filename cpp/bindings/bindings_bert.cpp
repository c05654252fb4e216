// Bindings of the encoder part of modelbench._core: BertSpec and the
// EmbeddingRunner. Conversions and docstrings only.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <torch/extension.h>

#include "kernels/linear_amx.h"
#include "models/bert.h"
#include "runner/embedding_runner.h"

namespace py = pybind11;
using namespace modelbench;

void bind_bert(py::module_& m) {
  m.def("amx_linear_supported", &amx_linear_supported,
        "Whether this process can run float32 linears with bf16 products on AMX tiles (the AVX-512 "
        "build level, a CPU with AMX-BF16, and the OS granting the tile state): where an embedding "
        "model's matmul_precision 'medium' uses them.");
  py::class_<BertSpec>(m, "BertSpec",
                       "A BERT encoder's shape; build one from a Hugging Face config with "
                       "modelbench.models.encoder_loader.bert_spec_from_hf_config.")
      .def(py::init<>())
      .def_readwrite("vocab_size", &BertSpec::vocab_size)
      .def_readwrite("hidden_size", &BertSpec::hidden_size)
      .def_readwrite("num_layers", &BertSpec::num_layers)
      .def_readwrite("num_heads", &BertSpec::num_heads)
      .def_readwrite("intermediate_size", &BertSpec::intermediate_size)
      .def_readwrite("max_position_embeddings", &BertSpec::max_position_embeddings)
      .def_readwrite("type_vocab_size", &BertSpec::type_vocab_size)
      .def_readwrite("layer_norm_eps", &BertSpec::layer_norm_eps)
      .def_readwrite("hidden_act", &BertSpec::hidden_act, "gelu | gelu_new | gelu_pytorch_tanh")
      .def("validate", &BertSpec::validate,
           "Raise InvalidArgument (a ValueError) naming the first inconsistent field; its `param` is the field.")
      .def("__repr__", [](const BertSpec& s) {
        return "BertSpec(num_layers=" + std::to_string(s.num_layers) + ", hidden_size=" +
               std::to_string(s.hidden_size) + ", num_heads=" + std::to_string(s.num_heads) +
               ", vocab_size=" + std::to_string(s.vocab_size) + ")";
      });

  py::class_<EmbeddingRunner, std::shared_ptr<EmbeddingRunner>>(
      m, "EmbeddingRunner",
      "A BERT encoder and its pooling: lists of token ids in, one vector each out. Packed "
      "(padding-free) forwards over inputs sorted by length, bidirectional attention, no KV cache.")
      .def(py::init<const BertSpec&, const WeightMap&, const std::string&, const std::string&, const std::string&,
                    bool, int, int, const std::string&>(),
           py::arg("spec"), py::arg("weights"), py::arg("dtype") = "float32", py::arg("device") = "cpu",
           py::arg("pooling") = "mean", py::arg("normalize") = true, py::arg("max_seq_len") = 512,
           py::arg("max_batch_tokens") = 8192, py::arg("matmul_precision") = "highest",
           py::call_guard<py::gil_scoped_release>(),
           "weights: Hugging Face names (with or without 'bert.'); pooling 'mean' or 'cls'; "
           "max_seq_len: the longest input accepted; matmul_precision 'highest' (float32 products) or "
           "'medium' (bf16 products, fp32 sums, on CPUs with AMX). Raises ValueError naming a bad field or tensor.")
      .def("embed", &EmbeddingRunner::embed, py::arg("prompts"), py::call_guard<py::gil_scoped_release>(),
           "[num_prompts, hidden_size] float32 vectors of the prompts (lists of token ids), pooled and, "
           "when normalize is on, L2-normalized. Raises ValueError for no prompts, an empty one, an id "
           "outside the vocabulary or one longer than max_seq_len.")
      .def_property_readonly("spec", &EmbeddingRunner::spec)
      .def_property_readonly("max_seq_len", &EmbeddingRunner::max_seq_len)
      .def_property_readonly("pooling", &EmbeddingRunner::pooling)
      .def_property_readonly("normalize", &EmbeddingRunner::normalize)
      .def_property_readonly("matmul_precision", &EmbeddingRunner::matmul_precision,
                             "'medium' where the linears run with bf16 products, else 'highest'.");
}
