// GGUF blocks -> the kernels' layout, and back to float.
#include "kernels/quant_matrix.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/config.h"
#include "kernels/quant_types.h"

namespace modelbench {
namespace {

using quant::block_info;
using quant::BlockInfo;

void put_scale(uint8_t* p, float value, int scale_bytes, const std::string& name) {
  if (scale_bytes == 4) {
    std::memcpy(p, &value, 4);
    return;
  }
  if (!std::isfinite(value) || std::fabs(value) > 65504.0f)
    throw InvalidArgument("tensor '" + name + "' has a block scale of " + std::to_string(value) +
                              ", outside float16's range; it cannot be kept quantized (load it with dtype "
                              "'float32' to dequantize it)",
                          "weights");
  const uint16_t h = quant::float_to_half(value);
  std::memcpy(p, &h, 2);
}

float get_scale(const uint8_t* p, int scale_bytes) {
  if (scale_bytes == 4) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return quant::half_to_float(h);
}

// Writes row r's u (cols values) and its per-group d, m into the layout.
void scatter_row(const QuantMatrix& w, uint8_t* data, int64_t r, const uint8_t* u, const float* d, const float* m,
                 const std::string& name) {
  const quant::QuantLayout layout = w.layout();
  const int subs = 32 / w.group;
  const int64_t g = r / 16;
  const int rr = static_cast<int>(r % 16);
  for (int64_t b = 0; b < layout.blocks; ++b) {
    uint8_t* block = data + (g * layout.blocks + b) * layout.block_bytes;
    const int sb = w.scale_bytes;
    for (int s = 0; s < subs; ++s) {
      put_scale(block + 32 * sb * s + sb * rr, d[b * subs + s], sb, name);
      put_scale(block + 32 * sb * s + 16 * sb + sb * rr, m[b * subs + s], sb, name);
    }
    uint8_t* q = block + 32 * sb * subs;
    for (int c = 0; c < 32; ++c) {
      const uint8_t value = u[32 * b + c];
      const int chunk = c / 4;
      const int lane = 4 * rr + c % 4;
      if (w.bits == 8) {
        q[64 * chunk + lane] = static_cast<uint8_t>(value ^ 0x80);
      } else {
        q[64 * (chunk / 2) + lane] |= static_cast<uint8_t>(chunk % 2 == 0 ? value & 0x0F : (value & 0x0F) << 4);
        if (w.bits == 5 && (value & 0x10)) q[256 + 8 * chunk + lane / 8] |= static_cast<uint8_t>(1 << (lane % 8));
      }
    }
  }
}

// Row r of the layout, as floats.
void gather_row(const QuantMatrix& w, int64_t r, float* out) {
  const quant::QuantLayout layout = w.layout();
  const int subs = 32 / w.group;
  const int64_t g = r / 16;
  const int rr = static_cast<int>(r % 16);
  for (int64_t b = 0; b < layout.blocks; ++b) {
    const uint8_t* block = layout.data + (g * layout.blocks + b) * layout.block_bytes;
    const int sb = w.scale_bytes;
    const uint8_t* q = block + 32 * sb * subs;
    for (int c = 0; c < 32; ++c) {
      const int s = c / w.group;
      const int chunk = c / 4;
      const int lane = 4 * rr + c % 4;
      int u;
      if (w.bits == 8) {
        u = q[64 * chunk + lane] ^ 0x80;
      } else {
        const uint8_t byte = q[64 * (chunk / 2) + lane];
        u = chunk % 2 == 0 ? byte & 0x0F : byte >> 4;
        if (w.bits == 5) u |= ((q[256 + 8 * chunk + lane / 8] >> (lane % 8)) & 1) << 4;
      }
      out[32 * b + c] = get_scale(block + 32 * sb * s + sb * rr, sb) * static_cast<float>(u) +
                        get_scale(block + 32 * sb * s + 16 * sb + sb * rr, sb);
    }
  }
}

}  // namespace

quant::QuantLayout QuantMatrix::layout() const {
  quant::QuantLayout l;
  l.data = data.defined() ? data.data_ptr<uint8_t>() : nullptr;
  l.bits = bits;
  l.group = group;
  l.rows = rows;
  l.cols = cols;
  l.blocks = cols / 32;
  l.scale_bytes = scale_bytes;
  l.block_bytes = quant::layout_block_bytes(bits, group, scale_bytes);
  return l;
}

QuantMatrix repack_ggml(const torch::Tensor& raw, int ggml_type, int64_t cols, const std::string& name) {
  if (!quant::is_block_type(ggml_type))
    throw InvalidArgument("tensor '" + name + "' has GGUF type " + quant::type_name(ggml_type) +
                              ", which modelbench cannot run quantized; supported types: " +
                              quant::supported_type_names(),
                          "weights");
  const BlockInfo info = block_info(ggml_type);
  if (cols % info.block_weights != 0 || cols % 32 != 0)
    throw InvalidArgument("tensor '" + name + "' has " + std::to_string(cols) + " columns, not a whole number of " +
                              quant::type_name(ggml_type) + " blocks of " + std::to_string(info.block_weights),
                          "weights");
  const int64_t row_bytes = cols / info.block_weights * info.block_bytes;
  if (raw.scalar_type() != torch::kUInt8 || raw.dim() != 2 || raw.size(1) != row_bytes)
    throw InvalidArgument("tensor '" + name + "' (" + quant::type_name(ggml_type) + ", " + std::to_string(cols) +
                              " columns) must be uint8 [rows, " + std::to_string(row_bytes) + "] of GGUF blocks",
                          "weights");
  QuantMatrix w;
  w.ggml_type = ggml_type;
  w.bits = info.bits;
  w.group = info.group;
  w.scale_bytes = info.scale_bytes;
  w.rows = raw.size(0);
  w.cols = cols;
  const quant::QuantLayout layout = w.layout();
  w.data = torch::zeros({w.row_groups() * layout.blocks * layout.block_bytes}, torch::kUInt8);
  const torch::Tensor src = raw.contiguous();
  const uint8_t* bytes = src.data_ptr<uint8_t>();
  uint8_t* data = w.data.data_ptr<uint8_t>();
  const int64_t blocks_per_row = cols / info.block_weights;
  const int64_t subs_per_block = info.block_weights / info.group;
  at::parallel_for(0, w.row_groups(), 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> u(cols);
    std::vector<float> d(cols / info.group), m(cols / info.group);
    for (int64_t r = 16 * begin; r < std::min(16 * end, w.rows); ++r) {
      for (int64_t b = 0; b < blocks_per_row; ++b)
        quant::decode_block(ggml_type, bytes + r * row_bytes + b * info.block_bytes, u.data() + b * info.block_weights,
                            d.data() + b * subs_per_block, m.data() + b * subs_per_block);
      scatter_row(w, data, r, u.data(), d.data(), m.data(), name);
    }
  });
  return w;
}

