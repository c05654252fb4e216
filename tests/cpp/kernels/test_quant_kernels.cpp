// The quantized formats and kernels, torch-free (so they run under the
// sanitizers too): fp16 conversions, ggml blocks decoded as ggml defines
// them, and every kernel set the CPU runs against the portable one over the
// same layout, reading exactly the bytes the layout has.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/amx_tiles.h"
#include "kernels/quant_kernels.h"
#include "kernels/quant_types.h"

using namespace modelbench::quant;

TEST_CASE("fp16 conversions round to nearest and back exactly") {
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.1f}) {
    const float back = half_to_float(float_to_half(f));
    CHECK(std::fabs(back - f) <= std::fabs(f) * 0x1.0p-11f);
    CHECK(float_to_half(back) == float_to_half(f));
  }
  CHECK(half_to_float(0x3C00) == 1.0f);
  CHECK(half_to_float(0xC000) == -2.0f);
  CHECK(std::isinf(half_to_float(0x7C00)));
}

TEST_CASE("Q4_0 and Q8_0 blocks decode as ggml defines them") {
  uint8_t q4[18];
  const uint16_t d = float_to_half(0.5f);
  std::memcpy(q4, &d, 2);
  for (int j = 0; j < 16; ++j) q4[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float out[32];
  dequantize_row(static_cast<int>(GgmlType::Q4_0), q4, out, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(out[j] == 0.5f * static_cast<float>(j - 8));
    CHECK(out[j + 16] == 0.5f * static_cast<float>(15 - j - 8));
  }
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = std::sin(static_cast<float>(j)) * 3.0f;
  uint8_t q8[34];
  quantize_row_q8_0(x, q8, 32);
  dequantize_row(static_cast<int>(GgmlType::Q8_0), q8, out, 32);
  for (int j = 0; j < 32; ++j) CHECK(std::fabs(out[j] - x[j]) <= 3.0f / 127.0f);
}

TEST_CASE("unknown block types are named and refused") {
  CHECK(type_name(10) == "Q2_K");
  CHECK(type_name(23) == "IQ4_XS");
  CHECK_FALSE(is_block_type(10));
  CHECK_THROWS_WITH(block_info(10), Catch::Contains("Q2_K is not a quantized block type"));
}

namespace {

// A random layout of `rows` x `cols` with valid scales.
std::vector<uint8_t> random_layout(const QuantLayout& l, std::mt19937& rng) {
  std::vector<uint8_t> data(static_cast<size_t>((l.rows + 15) / 16 * l.blocks * l.block_bytes));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(-0.02f, 0.02f);
  for (auto& b : data) b = static_cast<uint8_t>(byte(rng));
  const int subs = 32 / l.group;
  for (size_t block = 0; block < data.size() / l.block_bytes; ++block) {
    uint8_t* p = data.data() + block * l.block_bytes;
    for (int i = 0; i < 32 * subs; ++i) {  // 16 d and 16 m per sub-block
      const float v = scale(rng);
      if (l.scale_bytes == 4) {
        std::memcpy(p + 4 * i, &v, 4);
      } else {
        const uint16_t h = float_to_half(v);
        std::memcpy(p + 2 * i, &h, 2);
      }
    }
  }
  return data;
}

struct Format {
  int bits, group, scale_bytes;
};
// Every layout the repacked types make: Q4_0/Q4_1, Q5_0/Q5_1, Q8_0 (fp16
// scales), Q4_K, Q5_K (fp32), Q6_K (bits 8, sub-blocks of 16).
const Format kFormats[] = {{4, 32, 2}, {5, 32, 2}, {8, 32, 2}, {4, 32, 4}, {5, 32, 4}, {8, 16, 4}};

// A layout of `rows` x `cols` in format f (no data yet).
QuantLayout layout_of(const Format& f, int64_t rows, int64_t cols) {
  QuantLayout l;
  l.bits = f.bits;
  l.group = f.group;
  l.scale_bytes = f.scale_bytes;
  l.rows = rows;
  l.cols = cols;
  l.blocks = cols / 32;
  l.block_bytes = layout_block_bytes(f.bits, f.group, f.scale_bytes);
  return l;
}

}  // namespace

TEST_CASE("every kernel set the CPU runs agrees with the portable one") {
  std::mt19937 rng(7);
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  if (!avx2) WARN("SKIPPED: no AVX2 on this CPU; only the portable kernels run");
  for (const Format& f : kFormats) {
    for (int64_t num_rows : {1, 2, 5, 8, 15}) {  // 8, 15: the AVX2 kernel's 8-row tiles and every smaller one
      QuantLayout l = layout_of(f, 40, 96);  // three groups, the last part-filled
      const std::vector<uint8_t> data = random_layout(l, rng);
      l.data = data.data();
      std::vector<float> x(static_cast<size_t>(num_rows * l.cols));
      std::normal_distribution<float> normal;
      for (float& v : x) v = normal(rng);
      std::vector<int16_t> q(x.size());
      std::vector<float> scale(static_cast<size_t>(num_rows * 3));
      std::vector<int32_t> sums(static_cast<size_t>(num_rows * 6));
      quantize_rows_generic(x.data(), num_rows, l.cols, q.data(), scale.data(), sums.data());
      const QuantizedRows rows{q.data(), scale.data(), sums.data(), num_rows, l.cols};
      // One spare column each side: kernels write exactly rows [0, 40).
      const int64_t ld = l.rows + 2;
      std::vector<float> portable(static_cast<size_t>(num_rows * ld), -7.0f);
      qgemm_generic(l, rows, portable.data() + 1, ld, 0, 3);
      for (int64_t i = 0; i < num_rows; ++i) {
        CHECK(portable[i * ld] == -7.0f);
        CHECK(portable[i * ld + ld - 1] == -7.0f);
      }
      if (avx2) {  // its quants in pair order (x0, x2, x1, x3); the same scales and sums
        std::vector<int16_t> paired(q.size());
        std::vector<float> scale2(scale.size());
        std::vector<int32_t> sums2(sums.size());
        quantize_rows_avx2(x.data(), num_rows, l.cols, paired.data(), scale2.data(), sums2.data());
        CHECK(scale2 == scale);
        CHECK(sums2 == sums);
        for (size_t k = 0; k < q.size(); ++k) CHECK(paired[k] == q[(k & ~size_t{3}) | ((k & 1) << 1) | ((k >> 1) & 1)]);
        std::vector<float> out(portable.size(), -7.0f);
        qgemm_avx2(l, QuantizedRows{paired.data(), scale.data(), sums.data(), num_rows, l.cols}, out.data() + 1, ld, 0,
                   3);
        for (size_t k = 0; k < out.size(); ++k) CHECK(out[k] == Approx(portable[k]).epsilon(1e-5).margin(1e-5));
        // One row alone gives the same bits as in the batch (its 8-, 4-, 2- or 1-row tile).
        std::vector<float> alone(static_cast<size_t>(ld), -7.0f);
        const int64_t last = num_rows - 1;
        qgemm_avx2(l, QuantizedRows{paired.data() + last * l.cols, scale.data() + last * 3, sums.data() + last * 6, 1, l.cols},
                   alone.data() + 1, ld, 0, 3);
        for (int64_t k = 0; k < ld; ++k) CHECK(alone[k] == out[last * ld + k]);
      }
      if (avx512) {
        std::vector<float> out(portable.size(), -7.0f);
        qgemm_avx512(l, rows, out.data() + 1, ld, 0, 3);
        for (size_t k = 0; k < out.size(); ++k) CHECK(out[k] == Approx(portable[k]).epsilon(1e-5).margin(1e-5));
      }
      if (avx512) {  // the vector quantizer gives the portable one's quants
        std::vector<int16_t> q2(q.size());
        std::vector<float> scale2(scale.size());
        std::vector<int32_t> sums2(sums.size());
        quantize_rows_avx512(x.data(), num_rows, l.cols, q2.data(), scale2.data(), sums2.data());
        CHECK(q2 == q);
        CHECK(sums2 == sums);
      }
    }
  }
}

TEST_CASE("the AMX kernel equals the AVX-512 one bit for bit") {
  const bool amx = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-int8") &&
                   __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
                   modelbench::amx::request_tiles();
  if (!amx) {
    WARN("SKIPPED: this CPU has no AMX-INT8 (or the OS did not grant the tiles)");
    return;
  }
  std::mt19937 rng(11);
  for (const Format& f : kFormats) {
    // 1-15 rows: one short tile; 16, 17, 40: whole tiles and a padded one.
    for (int64_t num_rows : {1, 3, 5, 15, 16, 17, 40, 140}) {  // 140: two chunks of 8 tiles
      QuantLayout l = layout_of(f, 40, 128);
      const std::vector<uint8_t> data = random_layout(l, rng);
      l.data = data.data();
      std::vector<float> x(static_cast<size_t>(num_rows * l.cols));
      std::normal_distribution<float> normal;
      for (float& v : x) v = normal(rng);
      x[5] = 40.0f;  // an outlier: the block's other quants are small, their high bytes 0 or -1
      std::vector<int16_t> q(x.size());
      std::vector<float> scale(static_cast<size_t>(num_rows * l.blocks));
      std::vector<int32_t> sums(static_cast<size_t>(num_rows * l.blocks * 2));
      quantize_rows_avx512(x.data(), num_rows, l.cols, q.data(), scale.data(), sums.data());
      const int64_t padded = (num_rows + 15) / 16 * 16;
      std::vector<int8_t> hi(static_cast<size_t>(padded * l.cols), 99);
      std::vector<uint8_t> lo(hi.size(), 99);
      std::vector<float> dx(static_cast<size_t>(padded * (l.cols / l.group))), dx_sum(dx.size());
      QuantizedRows rows{q.data(), scale.data(), sums.data(), num_rows, l.cols};
      split_rows_amx(rows, l.group, hi.data(), lo.data(), dx.data(), dx_sum.data());
      for (size_t k = 0; k < q.size(); ++k) REQUIRE(256 * hi[k] + lo[k] == q[k]);
      for (size_t k = q.size(); k < hi.size(); ++k) REQUIRE((hi[k] == 0 && lo[k] == 0));
      const int64_t ld = l.rows + 2;
      std::vector<float> vector(static_cast<size_t>(num_rows * ld), -7.0f);
      qgemm_avx512(l, rows, vector.data() + 1, ld, 0, 3);
      rows.hi = hi.data();
      rows.lo = lo.data();
      rows.dx = dx.data();
      rows.dx_sum = dx_sum.data();
      std::vector<float> tiles(vector.size(), -7.0f);
      qgemm_amx(l, rows, tiles.data() + 1, ld, 0, 3);
      INFO("bits " << f.bits << " group " << f.group << " scale bytes " << f.scale_bytes << " rows " << num_rows);
      CHECK(std::memcmp(tiles.data(), vector.data(), vector.size() * sizeof(float)) == 0);
      // Groups split between calls (threads) give the same.
      std::vector<float> split(vector.size(), -7.0f);
      qgemm_amx(l, rows, split.data() + 1, ld, 0, 1);
      qgemm_amx(l, rows, split.data() + 1, ld, 1, 3);
      CHECK(std::memcmp(split.data(), vector.data(), vector.size() * sizeof(float)) == 0);
    }
  }
}
