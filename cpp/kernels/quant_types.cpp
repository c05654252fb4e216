// The block formats, byte for byte as ggml's ggml-common.h lays them out
// and ggml-quants.c decodes them.
#include "kernels/quant_types.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/config.h"

namespace modelbench::quant {
namespace {

uint16_t read_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

float read_half(const uint8_t* p) { return half_to_float(read_u16(p)); }

void write_half(uint8_t* p, float f) {
  const uint16_t h = float_to_half(f);
  std::memcpy(p, &h, 2);
}

// ggml's get_scale_min_k4: the j-th 6-bit scale and min of a Q4_K / Q5_K block.
void scale_min_k4(int j, const uint8_t* q, int* scale, int* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

}  // namespace

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int shift = 0;
      while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        ++shift;
      }
      mantissa &= 0x3FF;
      bits = sign | static_cast<uint32_t>(127 - 15 - shift + 1) << 23 | mantissa << 13;
    }
  } else if (exponent == 31) {
    bits = sign | 0x7F800000u | mantissa << 13;
  } else {
    bits = sign | (exponent + 127 - 15) << 23 | mantissa << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  // The branch-free conversion ggml uses where there is no F16C (round to nearest even).
  const float scale_to_inf = 0x1.0p+112f;
  const float scale_to_zero = 0x1.0p-110f;
  float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
  uint32_t w;
  std::memcpy(&w, &f, 4);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  const uint32_t bias_bits = (bias >> 1) + 0x07800000u;
  float bias_f;
  std::memcpy(&bias_f, &bias_bits, 4);
  base = bias_f + base;
  uint32_t bits;
  std::memcpy(&bits, &base, 4);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

bool is_block_type(int id) {
  switch (static_cast<GgmlType>(id)) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1:
    case GgmlType::Q8_0: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
      return true;
    default:
      return false;
  }
}

std::string type_name(int id) {
  switch (static_cast<GgmlType>(id)) {
    case GgmlType::F32: return "F32";
    case GgmlType::F16: return "F16";
    case GgmlType::BF16: return "BF16";
    case GgmlType::Q4_0: return "Q4_0";
    case GgmlType::Q4_1: return "Q4_1";
    case GgmlType::Q5_0: return "Q5_0";
    case GgmlType::Q5_1: return "Q5_1";
    case GgmlType::Q8_0: return "Q8_0";
    case GgmlType::Q4_K: return "Q4_K";
    case GgmlType::Q5_K: return "Q5_K";
    case GgmlType::Q6_K: return "Q6_K";
  }
  // ggml's other types: named in errors, never run.
  static const char* const others[] = {"Q4_2", "Q4_3", nullptr, nullptr, nullptr, "Q8_1", "Q2_K", "Q3_K",
                                       nullptr, nullptr, nullptr, "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
                                       "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64",
                                       "F64", "IQ1_M"};
  if (id >= 4 && id < 30 && others[id - 4] != nullptr) return others[id - 4];
  if (id == 34) return "TQ1_0";
  if (id == 35) return "TQ2_0";
  return "type " + std::to_string(id);
}

std::string supported_type_names() { return "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32"; }

BlockInfo block_info(int id) {
  switch (static_cast<GgmlType>(id)) {
    case GgmlType::Q4_0: return {32, 18, 4, 32, 2};
    case GgmlType::Q4_1: return {32, 20, 4, 32, 2};
    case GgmlType::Q5_0: return {32, 22, 5, 32, 2};
    case GgmlType::Q5_1: return {32, 24, 5, 32, 2};
    case GgmlType::Q8_0: return {32, 34, 8, 32, 2};
    case GgmlType::Q4_K: return {256, 144, 4, 32, 4};
    case GgmlType::Q5_K: return {256, 176, 5, 32, 4};
    case GgmlType::Q6_K: return {256, 210, 8, 16, 4};
    default:
      throw InvalidArgument("GGUF type " + type_name(id) + " is not a quantized block type; the block types are " +
                                "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K",
                            "weights");
  }
}

