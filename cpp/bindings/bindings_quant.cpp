// Bindings of the quantized formats and kernels, in modelbench._core.testing
// (what the tests and benchmarks call): conversions only.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <string>

#include "kernels/quant_linear.h"
#include "kernels/quant_matrix.h"
#include "kernels/quant_types.h"

namespace py = pybind11;
using namespace modelbench;

void bind_quant(py::module_& testing) {
  py::class_<QuantMatrix>(testing, "QuantMatrix",
                          "A weight matrix kept quantized, in the kernels' layout (cpp/kernels/quant_kernels.h).")
      .def_readonly("rows", &QuantMatrix::rows)
      .def_readonly("cols", &QuantMatrix::cols)
      .def_readonly("bits", &QuantMatrix::bits)
      .def_readonly("group", &QuantMatrix::group)
      .def_readonly("ggml_type", &QuantMatrix::ggml_type)
      .def_property_readonly("nbytes", [](const QuantMatrix& w) { return w.data.numel(); },
                             "bytes the layout takes in memory");
  testing.def("repack_ggml", &repack_ggml, py::arg("raw"), py::arg("ggml_type"), py::arg("cols"),
              py::arg("name") = "weight", py::call_guard<py::gil_scoped_release>(),
              "raw: uint8 [rows, row_bytes] GGUF blocks of ggml_type -> QuantMatrix. ValueError names the tensor "
              "for an unsupported type or a bad size.");
  testing.def("quantize_matrix", &quantize_matrix, py::arg("weight"), py::arg("ggml_type"),
              py::call_guard<py::gil_scoped_release>(),
              "weight [rows, cols] float -> QuantMatrix of Q8_0 (8) or Q4_0 (2) blocks, as ggml quantizes.");
  testing.def("dequantize", &dequantize, py::arg("w"), py::call_guard<py::gil_scoped_release>(),
              "QuantMatrix -> [rows, cols] float32.");
  testing.def("dequantize_rows", &dequantize_rows, py::arg("w"), py::arg("ids"),
              py::call_guard<py::gil_scoped_release>(), "Rows ids of the QuantMatrix as float32 [n, cols].");
  testing.def("dequantize_ggml",
              [](const torch::Tensor& raw, int ggml_type, int64_t cols) {
                const torch::Tensor src = raw.contiguous();
                torch::Tensor out = torch::empty({src.size(0), cols}, torch::kFloat32);
                for (int64_t r = 0; r < src.size(0); ++r)
                  quant::dequantize_row(ggml_type, src.data_ptr<uint8_t>() + r * src.size(1),
                                        out.data_ptr<float>() + r * cols, cols);
                return out;
              },
              py::arg("raw"), py::arg("ggml_type"), py::arg("cols"),
              "GGUF blocks [rows, row_bytes] -> float32 [rows, cols], decoded straight from the file's bytes.");
  testing.def("quantize_ggml",
              [](const torch::Tensor& weight, int ggml_type) {
                const torch::Tensor w = weight.to(torch::kFloat32).contiguous();
                const quant::BlockInfo info = quant::block_info(ggml_type);
                torch::Tensor raw = torch::empty({w.size(0), w.size(1) / 32 * info.block_bytes}, torch::kUInt8);
                for (int64_t r = 0; r < w.size(0); ++r) {
                  if (ggml_type == static_cast<int>(quant::GgmlType::Q8_0))
                    quant::quantize_row_q8_0(w.data_ptr<float>() + r * w.size(1),
                                             raw.data_ptr<uint8_t>() + r * raw.size(1), w.size(1));
                  else
                    quant::quantize_row_q4_0(w.data_ptr<float>() + r * w.size(1),
                                             raw.data_ptr<uint8_t>() + r * raw.size(1), w.size(1));
                }
                return raw;
              },
              py::arg("weight"), py::arg("ggml_type"),
              "float [rows, cols] -> GGUF Q8_0 (8) or Q4_0 (2) blocks, uint8 [rows, row_bytes].");
  testing.def("quant_linear",
              [](const torch::Tensor& x, const QuantMatrix& w, const std::string& isa) {
                torch::Tensor out = torch::empty({x.size(0), w.rows}, torch::kFloat32);
                quant_linear_into(x, w, out, 0, isa.empty() ? active_quant_isa() : quant_isa_from_name(isa));
                return out;
              },
              py::arg("x"), py::arg("w"), py::arg("isa") = "", py::call_guard<py::gil_scoped_release>(),
              "x [M, cols] float32 @ w^T -> [M, rows] with the kernel set isa (generic | avx2 | avx512; '' for "
              "the active one). ValueError when this CPU cannot run it.");
  testing.def("quant_isa_supported",
              [](const std::string& isa) { return quant_isa_supported(quant_isa_from_name(isa)); }, py::arg("isa"),
              "Whether this CPU runs the kernel set isa.");
  testing.def("active_quant_isa", []() { return quant_isa_name(active_quant_isa()); },
              "The quantized kernels in use: MODELBENCH_ISA, or the best this CPU runs.");
  testing.def("best_quant_isa", []() { return quant_isa_name(best_quant_isa()); });
}
