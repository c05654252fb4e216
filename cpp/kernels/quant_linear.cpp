// Run-time kernel choice and the threading around the quantized kernels.
#include "kernels/quant_linear.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstdlib>
#include <utility>
#include <vector>

#include "core/config.h"
#include "kernels/amx_tiles.h"

namespace modelbench {
namespace {

// Asked once per process (quant_linear checks the set it runs on every call).
bool cpu_has_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni");
  }();
  return has;
}

bool cpu_has_avx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return has;
}

// AMX-INT8 tiles, with the AVX-512 the kernel folds its sums with, and
// the tiles' state granted by the kernel (Linux asks each process to
// request it: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)).
bool cpu_has_amx() {
  static const bool has = [] {
    __builtin_cpu_init();
    if (!cpu_has_avx512() || !__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-int8")) return false;
    return amx::request_tiles();
  }();
  return has;
}

// `what` asked for a kernel set this CPU cannot run: say which it can.
[[noreturn]] void refuse_isa(const std::string& what) {
  throw InvalidArgument(what + ", which this CPU cannot run; it supports " + quant_isa_name(best_quant_isa()) +
                            " and below (generic < avx2 < avx512 < amx)",
                        "MODELBENCH_ISA");
}

QuantIsa resolve_active() {
  const char* env = std::getenv("MODELBENCH_ISA");
  if (env == nullptr || *env == '\0') return best_quant_isa();
  const QuantIsa isa = quant_isa_from_name(env);
  if (!quant_isa_supported(isa)) refuse_isa("MODELBENCH_ISA=" + std::string(env) + " asks for kernels");
  return isa;
}

}  // namespace

QuantIsa best_quant_isa() {
  if (cpu_has_amx()) return QuantIsa::amx;
  if (cpu_has_avx512()) return QuantIsa::avx512;
  if (cpu_has_avx2()) return QuantIsa::avx2;
  return QuantIsa::generic;
}

bool quant_isa_supported(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::amx: return cpu_has_amx();
    case QuantIsa::avx512: return cpu_has_avx512();
    case QuantIsa::avx2: return cpu_has_avx2();
    case QuantIsa::generic: return true;
  }
  return false;
}

QuantIsa active_quant_isa() {
  static const QuantIsa isa = resolve_active();
  return isa;
}

std::string quant_isa_name(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::amx: return "amx";
    case QuantIsa::avx512: return "avx512";
    case QuantIsa::avx2: return "avx2";
    case QuantIsa::generic: return "generic";
  }
  return "generic";
}

QuantIsa quant_isa_from_name(const std::string& name) {
  if (name == "amx") return QuantIsa::amx;
  if (name == "avx512") return QuantIsa::avx512;
  if (name == "avx2") return QuantIsa::avx2;
  if (name == "generic") return QuantIsa::generic;
  throw InvalidArgument("unknown kernel set '" + name + "'; use generic, avx2, avx512 or amx", "MODELBENCH_ISA");
}

void quant_linear_into(const torch::Tensor& x, const QuantMatrix& w, torch::Tensor& out, int64_t column,
                       QuantIsa isa) {
  TORCH_CHECK(out.dim() == 2 && column >= 0 && out.size(1) >= column + w.rows,
              "quant_linear: out must be [rows, >= ", column + w.rows, "]");
  torch::Tensor view = out.narrow(1, column, w.rows);
  quant_linear_parts_into(x, w, view, isa);
}

