// The decode attention kernel: per block of the pool, each KV head's key
// and value rows are read once for all of its query heads (in registers for
// head_dim 64 or 128 with AVX-512 or AVX2 (simd.h), bf16, fp16 and int8
// rows widened to fp32 as they load, an int8 value row's scale applied to
// its probabilities; portable loops otherwise; an int8 pool's keys are
// scored a block at a time, attention_int8.h), with an online
// softmax. A block's rows of one KV head are contiguous, so each is one
// stream for the hardware prefetcher, started a block ahead.
#include "kernels/attention_decode.h"
#include "kernels/attention_int8.h"
#include "kernels/hadamard.h"
#include "kernels/simd.h"

#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <c10/util/Exception.h>
#include <type_traits>

namespace modelbench {
namespace {

// Vector helpers of the decode path over head_dim floats.
inline float dot(const float* a, const float* b, int64_t n) {
#if defined(MODELBENCH_SIMD)
  if (n % simd::kLanes == 0) {
    simd::vfloat sum = simd::mul(simd::load(a), simd::load(b));
    for (int64_t i = simd::kLanes; i < n; i += simd::kLanes) sum = simd::fmadd(simd::load(a + i), simd::load(b + i), sum);
    return simd::reduce_add(sum);
  }
#endif
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

inline void axpy(float alpha, const float* x, float* y, int64_t n) {  // y += alpha * x
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

inline void scale_row(float* y, float alpha, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] *= alpha;
}

// One row's block of scores, [j_begin, j_end): the new running max (at
// least `running_max`), each score replaced by exp(score - new max), and
// their sum in `sum`. One AVX-512 vector for a block of 16 (AVX2: two, for
// whole blocks); Eigen otherwise.
inline float exp_block(float* s, int64_t j_begin, int64_t j_end, float running_max, float& sum) {
#if defined(__AVX512F__)
  if (j_end <= 16) {
    const __mmask16 valid = static_cast<__mmask16>(((1u << j_end) - 1) & ~((1u << j_begin) - 1));
    const __m512 x = _mm512_mask_loadu_ps(_mm512_set1_ps(-std::numeric_limits<float>::infinity()), valid, s);
    const float block_max = std::max(running_max, _mm512_reduce_max_ps(x));
    const __m512 p = Eigen::internal::pexp(_mm512_sub_ps(x, _mm512_set1_ps(block_max)));  // 0 where invalid
    sum = _mm512_reduce_add_ps(p);
    _mm512_mask_storeu_ps(s, valid, p);
    return block_max;
  }
#elif defined(MODELBENCH_SIMD)
  if (j_begin == 0 && j_end == 16) {  // a whole block of 16: two AVX2 vectors
    const simd::vfloat x0 = simd::load(s), x1 = simd::load(s + 8);
    const float block_max = std::max(running_max, simd::reduce_max(simd::max(x0, x1)));
    const simd::vfloat m = simd::set1(block_max);
    const simd::vfloat p0 = Eigen::internal::pexp(simd::sub(x0, m)), p1 = Eigen::internal::pexp(simd::sub(x1, m));
    sum = simd::reduce_add(simd::add(p0, p1));
    simd::store(s, p0);
    simd::store(s + 8, p1);
    return block_max;
  }
#endif
  Eigen::Map<Eigen::ArrayXf> sr(s + j_begin, j_end - j_begin);
  const float block_max = std::max(running_max, sr.maxCoeff());
  sr = (sr - block_max).exp();  // Eigen's vectorised exp
  sum = sr.sum();
  return block_max;
}

// Blocks lie anywhere in the pool, and the hardware prefetcher does not
// follow a stream into another page: touching the first lines of each KV
// head's rows in the next block (K and V) starts its streams a block early.
// Measurements for this and kAhead: docs/performance.md, "Measurements
// behind the kernels' constants".
constexpr int64_t kStreamStartLines = 4;
// Blocks from the one being read to the one prefetched row by row alongside
// it, into L2 (measured ahead of L1; 1 to 6 blocks ahead were within the noise).
constexpr int64_t kAhead = 3;
template <typename scalar_t>
inline void start_streams(const scalar_t* k_data, const scalar_t* v_data, int64_t offset, int64_t num_heads,
                          int64_t head_stride) {
  for (int64_t h = 0; h < num_heads; ++h) {
    const char* k = reinterpret_cast<const char*>(k_data + offset + h * head_stride);
    const char* v = reinterpret_cast<const char*>(v_data + offset + h * head_stride);
    for (int64_t line = 0; line < kStreamStartLines; ++line) {
      __builtin_prefetch(k + 64 * line, 0, 2);
      __builtin_prefetch(v + 64 * line, 0, 2);
    }
  }
}

// A K or V row as fp32: in place for float32, converted into `buf` otherwise.
inline const float* load_row(const float* src, int64_t /*n*/, float* /*buf*/) { return src; }
template <typename scalar_t>
inline const float* load_row(const scalar_t* src, int64_t n, float* buf) {
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<float>(src[i]);
  return buf;
}

// Register-tiled decode kernels for a head_dim of HDV vectors (simd.h) over
// float32, bfloat16 or float16 pools (rows widened to fp32 as they are
// loaded): q rows (scores) or accumulator rows (values) stay in registers
// for a whole block, while each key or value row is read from memory once
// for all of its KV head's query heads.
template <typename scalar_t>
struct DecodeTiles {
  // scores[g * block_size + j] = q[g] . key j, for g < group, j in [j_begin, j_end).
  // `ahead`: the same rows of a later block (or nullptr), prefetched a row
  // for each row read, so its fetch from memory overlaps this block's work.
  // (int8 keys are pair-major and never come here: int8_block_scores.)
  void (*scores)(const float* q, const scalar_t* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                 float* scores, int64_t block_size, int64_t group, const scalar_t* ahead);
  // acc[g] += sum_j p[g * block_size + j] * value j; `rs`: an int8 pool's
  // row scales of the block (rs[j]: row j's), nullptr otherwise.
  void (*values)(const float* p, const scalar_t* values, const float* rs, int64_t row_stride, int64_t j_begin,
                 int64_t j_end, float* acc, int64_t block_size, int64_t group, const scalar_t* ahead);
};

// An int8 row is its values times its scale.
template <typename scalar_t>
constexpr bool kScaledRows = std::is_same_v<scalar_t, int8_t>;

#if defined(MODELBENCH_SIMD)

using simd::kLanes;
using simd::vfloat;

// Row j of `ahead` (HDV vectors of scalar_t, rows row_stride apart) into
// L2: one prefetch per cache line. Software prefetch a few blocks ahead,
// row by row, keeps the core's misses in flight while it computes; without
// it, a block's fetch and its arithmetic add up.
template <int HDV, typename scalar_t>
inline void prefetch_row(const scalar_t* ahead, int64_t j, int64_t row_stride) {
  if (ahead == nullptr) return;
  constexpr int64_t kRowBytes = HDV * kLanes * static_cast<int64_t>(sizeof(scalar_t));
  const char* row = reinterpret_cast<const char*>(ahead + j * row_stride);
  for (int64_t offset = 0; offset < kRowBytes; offset += 64) __builtin_prefetch(row + offset, 0, 2);  // to L2
}

#if defined(__AVX512F__)

// Scores of up to R query heads (q rows of HDV vectors, in registers)
// against each key row of a block, read once.
template <int R, int HDV, typename scalar_t>
inline void score_tile(const float* q, const scalar_t* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                       float* scores, int64_t block_size, const scalar_t* ahead) {
  vfloat qv[R][HDV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < HDV; ++c) qv[r][c] = simd::load(q + (r * HDV + c) * kLanes);
  // Four keys at a time, their four dot products reduced together (one
  // reduction instead of four: the reductions were most of the work); a
  // last group of fewer is padded with zero rows, so that every key's score
  // comes from the same operations wherever the range starts or ends.
  for (int64_t j = j_begin; j < j_end; j += 4) {
    const int64_t n = std::min<int64_t>(4, j_end - j);
    vfloat kv[4][HDV];
    for (int64_t i = 0; i < 4; ++i) {
      if (i < n) {
        prefetch_row<HDV>(ahead, j + i, row_stride);
        const scalar_t* key = keys + (j + i) * row_stride;
        for (int c = 0; c < HDV; ++c) kv[i][c] = simd::load(key + c * kLanes);
      } else {
        for (int c = 0; c < HDV; ++c) kv[i][c] = simd::zero();
      }
    }
    for (int r = 0; r < R; ++r) {
      vfloat sum[4];
      for (int i = 0; i < 4; ++i) {
        sum[i] = simd::mul(qv[r][0], kv[i][0]);
        for (int c = 1; c < HDV; ++c) sum[i] = simd::fmadd(qv[r][c], kv[i][c], sum[i]);
      }
      alignas(16) float four[4];
      _mm_store_ps(four, simd::reduce_add4(sum[0], sum[1], sum[2], sum[3]));
      for (int64_t i = 0; i < n; ++i) scores[r * block_size + j + i] = four[i];
    }
  }
}

// The group's rows in tiles of up to R (R * HDV = 16 vectors of q: 4 rows
// of 64 dims or 2 of 128 with AVX-512): a group of 3 is one tile of 3, not
// 3 of 1, so each key or value row is read from memory once per tile.
template <int R, int HDV, typename scalar_t>
void scores_by_tiles(const float* q, const scalar_t* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                     float* scores, int64_t block_size, int64_t group, const scalar_t* ahead) {
  for (int64_t g = 0; g < group; g += R, ahead = nullptr) {  // the first tile prefetches
    const float* qg = q + g * HDV * kLanes;
    float* sg = scores + g * block_size;
    switch (std::min<int64_t>(R, group - g)) {
      case 4: score_tile<R >= 4 ? 4 : 1, HDV, scalar_t>(qg, keys, row_stride, j_begin, j_end, sg, block_size, ahead); break;
      case 3: score_tile<R >= 3 ? 3 : 1, HDV, scalar_t>(qg, keys, row_stride, j_begin, j_end, sg, block_size, ahead); break;
      case 2: score_tile<2, HDV, scalar_t>(qg, keys, row_stride, j_begin, j_end, sg, block_size, ahead); break;
      default: score_tile<1, HDV, scalar_t>(qg, keys, row_stride, j_begin, j_end, sg, block_size, ahead); break;
    }
  }
}

#else

// AVX2 has 16 registers: one query head at a time, its q in HDV registers,
// keys four at a time into four accumulators reduced together (one
// reduction per four dot products). The block's keys (4 KiB at 64 dims)
// are read from memory for the group's first head and from L1 after.
template <int HDV, typename scalar_t>
inline void score_row(const float* q, const scalar_t* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                      float* scores, const scalar_t* ahead) {
  vfloat qv[HDV];
  for (int c = 0; c < HDV; ++c) qv[c] = simd::load(q + c * kLanes);
  const auto dot_key = [&](int64_t j) {
    const scalar_t* key = keys + j * row_stride;
    vfloat sum = simd::mul(qv[0], simd::load(key));
    for (int c = 1; c < HDV; ++c) sum = simd::fmadd(qv[c], simd::load(key + c * kLanes), sum);
    return sum;
  };
  int64_t j = j_begin;
  for (; j + 4 <= j_end; j += 4) {
    for (int64_t i = 0; i < 4; ++i) prefetch_row<HDV>(ahead, j + i, row_stride);
    _mm_storeu_ps(scores + j, simd::reduce_add4(dot_key(j), dot_key(j + 1), dot_key(j + 2), dot_key(j + 3)));
  }
  for (; j < j_end; ++j) {
    prefetch_row<HDV>(ahead, j, row_stride);
    scores[j] = simd::reduce_add(dot_key(j));
  }
}

// A group of query heads over bf16 or fp16 keys: the block's keys widened
// to fp32 once, into a buffer in L1, which every head then reads (a widening
// costs two instructions a vector; done once instead of once per head). The
// same fp32 values in the same order: scores are what the per-head loop gives.
constexpr int64_t kWidenRows = 32;
template <int HDV, typename scalar_t>
void scores_by_rows(const float* q, const scalar_t* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                    float* scores, int64_t block_size, int64_t group, const scalar_t* ahead) {
  if constexpr (!std::is_same_v<scalar_t, float>) {
    if (group > 1) {
      alignas(64) float wide[kWidenRows * HDV * kLanes];
      for (int64_t j0 = j_begin; j0 < j_end; j0 += kWidenRows) {
        const int64_t j1 = std::min(j_end, j0 + kWidenRows);
        for (int64_t j = j0; j < j1; ++j) {
          prefetch_row<HDV>(ahead, j, row_stride);
          const scalar_t* key = keys + j * row_stride;
          float* dst = wide + (j - j0) * HDV * kLanes;
          for (int c = 0; c < HDV; ++c) simd::store(dst + c * kLanes, simd::load(key + c * kLanes));
        }
        // wide's row j - j0 is key j (chunks start a multiple of 4 keys from
        // j_begin: the same groups of four as without the buffer)
        for (int64_t g = 0; g < group; ++g)
          score_row<HDV, float>(q + g * HDV * kLanes, wide, HDV * kLanes, 0, j1 - j0, scores + g * block_size + j0,
                                nullptr);
      }
      return;
    }
  }
  for (int64_t g = 0; g < group; ++g, ahead = nullptr)  // the first row prefetches
    score_row<HDV>(q + g * HDV * kLanes, keys, row_stride, j_begin, j_end, scores + g * block_size, ahead);
}

#endif

// acc[r, :NV vectors] += sum_j p[r * block_size + j] * value j[:NV vectors]
// for up to R query heads: one stripe of the head's dims, whose R * NV
// accumulators stay in registers; acc rows are acc_stride apart.
template <int R, int NV, int HDV, typename scalar_t>
inline void value_tile(const float* p, const scalar_t* values, const float* rs, int64_t row_stride, int64_t j_begin,
                       int64_t j_end, float* acc, int64_t acc_stride, int64_t block_size, const scalar_t* ahead) {
  vfloat av[R][NV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) av[r][c] = simd::load(acc + r * acc_stride + c * kLanes);
  for (int64_t j = j_begin; j < j_end; ++j) {
    prefetch_row<HDV>(ahead, j, row_stride);
    const scalar_t* value = values + j * row_stride;
    vfloat pb[R];
    for (int r = 0; r < R; ++r) {
      if constexpr (kScaledRows<scalar_t>)
        pb[r] = simd::set1(p[r * block_size + j] * rs[j]);
      else
        pb[r] = simd::set1(p[r * block_size + j]);
    }
    for (int c = 0; c < NV; ++c) {
      const vfloat vv = simd::load(value + c * kLanes);
      for (int r = 0; r < R; ++r) av[r][c] = simd::fmadd(pb[r], vv, av[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) simd::store(acc + r * acc_stride + c * kLanes, av[r][c]);
}

// A value tile of R rows over all HDV vectors of a head, in stripes whose
// accumulators fit the registers (AVX-512: the whole head; AVX2, 64 dims:
// 2 or 4 stripes, each value row read again from L1).
template <int R, int HDV, typename scalar_t>
inline void value_rows(const float* p, const scalar_t* values, const float* rs, int64_t row_stride, int64_t j_begin,
                       int64_t j_end, float* acc, int64_t block_size, const scalar_t* ahead) {
  constexpr int NV = std::min(HDV, simd::floor_pow2(std::max(1, simd::kRegisters * 3 / 4 / R)));
  for (int c = 0; c < HDV; c += NV, ahead = nullptr)  // the first stripe prefetches whole rows
    value_tile<R, NV, HDV>(p, values + c * kLanes, rs, row_stride, j_begin, j_end, acc + c * kLanes, HDV * kLanes,
                           block_size, ahead);
}

template <int R, int HDV, typename scalar_t>
void values_by_tiles(const float* p, const scalar_t* values, const float* rs, int64_t row_stride, int64_t j_begin,
                     int64_t j_end, float* acc, int64_t block_size, int64_t group, const scalar_t* ahead) {
  for (int64_t g = 0; g < group; g += R, ahead = nullptr) {  // the first tile prefetches
    const float* pg = p + g * block_size;
    float* ag = acc + g * HDV * kLanes;
    switch (std::min<int64_t>(R, group - g)) {
      case 4: value_rows<R >= 4 ? 4 : 1, HDV, scalar_t>(pg, values, rs, row_stride, j_begin, j_end, ag, block_size, ahead); break;
      case 3: value_rows<R >= 3 ? 3 : 1, HDV, scalar_t>(pg, values, rs, row_stride, j_begin, j_end, ag, block_size, ahead); break;
      case 2: value_rows<2, HDV, scalar_t>(pg, values, rs, row_stride, j_begin, j_end, ag, block_size, ahead); break;
      default: value_rows<1, HDV, scalar_t>(pg, values, rs, row_stride, j_begin, j_end, ag, block_size, ahead); break;
    }
  }
}

#if defined(__AVX512F__)
template <typename scalar_t>
constexpr DecodeTiles<scalar_t> kTiles64{scores_by_tiles<4, 4, scalar_t>, values_by_tiles<4, 4, scalar_t>};
template <typename scalar_t>
constexpr DecodeTiles<scalar_t> kTiles128{scores_by_tiles<2, 8, scalar_t>, values_by_tiles<2, 8, scalar_t>};
#else
template <typename scalar_t>
constexpr DecodeTiles<scalar_t> kTiles64{scores_by_rows<8, scalar_t>, values_by_tiles<4, 8, scalar_t>};
template <typename scalar_t>
constexpr DecodeTiles<scalar_t> kTiles128{scores_by_rows<16, scalar_t>, values_by_tiles<2, 16, scalar_t>};
#endif

#endif

// The tiles for this dtype and head_dim, or nullptr for the portable loops.
template <typename scalar_t>
const DecodeTiles<scalar_t>* decode_tiles(int64_t head_dim) {
#if defined(MODELBENCH_SIMD)
  if (head_dim == 64) return &kTiles64<scalar_t>;
  if (head_dim == 128) return &kTiles128<scalar_t>;
#endif
  (void)head_dim;
  return nullptr;
}

}  // namespace

// See attention_decode.h. No matrix library: at a handful of rows a GEMM
// call costs more than the arithmetic.
template <typename q_t, typename scalar_t>
void decode_one(const q_t* q, const scalar_t* k_data, const scalar_t* v_data, const float* k_scales,
                const float* v_scales, const int32_t* table,
                int64_t key_begin, int64_t pos, int64_t kv_begin, int64_t kv_end, int64_t group,
                const KVLayout& layout, float scale, float* q_buf, float* acc, float* scores, q_t* out,
                const DecodePartial* partial) {
  const int64_t head_dim = layout.head_dim;
  const int64_t block_size = layout.block_size;
  const int64_t rows = (kv_end - kv_begin) * group;  // query heads; row r reads KV head kv_begin + r / group
  for (int64_t i = 0; i < rows * head_dim; ++i) q_buf[i] = static_cast<float>(q[i]) * scale;  // pre-scaled
  // An int8 pool: its keys are H k, so the queries become H q, then int16 rows.
  alignas(64) int16_t q16[kScaledRows<scalar_t> ? kMaxDecodeRows * kMaxInt8QueryDim : 1];
  float qs[kScaledRows<scalar_t> ? kMaxDecodeRows : 1];
  if constexpr (kScaledRows<scalar_t>) {
    TORCH_CHECK(head_dim <= kMaxInt8QueryDim, "an int8 KV cache takes head_dim up to ", kMaxInt8QueryDim, ", got ",
                head_dim);
    if (int8_keys_rotated(head_dim))
      for (int64_t r = 0; r < rows; ++r) hadamard_rotate(q_buf + r * head_dim, head_dim);
    int16_queries(q_buf, rows, head_dim, q16, qs);
  }
  std::fill(acc, acc + rows * head_dim, 0.0f);
  float row_max[kMaxDecodeRows], row_sum[kMaxDecodeRows];
  std::fill(row_max, row_max + rows, -std::numeric_limits<float>::infinity());
  std::fill(row_sum, row_sum + rows, 0.0f);
  alignas(64) float row[kMaxHeadDim];  // one K or V row in fp32
  const DecodeTiles<scalar_t>* tiles = decode_tiles<scalar_t>(head_dim);
  const int64_t first_head = kv_begin * layout.head_stride;  // the range's first KV head within a block
  const int64_t first_block = key_begin / block_size;
  for (int64_t b0 = first_block * block_size; b0 <= pos; b0 += block_size) {
    const int64_t j_begin = std::max<int64_t>(key_begin - b0, 0);
    const int64_t j_end = std::min<int64_t>(block_size, pos + 1 - b0);
    const int64_t block = b0 / block_size;
    const int64_t block_offset = table[block] * layout.block_stride + first_head;
    // Blocks kAhead on are prefetched row by row as this one is read (the
    // tiles' `ahead`); the range's first kAhead blocks, which nothing read
    // before them, and its last ones get their streams started a block early.
    const bool ahead_ok = (block + kAhead) * block_size <= pos;
    const int64_t ahead_offset = ahead_ok ? table[block + kAhead] * layout.block_stride + first_head : 0;
    if ((!ahead_ok || block < first_block + kAhead) && b0 + block_size <= pos)
      start_streams(k_data, v_data, table[block + 1] * layout.block_stride + first_head, kv_end - kv_begin,
                    layout.head_stride);
    // An int8 pool's row scales of this block, per KV head block_size apart
    // (one cache line of 16); the block kAhead on gets its lines fetched now.
    const float* k_rs = nullptr;
    const float* v_rs = nullptr;
    if constexpr (kScaledRows<scalar_t>) {
      k_rs = k_scales + block_offset / head_dim;
      v_rs = v_scales + block_offset / head_dim;
      if (ahead_ok)
        for (int64_t h = 0; h < kv_end - kv_begin; ++h) {
          __builtin_prefetch(k_scales + ahead_offset / head_dim + h * block_size, 0, 2);
          __builtin_prefetch(v_scales + ahead_offset / head_dim + h * block_size, 0, 2);
        }
      for (int64_t h = 0; h < kv_end - kv_begin; ++h)  // pair-major keys: a block's scores at once
        int8_block_scores(q16 + h * group * head_dim, qs + h * group, k_data + block_offset + h * layout.head_stride,
                          k_rs + h * block_size, head_dim, group, block_size, scores + h * group * block_size,
                          ahead_ok ? k_data + ahead_offset + h * layout.head_stride : nullptr);
    } else if (tiles != nullptr) {  // head_dim of 64 or 128 with AVX-512 or AVX2: register tiles
      for (int64_t h = 0; h < kv_end - kv_begin; ++h)
        tiles->scores(q_buf + h * group * head_dim, k_data + block_offset + h * layout.head_stride, layout.row_stride,
                      j_begin, j_end, scores + h * group * block_size, block_size, group,
                      ahead_ok ? k_data + ahead_offset + h * layout.head_stride : nullptr);
    } else {
      for (int64_t h = 0; h < kv_end - kv_begin; ++h) {  // scores[r * block_size + j]
        const scalar_t* keys = k_data + block_offset + h * layout.head_stride;
        for (int64_t j = j_begin; j < j_end; ++j) {
          const float* key = load_row(keys + j * layout.row_stride, head_dim, row);
          for (int64_t g = 0; g < group; ++g) {
            const int64_t r = h * group + g;
            scores[r * block_size + j] = dot(q_buf + r * head_dim, key, head_dim);
          }
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      float block_sum = 0.0f;
      const float block_max = exp_block(scores + r * block_size, j_begin, j_end, row_max[r], block_sum);
      const float alpha = std::exp(row_max[r] - block_max);  // 0 on the first block (max was -inf)
      row_sum[r] = row_sum[r] * alpha + block_sum;
      row_max[r] = block_max;
      if (alpha != 1.0f) scale_row(acc + r * head_dim, alpha, head_dim);
    }
    if (tiles != nullptr) {
      for (int64_t h = 0; h < kv_end - kv_begin; ++h)
        tiles->values(scores + h * group * block_size, v_data + block_offset + h * layout.head_stride,
                      v_rs == nullptr ? nullptr : v_rs + h * block_size, layout.row_stride,
                      j_begin, j_end, acc + h * group * head_dim, block_size, group,
                      ahead_ok ? v_data + ahead_offset + h * layout.head_stride : nullptr);
    } else {
      for (int64_t h = 0; h < kv_end - kv_begin; ++h) {
        const scalar_t* values = v_data + block_offset + h * layout.head_stride;
        for (int64_t j = j_begin; j < j_end; ++j) {
          const float* value = load_row(values + j * layout.row_stride, head_dim, row);
          const float row_scale = v_rs == nullptr ? 1.0f : v_rs[h * block_size + j];
          for (int64_t g = 0; g < group; ++g) {
            const int64_t r = h * group + g;
            axpy(scores[r * block_size + j] * row_scale, value, acc + r * head_dim, head_dim);
          }
        }
      }
    }
  }
  if (partial != nullptr) {
    std::copy(acc, acc + rows * head_dim, partial->acc);
    std::copy(row_max, row_max + rows, partial->max);
    std::copy(row_sum, row_sum + rows, partial->sum);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float inv_sum = 1.0f / row_sum[r];  // > 0: a query always sees its own position
    for (int64_t d = 0; d < head_dim; ++d) out[r * head_dim + d] = static_cast<q_t>(acc[r * head_dim + d] * inv_sum);
  }
}

// The (query, pool) dtypes paged attention dispatches: one dtype, or float32 queries over a bf16, fp16 or int8 cache.
#define MODELBENCH_DECODE_ONE(Q, KV)                                                                             \
  template void decode_one<Q, KV>(const Q*, const KV*, const KV*, const float*, const float*, const int32_t*,  \
                                  int64_t, int64_t, int64_t,                                                  \
                                  int64_t, int64_t, const KVLayout&, float, float*, float*, float*, Q*,     \
                                  const DecodePartial*);
MODELBENCH_DECODE_ONE(float, float)
MODELBENCH_DECODE_ONE(c10::BFloat16, c10::BFloat16)
MODELBENCH_DECODE_ONE(c10::Half, c10::Half)
MODELBENCH_DECODE_ONE(float, c10::BFloat16)
MODELBENCH_DECODE_ONE(float, c10::Half)
MODELBENCH_DECODE_ONE(float, int8_t)
#undef MODELBENCH_DECODE_ONE

}  // namespace modelbench
