// y = x @ w^T over a QuantMatrix, choosing the kernel at run time: AMX-INT8
// tiles, AVX-512 (with VNNI), AVX2 (with FMA and F16C) or portable,
// whichever is the best the CPU has, unless MODELBENCH_ISA (generic | avx2
// | avx512 | amx) asks for one. Every batch, a decode step's few rows or a prefill's hundreds, runs
// the integer kernel over x quantized to int16 blocks row by row, so a row's
// result never depends on the other rows of the step (greedy output is the
// same alone or in any batch).
#pragma once

#include <torch/torch.h>

#include <string>

#include "kernels/quant_matrix.h"

namespace modelbench {

enum class QuantIsa { generic, avx2, avx512, amx };

// From this many rows the amx set runs AMX-INT8 tiles; below, the AVX-512
// kernel (the same result bit for bit).
constexpr int64_t kMinAmxQuantRows = 8;

// What the CPU supports, best first.
QuantIsa best_quant_isa();
bool quant_isa_supported(QuantIsa isa);
// The one in use: MODELBENCH_ISA if set (InvalidArgument if this CPU lacks
// it or the name is unknown), else best_quant_isa().
QuantIsa active_quant_isa();
std::string quant_isa_name(QuantIsa isa);
QuantIsa quant_isa_from_name(const std::string& name);

// x: [num_rows, cols] float32 CPU. out: [num_rows, >= column + w.rows]
// float32; columns [column, column + w.rows) are written (so the parts of a
// fused projection write one output). Threads split the row groups.
void quant_linear_into(const torch::Tensor& x, const QuantMatrix& w, torch::Tensor& out, int64_t column,
                       QuantIsa isa);

// The parts of a fused projection (q, k and v; gate and up) over the same x,
// written side by side from column 0: x is quantized once for all of them
// and one parallel loop splits all their row groups (a call per part paid
// the quantization and the threads' start-up once per part).
void quant_linear_parts_into(const torch::Tensor& x, c10::ArrayRef<QuantMatrix> parts, torch::Tensor& out,
                             QuantIsa isa);

// [num_rows, w.rows] (+ bias), with the active kernel.
torch::Tensor quant_linear(const torch::Tensor& x, const QuantMatrix& w, const torch::Tensor& bias);

}  // namespace modelbench
