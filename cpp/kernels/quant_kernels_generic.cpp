// The portable kernels: plain C++ over the layout, compiled for baseline
// x86-64. The reference the vector kernels are tested against, and what
// runs on a CPU without AVX2.
#include <cmath>
#include <cstring>

#include "kernels/quant_kernels.h"
#include "kernels/quant_types.h"

namespace modelbench::quant {
namespace {

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

float scale_at(const uint8_t* p, int r, int scale_bytes) {
  if (scale_bytes == 2) return half_at(p + 2 * r);
  float f;
  std::memcpy(&f, p + 4 * r, 4);
  return f;
}

// u of row r, column c (0..31) of a block's quants.
int unpack(const uint8_t* quants, int bits, int r, int c) {
  const int chunk = c / 4;
  const int lane = 4 * r + c % 4;
  if (bits == 8) return static_cast<uint8_t>(quants[64 * chunk + lane] ^ 0x80);
  const uint8_t byte = quants[64 * (chunk / 2) + lane];
  int u = chunk % 2 == 0 ? byte & 0x0F : byte >> 4;
  if (bits == 5) u |= ((quants[256 + 8 * chunk + lane / 8] >> (lane % 8)) & 1) << 4;
  return u;
}

}  // namespace

void qgemm_generic(const QuantLayout& w, const QuantizedRows& x, float* out, int64_t ld_out, int64_t group_begin,
                   int64_t group_end) {
  const int subs = 32 / w.group;
  for (int64_t g = group_begin; g < group_end; ++g) {
    for (int64_t i = 0; i < x.num_rows; ++i) {
      float acc[16] = {};
      const int16_t* xq = x.q + i * x.cols;
      for (int64_t b = 0; b < w.blocks; ++b) {
        const uint8_t* block = w.data + (g * w.blocks + b) * w.block_bytes;
        const int sub_bytes = 32 * w.scale_bytes;
        const uint8_t* quants = block + sub_bytes * subs;
        const float dx = x.scale[i * w.blocks + b];
        for (int s = 0; s < subs; ++s) {
          int32_t xsum = 0;
          for (int h = 0; h < w.group / 16; ++h) xsum += x.sums[i * (x.cols / 16) + 2 * b + s * (w.group / 16) + h];
          for (int r = 0; r < 16; ++r) {
            int32_t dot = 0;
            for (int c = s * w.group; c < (s + 1) * w.group; ++c) dot += unpack(quants, w.bits, r, c) * xq[32 * b + c];
            const float d = scale_at(block + sub_bytes * s, r, w.scale_bytes);
            const float m = scale_at(block + sub_bytes * s + 16 * w.scale_bytes, r, w.scale_bytes);
            acc[r] += d * dx * static_cast<float>(dot) + m * dx * static_cast<float>(xsum);
          }
        }
      }
      for (int r = 0; r < 16 && 16 * g + r < w.rows; ++r) out[i * ld_out + 16 * g + r] = acc[r];
    }
  }
}

void quantize_rows_generic(const float* x, int64_t num_rows, int64_t cols, int16_t* q, float* scale, int32_t* sums) {
  for (int64_t i = 0; i < num_rows; ++i) {
    for (int64_t b = 0; b < cols / 32; ++b) {
      const float* v = x + i * cols + 32 * b;
      float amax = 0.0f;
      for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(v[j]));
      const float d = amax / 32767.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      scale[i * (cols / 32) + b] = d;
      int16_t* out = q + i * cols + 32 * b;
      for (int h = 0; h < 2; ++h) {
        int32_t sum = 0;
        for (int j = 16 * h; j < 16 * h + 16; ++j) {
          out[j] = static_cast<int16_t>(std::nearbyint(v[j] * id));
          sum += out[j];
        }
        sums[i * (cols / 16) + 2 * b + h] = sum;
      }
    }
  }
}

}  // namespace modelbench::quant
