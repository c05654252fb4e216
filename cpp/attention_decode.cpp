// The decode attention kernel: per block of the pool, each KV head's key
// and value rows are read once for all of its query heads (in registers for
// head_dim 64 or 128 with AVX-512, bf16 and fp16 rows widened to fp32 as
// they load; portable loops otherwise), with an online
// softmax. A block's rows of one KV head are contiguous, so each is one
// stream for the hardware prefetcher, started a block ahead.
#include "attention_decode.h"
#include "simd_bf16.h"

#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Core>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

namespace modelbench {
namespace {

// Vector helpers of the decode path over head_dim floats.
inline float dot(const float* a, const float* b, int64_t n) {
#if defined(__AVX512F__)
  if (n % 16 == 0) {
    __m512 sum = _mm512_mul_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(b));
    for (int64_t i = 16; i < n; i += 16) sum = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), sum);
    return _mm512_reduce_add_ps(sum);
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
// their sum in `sum`. One AVX-512 vector for a block of 16; Eigen otherwise.
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
// Measured on 32 sequences with scattered tables: 19 GB/s against 14 with
// no prefetch; prefetching whole blocks (the old layout's way) did no better.
constexpr int64_t kStreamStartLines = 4;
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

// Register-tiled decode kernels for a head_dim of 16 * HD16 over float32,
// bfloat16 or float16 pools (rows widened to fp32 as they are loaded): q
// rows (scores) or accumulator rows (values) of up to R query heads stay in
// registers for a whole block, while each key or value row is read once for
// them.
template <typename scalar_t>
struct DecodeTiles {
  // scores[g * block_size + j] = q[g] . key j, for g < group, j in [j_begin, j_end).
  void (*scores)(const float* q, const scalar_t* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                 float* scores, int64_t block_size, int64_t group);
  // acc[g] += sum_j p[g * block_size + j] * value j.
  void (*values)(const float* p, const scalar_t* values, int64_t row_stride, int64_t j_begin, int64_t j_end,
                 float* acc, int64_t block_size, int64_t group);
};

#if defined(__AVX512F__)

// 16 elements as fp32.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) { return load_bf16x16(p); }
inline __m512 load16(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

template <int R, int HD16, typename scalar_t>
inline void score_tile(const float* q, const scalar_t* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                       float* scores, int64_t block_size) {
  __m512 qv[R][HD16];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < HD16; ++c) qv[r][c] = _mm512_loadu_ps(q + (r * HD16 + c) * 16);
  for (int64_t j = j_begin; j < j_end; ++j) {
    const scalar_t* key = keys + j * row_stride;
    __m512 kv[HD16];
    for (int c = 0; c < HD16; ++c) kv[c] = load16(key + c * 16);
    for (int r = 0; r < R; ++r) {
      __m512 sum = _mm512_mul_ps(qv[r][0], kv[0]);
      for (int c = 1; c < HD16; ++c) sum = _mm512_fmadd_ps(qv[r][c], kv[c], sum);
      scores[r * block_size + j] = _mm512_reduce_add_ps(sum);
    }
  }
}

template <int R, int HD16, typename scalar_t>
inline void value_tile(const float* p, const scalar_t* values, int64_t row_stride, int64_t j_begin, int64_t j_end,
                       float* acc, int64_t block_size) {
  __m512 av[R][HD16];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < HD16; ++c) av[r][c] = _mm512_loadu_ps(acc + (r * HD16 + c) * 16);
  for (int64_t j = j_begin; j < j_end; ++j) {
    const scalar_t* value = values + j * row_stride;
    __m512 vv[HD16];
    for (int c = 0; c < HD16; ++c) vv[c] = load16(value + c * 16);
    for (int r = 0; r < R; ++r) {
      const __m512 pb = _mm512_set1_ps(p[r * block_size + j]);
      for (int c = 0; c < HD16; ++c) av[r][c] = _mm512_fmadd_ps(pb, vv[c], av[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < HD16; ++c) _mm512_storeu_ps(acc + (r * HD16 + c) * 16, av[r][c]);
}

// The group's rows in tiles of up to R (4 rows of 64 dims, or 2 of 128,
// keep 16 vectors in registers): a group of 3 is one tile of 3, not 3 of 1,
// so each key or value row is read once per tile.
template <int R, int HD16, typename scalar_t>
void scores_by_tiles(const float* q, const scalar_t* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                     float* scores, int64_t block_size, int64_t group) {
  for (int64_t g = 0; g < group; g += R) {
    const float* qg = q + g * HD16 * 16;
    float* sg = scores + g * block_size;
    switch (std::min<int64_t>(R, group - g)) {
      case 4: score_tile<R >= 4 ? 4 : 1, HD16, scalar_t>(qg, keys, row_stride, j_begin, j_end, sg, block_size); break;
      case 3: score_tile<R >= 3 ? 3 : 1, HD16, scalar_t>(qg, keys, row_stride, j_begin, j_end, sg, block_size); break;
      case 2: score_tile<2, HD16, scalar_t>(qg, keys, row_stride, j_begin, j_end, sg, block_size); break;
      default: score_tile<1, HD16, scalar_t>(qg, keys, row_stride, j_begin, j_end, sg, block_size); break;
    }
  }
}

template <int R, int HD16, typename scalar_t>
void values_by_tiles(const float* p, const scalar_t* values, int64_t row_stride, int64_t j_begin, int64_t j_end,
                     float* acc, int64_t block_size, int64_t group) {
  for (int64_t g = 0; g < group; g += R) {
    const float* pg = p + g * block_size;
    float* ag = acc + g * HD16 * 16;
    switch (std::min<int64_t>(R, group - g)) {
      case 4: value_tile<R >= 4 ? 4 : 1, HD16, scalar_t>(pg, values, row_stride, j_begin, j_end, ag, block_size); break;
      case 3: value_tile<R >= 3 ? 3 : 1, HD16, scalar_t>(pg, values, row_stride, j_begin, j_end, ag, block_size); break;
      case 2: value_tile<2, HD16, scalar_t>(pg, values, row_stride, j_begin, j_end, ag, block_size); break;
      default: value_tile<1, HD16, scalar_t>(pg, values, row_stride, j_begin, j_end, ag, block_size); break;
    }
  }
}

template <typename scalar_t>
constexpr DecodeTiles<scalar_t> kTiles64{scores_by_tiles<4, 4, scalar_t>, values_by_tiles<4, 4, scalar_t>};
template <typename scalar_t>
constexpr DecodeTiles<scalar_t> kTiles128{scores_by_tiles<2, 8, scalar_t>, values_by_tiles<2, 8, scalar_t>};

#endif

// The tiles for this dtype and head_dim, or nullptr for the portable loops.
template <typename scalar_t>
const DecodeTiles<scalar_t>* decode_tiles(int64_t head_dim) {
#if defined(__AVX512F__)
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
void decode_one(const q_t* q, const scalar_t* k_data, const scalar_t* v_data, const int32_t* table,
                int64_t key_begin, int64_t pos, int64_t kv_begin, int64_t kv_end, int64_t group,
                const KVLayout& layout, float scale, float* q_buf, float* acc, float* scores, q_t* out,
                const DecodePartial* partial) {
  const int64_t head_dim = layout.head_dim;
  const int64_t block_size = layout.block_size;
  const int64_t rows = (kv_end - kv_begin) * group;  // query heads; row r reads KV head kv_begin + r / group
  for (int64_t i = 0; i < rows * head_dim; ++i) q_buf[i] = static_cast<float>(q[i]) * scale;  // pre-scaled
  std::fill(acc, acc + rows * head_dim, 0.0f);
  float row_max[kMaxDecodeRows], row_sum[kMaxDecodeRows];
  std::fill(row_max, row_max + rows, -std::numeric_limits<float>::infinity());
  std::fill(row_sum, row_sum + rows, 0.0f);
  float row[kMaxHeadDim];  // one K or V row in fp32
  const DecodeTiles<scalar_t>* tiles = decode_tiles<scalar_t>(head_dim);
  const int64_t first_head = kv_begin * layout.head_stride;  // the range's first KV head within a block
  for (int64_t b0 = key_begin / block_size * block_size; b0 <= pos; b0 += block_size) {
    const int64_t j_begin = std::max<int64_t>(key_begin - b0, 0);
    const int64_t j_end = std::min<int64_t>(block_size, pos + 1 - b0);
    const int64_t block_offset = table[b0 / block_size] * layout.block_stride + first_head;
    if (b0 + block_size <= pos)  // the next block's streams, started early
      start_streams(k_data, v_data, table[b0 / block_size + 1] * layout.block_stride + first_head,
                    kv_end - kv_begin, layout.head_stride);
    if (tiles != nullptr) {  // head_dim of 64 or 128 with AVX-512: register tiles
      for (int64_t h = 0; h < kv_end - kv_begin; ++h)
        tiles->scores(q_buf + h * group * head_dim, k_data + block_offset + h * layout.head_stride, layout.row_stride,
                      j_begin, j_end, scores + h * group * block_size, block_size, group);
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
        tiles->values(scores + h * group * block_size, v_data + block_offset + h * layout.head_stride, layout.row_stride,
                      j_begin, j_end, acc + h * group * head_dim, block_size, group);
    } else {
      for (int64_t h = 0; h < kv_end - kv_begin; ++h) {
        const scalar_t* values = v_data + block_offset + h * layout.head_stride;
        for (int64_t j = j_begin; j < j_end; ++j) {
          const float* value = load_row(values + j * layout.row_stride, head_dim, row);
          for (int64_t g = 0; g < group; ++g) {
            const int64_t r = h * group + g;
            axpy(scores[r * block_size + j], value, acc + r * head_dim, head_dim);
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

// The (query, pool) dtypes paged attention dispatches: one dtype, or float32 queries over a bf16 or fp16 cache.
#define MODELBENCH_DECODE_ONE(Q, KV)                                                                             \
  template void decode_one<Q, KV>(const Q*, const KV*, const KV*, const int32_t*, int64_t, int64_t, int64_t,  \
                                  int64_t, int64_t, const KVLayout&, float, float*, float*, float*, Q*,     \
                                  const DecodePartial*);
MODELBENCH_DECODE_ONE(float, float)
MODELBENCH_DECODE_ONE(c10::BFloat16, c10::BFloat16)
MODELBENCH_DECODE_ONE(c10::Half, c10::Half)
MODELBENCH_DECODE_ONE(float, c10::BFloat16)
MODELBENCH_DECODE_ONE(float, c10::Half)
#undef MODELBENCH_DECODE_ONE

}  // namespace modelbench