void decode_block(int type, const uint8_t* src, uint8_t* u, float* d, float* m) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1: {
      const bool has_min = type == static_cast<int>(GgmlType::Q4_1);
      d[0] = read_half(src);
      m[0] = has_min ? read_half(src + 2) : -8.0f * d[0];
      const uint8_t* qs = src + (has_min ? 4 : 2);
      for (int j = 0; j < 16; ++j) {
        u[j] = qs[j] & 0x0F;
        u[j + 16] = qs[j] >> 4;
      }
      return;
    }
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool has_min = type == static_cast<int>(GgmlType::Q5_1);
      d[0] = read_half(src);
      m[0] = has_min ? read_half(src + 2) : -16.0f * d[0];
      const uint8_t* p = src + (has_min ? 4 : 2);
      uint32_t qh;
      std::memcpy(&qh, p, 4);
      const uint8_t* qs = p + 4;
      for (int j = 0; j < 16; ++j) {
        u[j] = static_cast<uint8_t>((qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10));
        u[j + 16] = static_cast<uint8_t>((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10));
      }
      return;
    }
    case GgmlType::Q8_0: {
      d[0] = read_half(src);
      m[0] = -128.0f * d[0];
      for (int j = 0; j < 32; ++j) u[j] = static_cast<uint8_t>(static_cast<int8_t>(src[2 + j]) + 128);
      return;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool five = type == static_cast<int>(GgmlType::Q5_K);
      const float dall = read_half(src);
      const float dmin = read_half(src + 2);
      const uint8_t* scales = src + 4;
      const uint8_t* qh = src + 16;
      const uint8_t* ql = src + (five ? 48 : 16);
      for (int j = 0; j < 4; ++j) {  // 64 weights: 32 low nibbles, then 32 high nibbles
        for (int half = 0; half < 2; ++half) {
          const int sub = 2 * j + half;
          int scale, min;
          scale_min_k4(sub, scales, &scale, &min);
          d[sub] = dall * static_cast<float>(scale);
          m[sub] = -dmin * static_cast<float>(min);
          for (int l = 0; l < 32; ++l) {
            uint8_t q = half == 0 ? (ql[32 * j + l] & 0x0F) : (ql[32 * j + l] >> 4);
            if (five && (qh[l] >> sub) & 1) q |= 0x10;
            u[64 * j + 32 * half + l] = q;
          }
        }
      }
      return;
    }
    case GgmlType::Q6_K: {
      const uint8_t* ql = src;
      const uint8_t* qh = src + 128;
      const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);
      const float dall = read_half(src + 208);
      for (int s = 0; s < 16; ++s) {
        d[s] = dall * static_cast<float>(sc[s]);
        m[s] = -32.0f * d[s];
      }
      for (int n = 0; n < 2; ++n) {  // two halves of 128 weights
        const uint8_t* l8 = ql + 64 * n;
        const uint8_t* h8 = qh + 32 * n;
        uint8_t* y = u + 128 * n;
        for (int l = 0; l < 32; ++l) {
          y[l] = static_cast<uint8_t>((l8[l] & 0xF) | (((h8[l] >> 0) & 3) << 4));
          y[l + 32] = static_cast<uint8_t>((l8[l + 32] & 0xF) | (((h8[l] >> 2) & 3) << 4));
          y[l + 64] = static_cast<uint8_t>((l8[l] >> 4) | (((h8[l] >> 4) & 3) << 4));
          y[l + 96] = static_cast<uint8_t>((l8[l + 32] >> 4) | (((h8[l] >> 6) & 3) << 4));
        }
      }
      return;
    }
    default:
      block_info(type);  // throws, naming the type
  }
}

void dequantize_row(int type, const uint8_t* src, float* dst, int64_t k) {
  const BlockInfo info = block_info(type);
  uint8_t u[256];
  float d[16], m[16];
  for (int64_t b = 0; b < k / info.block_weights; ++b) {
    decode_block(type, src + b * info.block_bytes, u, d, m);
    for (int64_t i = 0; i < info.block_weights; ++i)
      dst[b * info.block_weights + i] = d[i / info.group] * static_cast<float>(u[i]) + m[i / info.group];
  }
}

void quantize_row_q8_0(const float* src, uint8_t* dst, int64_t k) {
  for (int64_t b = 0; b < k / 32; ++b) {
    const float* x = src + 32 * b;
    uint8_t* y = dst + 34 * b;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    write_half(y, d);
    for (int j = 0; j < 32; ++j)  // roundf, as ggml
      y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
  }
}

void quantize_row_q4_0(const float* src, uint8_t* dst, int64_t k) {
  for (int64_t b = 0; b < k / 32; ++b) {
    const float* x = src + 32 * b;
    uint8_t* y = dst + 18 * b;
    float amax = 0.0f, max = 0.0f;  // the value of largest magnitude, with its sign
    for (int j = 0; j < 32; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    write_half(y, d);
    for (int j = 0; j < 16; ++j) {
      const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
      const int q1 = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
      y[2 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

}  // namespace modelbench::quant