QuantMatrix quantize_matrix(const torch::Tensor& weight, int ggml_type) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) % 32 == 0, "quantize_matrix: [rows, cols], cols a multiple of 32");
  const BlockInfo info = block_info(ggml_type);
  const torch::Tensor w = weight.to(torch::kFloat32).contiguous();
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t row_bytes = cols / 32 * info.block_bytes;
  torch::Tensor raw = torch::empty({rows, row_bytes}, torch::kUInt8);
  const float* src = w.data_ptr<float>();
  uint8_t* dst = raw.data_ptr<uint8_t>();
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (ggml_type == static_cast<int>(quant::GgmlType::Q8_0))
        quant::quantize_row_q8_0(src + r * cols, dst + r * row_bytes, cols);
      else if (ggml_type == static_cast<int>(quant::GgmlType::Q4_0))
        quant::quantize_row_q4_0(src + r * cols, dst + r * row_bytes, cols);
      else
        TORCH_CHECK(false, "quantize_matrix: only Q8_0 and Q4_0");
    }
  });
  return repack_ggml(raw, ggml_type, cols, "quantized weight");
}

bool can_stack(const std::vector<QuantMatrix>& parts) {
  if (parts.empty()) return false;
  for (const QuantMatrix& p : parts)
    if (p.bits != parts[0].bits || p.group != parts[0].group || p.scale_bytes != parts[0].scale_bytes ||
        p.cols != parts[0].cols || p.rows % 16 != 0)
      return false;
  return true;
}

QuantMatrix stack_rows(const std::vector<QuantMatrix>& parts) {
  TORCH_CHECK(can_stack(parts), "stack_rows: parts of one format with whole 16-row groups");
  if (parts.size() == 1) return parts[0];
  QuantMatrix w = parts[0];
  std::vector<torch::Tensor> data;
  w.rows = 0;
  for (const QuantMatrix& p : parts) {
    data.push_back(p.data);
    w.rows += p.rows;
  }
  w.data = torch::cat(data, 0);
  return w;
}

torch::Tensor dequantize(const QuantMatrix& w) {
  torch::Tensor out = torch::empty({w.rows, w.cols}, torch::kFloat32);
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, w.rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) gather_row(w, r, dst + r * w.cols);
  });
  return out;
}

torch::Tensor dequantize_rows(const QuantMatrix& w, const torch::Tensor& ids) {
  const torch::Tensor index = ids.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t n = index.numel();
  torch::Tensor out = torch::empty({n, w.cols}, torch::kFloat32);
  const int64_t* id = index.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK_INDEX(id[i] >= 0 && id[i] < w.rows, "index ", id[i], " is out of range for ", w.rows, " rows");
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) gather_row(w, id[i], dst + i * w.cols);
  });
  return out;
}

}  // namespace modelbench