void quant_linear_parts_into(const torch::Tensor& x, c10::ArrayRef<QuantMatrix> parts, torch::Tensor& out,
                             QuantIsa isa) {
  TORCH_CHECK(!parts.empty(), "quant_linear: no matrices");
  const int64_t cols = parts[0].cols;
  int64_t total_rows = 0;
  for (const QuantMatrix& w : parts) {
    TORCH_CHECK(w.cols == cols, "quant_linear: the parts of a fused projection take ", cols, " inputs, one takes ",
                w.cols);
    total_rows += w.rows;
  }
  TORCH_CHECK(x.dim() == 2 && x.size(1) == cols && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "quant_linear: x must be float32 CPU [rows, ", cols, "], got ", x.sizes());
  TORCH_CHECK(out.dim() == 2 && out.size(0) == x.size(0) && out.size(1) >= total_rows &&
                  out.scalar_type() == torch::kFloat32 && out.stride(1) == 1,
              "quant_linear: out must be float32 [rows, >= ", total_rows, "] with unit column stride");
  // (An asked-for set is checked here too: AMX needs the tiles requested
  // from the kernel first, and a missing instruction set is a clear error,
  // not SIGILL.)
  if (!quant_isa_supported(isa)) refuse_isa("quant_linear: asked for the " + quant_isa_name(isa) + " kernels");
  const int64_t num_rows = x.size(0);
  if (num_rows == 0) return;
  RECORD_FUNCTION("modelbench::quant_linear", std::vector<c10::IValue>());
  const torch::Tensor xc = x.contiguous();
  torch::Tensor q = torch::empty({num_rows, cols}, torch::kInt16);
  torch::Tensor scale = torch::empty({num_rows, cols / 32}, torch::kFloat32);
  torch::Tensor sums = torch::empty({num_rows, cols / 16}, torch::kInt32);
  const bool vector512 = isa == QuantIsa::avx512 || isa == QuantIsa::amx;
  const auto quantize = vector512               ? quant::quantize_rows_avx512
                        : isa == QuantIsa::avx2 ? quant::quantize_rows_avx2
                                                : quant::quantize_rows_generic;
  quantize(xc.data_ptr<float>(), num_rows, cols, q.data_ptr<int16_t>(), scale.data_ptr<float>(),
           sums.data_ptr<int32_t>());
  quant::QuantizedRows rows;
  rows.q = q.data_ptr<int16_t>();
  rows.scale = scale.data_ptr<float>();
  rows.sums = sums.data_ptr<int32_t>();
  rows.num_rows = num_rows;
  rows.cols = cols;
  // The AMX kernel's result equals the AVX-512 one's bit for bit, so which
  // of the two runs may follow the number of rows (a row's result does
  // not change with the batch): tiles from kMinAmxQuantRows rows on. Its
  // split of x depends on the sub-block (32 or 16 weights), so each part
  // gets the split for its own.
  const bool tiles = isa == QuantIsa::amx && num_rows >= kMinAmxQuantRows;
  std::vector<quant::QuantizedRows> part_rows(parts.size(), rows);
  std::vector<torch::Tensor> splits;  // keeps each split's memory
  if (tiles) {
    const int64_t padded = (num_rows + 15) / 16 * 16;
    std::vector<std::pair<int, size_t>> made;  // group -> its entry in splits (pairs of tensors)
    for (size_t p = 0; p < parts.size(); ++p) {
      const int group = parts[p].group;
      size_t at = splits.size();
      for (const auto& [g, index] : made)
        if (g == group) at = index;
      if (at == splits.size()) {
        splits.push_back(torch::empty({2, padded, cols}, torch::kInt8));
        splits.push_back(torch::empty({2, padded * (cols / group)}, torch::kFloat32));
        int8_t* hi = splits[at].data_ptr<int8_t>();
        float* dx = splits[at + 1].data_ptr<float>();
        quant::split_rows_amx(rows, group, hi, reinterpret_cast<uint8_t*>(hi + padded * cols), dx,
                              dx + padded * (cols / group));
        made.emplace_back(group, at);
      }
      int8_t* hi = splits[at].data_ptr<int8_t>();
      float* dx = splits[at + 1].data_ptr<float>();
      part_rows[p].hi = hi;
      part_rows[p].lo = reinterpret_cast<uint8_t*>(hi + padded * cols);
      part_rows[p].dx = dx;
      part_rows[p].dx_sum = dx + padded * (cols / group);
    }
  }
  const quant::QGemmKernel kernel = tiles       ? quant::qgemm_amx
                                    : vector512 ? quant::qgemm_avx512
                                    : isa == QuantIsa::avx2 ? quant::qgemm_avx2
                                                            : quant::qgemm_generic;
  // The parts' row groups as one range: part p's groups start at first[p].
  std::vector<quant::QuantLayout> layouts;
  std::vector<int64_t> first{0}, column{0};
  for (const QuantMatrix& w : parts) {
    layouts.push_back(w.layout());
    first.push_back(first.back() + w.row_groups());
    column.push_back(column.back() + w.rows);
  }
  float* dst = out.data_ptr<float>();
  const int64_t ld = out.stride(0);
  at::parallel_for(0, first.back(), 1, [&](int64_t begin, int64_t end) {
    for (size_t p = 0; p < parts.size(); ++p) {
      const int64_t b = std::max(begin, first[p]), e = std::min(end, first[p + 1]);
      if (b < e) kernel(layouts[p], part_rows[p], dst + column[p], ld, b - first[p], e - first[p]);
    }
  });
}

torch::Tensor quant_linear(const torch::Tensor& x, const QuantMatrix& w, const torch::Tensor& bias) {
  torch::Tensor out = torch::empty({x.size(0), w.rows}, torch::kFloat32);
  quant_linear_into(x, w, out, 0, active_quant_isa());
  if (bias.defined()) out.add_(bias);
  return out;
}

}  // namespace modelbench
