// A weight matrix kept quantized: GGUF blocks repacked once at load into
// the layout the kernels read (quant_kernels.h), and no float copy. Bits
// per weight against the file's: Q4_1, Q5_1 the same; Q4_0, Q5_0 +0.5 (m is
// stored); Q8_0 +0.5; the K types keep their scales exact in fp32 per
// sub-block (Q4_K 6 against 4.5, Q5_K 7 against 5.5, Q6_K, widened to
// bytes, 12 against 6.6). Also a float
// matrix quantized at load (Q8_0 or Q4_0, as ggml quantizes), and the ways
// back to float: the whole matrix (for prefill GEMMs and for parity work) or
// some rows (an embedding lookup).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/quant_kernels.h"

namespace modelbench {

struct QuantMatrix {
  torch::Tensor data;  // uint8, the layout of quant_kernels.h
  int ggml_type = 0;   // the type it came from
  int bits = 4;
  int group = 32;
  int scale_bytes = 2;  // d and m: fp16 (2) or fp32 (4)
  int64_t rows = 0;
  int64_t cols = 0;

  bool defined() const { return data.defined(); }
  int64_t row_groups() const { return (rows + 15) / 16; }
  quant::QuantLayout layout() const;
};

// raw: uint8 [rows, row_bytes], each row `cols` weights in GGUF blocks of
// `ggml_type`. `name` is the tensor's, for errors: a type that is not a
// block type, or cols that are not a whole number of blocks, or row_bytes
// that do not match, throw InvalidArgument naming the tensor.
QuantMatrix repack_ggml(const torch::Tensor& raw, int ggml_type, int64_t cols, const std::string& name);

// weight: [rows, cols] float (cols a multiple of 32), quantized to ggml's
// Q8_0 or Q4_0 blocks and repacked.
QuantMatrix quantize_matrix(const torch::Tensor& weight, int ggml_type);

// Rows stacked into one matrix (fused q/k/v, gate/up): possible when the
// parts share bits and group and each has a whole number of 16-row groups.
bool can_stack(const std::vector<QuantMatrix>& parts);
QuantMatrix stack_rows(const std::vector<QuantMatrix>& parts);

// [rows, cols] float32: the weights the kernels compute with.
torch::Tensor dequantize(const QuantMatrix& w);
// ids: [n] int64 -> [n, cols] float32, rows `ids` of the matrix.
torch::Tensor dequantize_rows(const QuantMatrix& w, const torch::Tensor& ids);

}  // namespace modelbench
