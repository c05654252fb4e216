// Paged attention kernels: the CPU Eigen kernel that reads K/V blocks from
// the pool through block tables (online softmax, GQA groups share each block
// read), and the ATen reference path used on other devices and by tests.
#include "attention.h"

// at::parallel_for owns the threads; Eigen must not start its own inside it.
#define EIGEN_DONT_PARALLELIZE
#include <ATen/Parallel.h>

#include <Eigen/Core>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace modelbench {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstRowMap = Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>;

// Queries per work item: enough rows for Eigen's GEMM to pay off, small
// enough that one long prefill still splits across threads.
constexpr int64_t kQueryChunk = 64;
// Key tiles of prefill work items span this many blocks (copied to fp32
// scratch); work items with fewer rows than kMinRowsForTiles (decodes) read
// one block at a time where it sits.
constexpr int64_t kTileBlocks = 4;
constexpr int64_t kMinRowsForTiles = 16;
// Query heads that one decode work item keeps on the stack.
constexpr int64_t kMaxDecodeRows = 64;
constexpr int64_t kMaxHeadDim = 512;

void check_inputs(const torch::Tensor& query, const torch::Tensor& key_pool,
                  const torch::Tensor& value_pool, const AttentionMetadata& metadata) {
  TORCH_CHECK(query.dim() == 3, "query must be [num_tokens, num_heads, head_dim], got ", query.sizes());
  TORCH_CHECK(key_pool.dim() == 4 && key_pool.sizes() == value_pool.sizes(),
              "key and value pools must both be [num_blocks, block_size, num_kv_heads, head_dim], got ",
              key_pool.sizes(), " and ", value_pool.sizes());
  TORCH_CHECK(query.size(2) == key_pool.size(3), "query head_dim ", query.size(2),
              " differs from the pool's ", key_pool.size(3));
  TORCH_CHECK(query.size(1) % key_pool.size(2) == 0, "num_heads ", query.size(1),
              " is not a multiple of num_kv_heads ", key_pool.size(2));
  TORCH_CHECK(query.scalar_type() == key_pool.scalar_type() &&
                  query.scalar_type() == value_pool.scalar_type(),
              "query, key and value pools must share a dtype, got ", query.scalar_type(), ", ",
              key_pool.scalar_type(), ", ", value_pool.scalar_type());
  const auto& m = metadata;
  TORCH_CHECK(m.context_lens.dim() == 1 && m.context_lens.scalar_type() == torch::kLong &&
                  m.context_lens.device().is_cpu(),
              "context_lens must be a 1-D int64 CPU tensor");
  TORCH_CHECK(m.query_start_loc.dim() == 1 && m.query_start_loc.scalar_type() == torch::kLong &&
                  m.query_start_loc.device().is_cpu() && m.query_start_loc.size(0) == m.num_seqs() + 1,
              "query_start_loc must be a [num_seqs + 1] int64 CPU tensor");
  TORCH_CHECK(m.block_tables.dim() == 2 && m.block_tables.scalar_type() == torch::kInt &&
                  m.block_tables.device().is_cpu() && m.block_tables.size(0) == m.num_seqs(),
              "block_tables must be a [num_seqs, max_blocks] int32 CPU tensor");
  TORCH_CHECK(m.query_start_loc[m.num_seqs()].item<int64_t>() == query.size(0),
              "query_start_loc ends at ", m.query_start_loc[m.num_seqs()].item<int64_t>(),
              " but there are ", query.size(0), " queries");
}

// Where one KV head's rows sit in a pool.
struct KVLayout {
  int64_t block_size;
  int64_t head_dim;
  int64_t row_stride;    // num_kv_heads * head_dim: between positions of a block
  int64_t block_stride;  // block_size * row_stride
};

// Positions [k0, k0 + num_rows) of one KV head as an fp32 matrix [num_rows,
// head_dim]. Rows within one float32 block are mapped where they sit in the
// pool; rows spanning several blocks, or of another dtype, are copied
// (converted) into `scratch`, which holds a few blocks, never a whole context.
template <typename scalar_t>
ConstRowMap kv_rows(const scalar_t* head_base, const int32_t* block_table, int64_t k0, int64_t num_rows,
                    const KVLayout& layout, float* scratch) {
  const int64_t first_block = k0 / layout.block_size;
  const int64_t offset = k0 % layout.block_size;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (offset + num_rows <= layout.block_size)
      return ConstRowMap(head_base + block_table[first_block] * layout.block_stride + offset * layout.row_stride,
                         num_rows, layout.head_dim, Eigen::OuterStride<>(layout.row_stride));
  }
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t pos = offset + r;  // relative to first_block's start
    const scalar_t* src = head_base + block_table[first_block + pos / layout.block_size] * layout.block_stride +
                          (pos % layout.block_size) * layout.row_stride;
    float* dst = scratch + r * layout.head_dim;
    for (int64_t d = 0; d < layout.head_dim; ++d) dst[d] = static_cast<float>(src[d]);
  }
  return ConstRowMap(scratch, num_rows, layout.head_dim, Eigen::OuterStride<>(layout.head_dim));
}

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

// Ask the cache for rows [0, num_rows) of head_dim elements, row_stride apart.
template <typename scalar_t>
inline void prefetch_rows(const scalar_t* first, int64_t num_rows, int64_t row_stride, int64_t head_dim) {
  const int64_t row_bytes = head_dim * static_cast<int64_t>(sizeof(scalar_t));
  for (int64_t r = 0; r < num_rows; ++r) {
    const char* row = reinterpret_cast<const char*>(first + r * row_stride);
    for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(row + b, 0, 2);
  }
}

// A K or V row as fp32: in place for float32, converted into `buf` otherwise.
inline const float* load_row(const float* src, int64_t /*n*/, float* /*buf*/) { return src; }
template <typename scalar_t>
inline const float* load_row(const scalar_t* src, int64_t n, float* buf) {
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<float>(src[i]);
  return buf;
}

// Register-tiled decode kernels for float32 pools and a head_dim of 16 *
// HD16: q rows (scores) or accumulator rows (values) of up to R query heads
// stay in registers for a whole block, while each key or value row is read
// once for them.
struct DecodeTiles {
  // scores[g * block_size + j] = q[g] . key j, for g < group, j in [j_begin, j_end).
  void (*scores)(const float* q, const float* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                 float* scores, int64_t block_size, int64_t group);
  // acc[g] += sum_j p[g * block_size + j] * value j.
  void (*values)(const float* p, const float* values, int64_t row_stride, int64_t j_begin, int64_t j_end,
                 float* acc, int64_t block_size, int64_t group);
};

#if defined(__AVX512F__)

template <int R, int HD16>
inline void score_tile(const float* q, const float* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                       float* scores, int64_t block_size) {
  __m512 qv[R][HD16];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < HD16; ++c) qv[r][c] = _mm512_loadu_ps(q + (r * HD16 + c) * 16);
  for (int64_t j = j_begin; j < j_end; ++j) {
    const float* key = keys + j * row_stride;
    __m512 kv[HD16];
    for (int c = 0; c < HD16; ++c) kv[c] = _mm512_loadu_ps(key + c * 16);
    for (int r = 0; r < R; ++r) {
      __m512 sum = _mm512_mul_ps(qv[r][0], kv[0]);
      for (int c = 1; c < HD16; ++c) sum = _mm512_fmadd_ps(qv[r][c], kv[c], sum);
      scores[r * block_size + j] = _mm512_reduce_add_ps(sum);
    }
  }
}

template <int R, int HD16>
inline void value_tile(const float* p, const float* values, int64_t row_stride, int64_t j_begin, int64_t j_end,
                       float* acc, int64_t block_size) {
  __m512 av[R][HD16];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < HD16; ++c) av[r][c] = _mm512_loadu_ps(acc + (r * HD16 + c) * 16);
  for (int64_t j = j_begin; j < j_end; ++j) {
    const float* value = values + j * row_stride;
    __m512 vv[HD16];
    for (int c = 0; c < HD16; ++c) vv[c] = _mm512_loadu_ps(value + c * 16);
    for (int r = 0; r < R; ++r) {
      const __m512 pb = _mm512_set1_ps(p[r * block_size + j]);
      for (int c = 0; c < HD16; ++c) av[r][c] = _mm512_fmadd_ps(pb, vv[c], av[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < HD16; ++c) _mm512_storeu_ps(acc + (r * HD16 + c) * 16, av[r][c]);
}

// The group's rows in tiles of R (4 rows of 64 dims, or 2 of 128, keep 16
// vectors in registers), then the rest.
template <int R, int HD16>
void scores_by_tiles(const float* q, const float* keys, int64_t row_stride, int64_t j_begin, int64_t j_end,
                     float* scores, int64_t block_size, int64_t group) {
  int64_t g = 0;
  for (; g + R <= group; g += R)
    score_tile<R, HD16>(q + g * HD16 * 16, keys, row_stride, j_begin, j_end, scores + g * block_size, block_size);
  for (; g < group; ++g)
    score_tile<1, HD16>(q + g * HD16 * 16, keys, row_stride, j_begin, j_end, scores + g * block_size, block_size);
}

template <int R, int HD16>
void values_by_tiles(const float* p, const float* values, int64_t row_stride, int64_t j_begin, int64_t j_end,
                     float* acc, int64_t block_size, int64_t group) {
  int64_t g = 0;
  for (; g + R <= group; g += R)
    value_tile<R, HD16>(p + g * block_size, values, row_stride, j_begin, j_end, acc + g * HD16 * 16, block_size);
  for (; g < group; ++g)
    value_tile<1, HD16>(p + g * block_size, values, row_stride, j_begin, j_end, acc + g * HD16 * 16, block_size);
}

constexpr DecodeTiles kTiles64{scores_by_tiles<4, 4>, values_by_tiles<4, 4>};
constexpr DecodeTiles kTiles128{scores_by_tiles<2, 8>, values_by_tiles<2, 8>};

#endif

// The tiles for this dtype and head_dim, or nullptr for the portable loops.
template <typename scalar_t>
const DecodeTiles* decode_tiles(int64_t head_dim) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (head_dim == 64) return &kTiles64;
    if (head_dim == 128) return &kTiles128;
  }
#endif
  (void)head_dim;
  return nullptr;
}

// One decode query position over its keys, for the query heads of KV
// heads [kv_begin, kv_end) (their `group` query heads each), reading K/V
// where they sit in the pool. Per block, every KV head's rows are read
// once and serve all of its query heads; the next block is prefetched, as
// blocks lie anywhere in the pool. No matrix library: at a handful of rows
// a GEMM call costs more than the arithmetic. Scratch (fp32): q_buf and
// acc [rows, head_dim], scores [rows, block_size], rows = heads of the range.
template <typename scalar_t>
void decode_one(const scalar_t* q, const scalar_t* k_data, const scalar_t* v_data, const int32_t* table,
                int64_t key_begin, int64_t pos, int64_t kv_begin, int64_t kv_end, int64_t group,
                const KVLayout& layout, float scale, float* q_buf, float* acc, float* scores, scalar_t* out) {
  const int64_t head_dim = layout.head_dim;
  const int64_t block_size = layout.block_size;
  const int64_t rows = (kv_end - kv_begin) * group;  // query heads; row r reads KV head kv_begin + r / group
  for (int64_t i = 0; i < rows * head_dim; ++i) q_buf[i] = static_cast<float>(q[i]) * scale;  // pre-scaled
  std::fill(acc, acc + rows * head_dim, 0.0f);
  float row_max[kMaxDecodeRows], row_sum[kMaxDecodeRows];
  std::fill(row_max, row_max + rows, -std::numeric_limits<float>::infinity());
  std::fill(row_sum, row_sum + rows, 0.0f);
  float row[kMaxHeadDim];  // one K or V row in fp32
  const DecodeTiles* tiles = decode_tiles<scalar_t>(head_dim);
  // The range's slice of a block: from KV head kv_begin, (kv_end - kv_begin) * head_dim elements per position.
  const int64_t slice_offset = kv_begin * head_dim;
  const int64_t slice_len = (kv_end - kv_begin) * head_dim;
  for (int64_t b0 = key_begin / block_size * block_size; b0 <= pos; b0 += block_size) {
    const int64_t j_begin = std::max<int64_t>(key_begin - b0, 0);
    const int64_t j_end = std::min<int64_t>(block_size, pos + 1 - b0);
    const int64_t block_offset = table[b0 / block_size] * layout.block_stride + slice_offset;
    if (b0 + block_size <= pos) {
      const int64_t next = table[b0 / block_size + 1] * layout.block_stride + slice_offset;
      prefetch_rows(k_data + next, block_size, layout.row_stride, slice_len);
      prefetch_rows(v_data + next, block_size, layout.row_stride, slice_len);
    }
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (tiles != nullptr)  // float32 pools, head_dim of 64 or 128: register tiles
        for (int64_t h = 0; h < kv_end - kv_begin; ++h)
          tiles->scores(q_buf + h * group * head_dim, k_data + block_offset + h * head_dim, layout.row_stride,
                        j_begin, j_end, scores + h * group * block_size, block_size, group);
    }
    if (tiles == nullptr) {
      for (int64_t j = j_begin; j < j_end; ++j) {  // scores[r * block_size + j]
        const scalar_t* keys = k_data + block_offset + j * layout.row_stride;
        for (int64_t h = 0; h < kv_end - kv_begin; ++h) {
          const float* key = load_row(keys + h * head_dim, head_dim, row);
          for (int64_t g = 0; g < group; ++g) {
            const int64_t r = h * group + g;
            scores[r * block_size + j] = dot(q_buf + r * head_dim, key, head_dim);
          }
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      Eigen::Map<Eigen::ArrayXf> sr(scores + r * block_size + j_begin, j_end - j_begin);
      const float block_max = std::max(row_max[r], sr.maxCoeff());
      const float alpha = std::exp(row_max[r] - block_max);  // 0 on the first block (max was -inf)
      sr = (sr - block_max).exp();  // Eigen's vectorised exp
      row_sum[r] = row_sum[r] * alpha + sr.sum();
      row_max[r] = block_max;
      if (alpha != 1.0f) scale_row(acc + r * head_dim, alpha, head_dim);
    }
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (tiles != nullptr)
        for (int64_t h = 0; h < kv_end - kv_begin; ++h)
          tiles->values(scores + h * group * block_size, v_data + block_offset + h * head_dim, layout.row_stride,
                        j_begin, j_end, acc + h * group * head_dim, block_size, group);
    }
    if (tiles == nullptr) {
      for (int64_t j = j_begin; j < j_end; ++j) {
        const scalar_t* values = v_data + block_offset + j * layout.row_stride;
        for (int64_t h = 0; h < kv_end - kv_begin; ++h) {
          const float* value = load_row(values + h * head_dim, head_dim, row);
          for (int64_t g = 0; g < group; ++g) {
            const int64_t r = h * group + g;
            axpy(scores[r * block_size + j], value, acc + r * head_dim, head_dim);
          }
        }
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float inv_sum = 1.0f / row_sum[r];  // > 0: a query always sees its own position
    for (int64_t d = 0; d < head_dim; ++d) out[r * head_dim + d] = static_cast<scalar_t>(acc[r * head_dim + d] * inv_sum);
  }
}

struct WorkItem {
  int64_t seq;
  int64_t kv_head;
  int64_t kv_head_end;  // decode items may take several KV heads: [kv_head, kv_head_end)
  int64_t query_begin;  // query index within the sequence
  int64_t query_end;
};

template <typename scalar_t>
void run_cpu_kernel(const torch::Tensor& query, const torch::Tensor& key_pool,
                    const torch::Tensor& value_pool, const AttentionMetadata& metadata, float scale,
                    int64_t sliding_window, torch::Tensor& out) {
  const int64_t num_heads = query.size(1);
  const int64_t head_dim = query.size(2);
  const int64_t block_size = key_pool.size(1);
  const int64_t num_kv_heads = key_pool.size(2);
  const int64_t group = num_heads / num_kv_heads;
  const KVLayout layout{block_size, head_dim, num_kv_heads * head_dim, block_size * num_kv_heads * head_dim};
  const int64_t max_blocks = metadata.block_tables.size(1);
  const int64_t* query_start = metadata.query_start_loc.data_ptr<int64_t>();
  const int64_t* context_lens = metadata.context_lens.data_ptr<int64_t>();
  const int32_t* block_tables = metadata.block_tables.data_ptr<int32_t>();
  const scalar_t* q_data = query.data_ptr<scalar_t>();      // [num_tokens, num_heads, head_dim]
  const scalar_t* k_data = key_pool.data_ptr<scalar_t>();   // [num_blocks, block_size, num_kv_heads, head_dim]
  const scalar_t* v_data = value_pool.data_ptr<scalar_t>();
  scalar_t* out_data = out.data_ptr<scalar_t>();            // [num_tokens, num_heads, head_dim]

  // The query heads of one KV head share every K/V block read, so a work
  // item takes a whole group and a chunk of queries.
  // Decodes take all KV heads of their sequence at once (whole block rows
  // read in order) when there are enough of them to keep every thread busy,
  // else one KV head each.
  int64_t num_decodes = 0;
  for (int64_t s = 0; s < metadata.num_seqs(); ++s) num_decodes += query_start[s + 1] - query_start[s] == 1;
  const bool whole_decodes = num_decodes >= 2 * at::get_num_threads() && num_heads <= kMaxDecodeRows;
  std::vector<WorkItem> items;
  for (int64_t s = 0; s < metadata.num_seqs(); ++s) {
    const int64_t num_queries = query_start[s + 1] - query_start[s];
    if (num_queries == 1 && whole_decodes) {
      items.push_back({s, 0, num_kv_heads, 0, 1});
      continue;
    }
    for (int64_t kv_head = 0; kv_head < num_kv_heads; ++kv_head)
      for (int64_t q0 = 0; q0 < num_queries; q0 += kQueryChunk)
        items.push_back({s, kv_head, kv_head + 1, q0, std::min(q0 + kQueryChunk, num_queries)});
  }

  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    RowMatrix q_rows;       // [rows, head_dim]: row i * group + j is query i, head kv_head * group + j
    RowMatrix scores;       // [rows, tile], then the tile's unnormalised probabilities
    RowMatrix acc;          // [rows, head_dim]: sum of probabilities times values
    Eigen::VectorXf row_max, row_sum;  // [rows]: online softmax running max and denominator
    std::vector<float> k_scratch(kTileBlocks * block_size * head_dim);  // [tile, head_dim]
    std::vector<float> v_scratch(kTileBlocks * block_size * head_dim);
    std::vector<float> decode_q(num_heads * head_dim), decode_acc(num_heads * head_dim);
    std::vector<float> decode_scores(num_heads * block_size);
    for (int64_t w = begin; w < end; ++w) {
      const WorkItem& item = items[w];
      const int64_t s = item.seq;
      const int64_t num_queries = item.query_end - item.query_begin;
      if (num_queries == 1 && (item.kv_head_end - item.kv_head) * group <= kMaxDecodeRows &&
          head_dim <= kMaxHeadDim) {  // a decode (or a one-token chunk)
        const int64_t pos = context_lens[s] - (query_start[s + 1] - query_start[s]) + item.query_begin;
        const int64_t key_begin = sliding_window > 0 ? std::max<int64_t>(0, pos - sliding_window + 1) : 0;
        const int64_t token = query_start[s] + item.query_begin;
        const int64_t offset = (token * num_heads + item.kv_head * group) * head_dim;
        decode_one(q_data + offset, k_data, v_data, block_tables + s * max_blocks, key_begin, pos, item.kv_head,
                   item.kv_head_end, group, layout, scale, decode_q.data(), decode_acc.data(),
                   decode_scores.data(), out_data + offset);
        continue;
      }
      const int64_t rows = num_queries * group;
      // The sequence's queries are its last positions.
      const int64_t first_pos =
          context_lens[s] - (query_start[s + 1] - query_start[s]) + item.query_begin;
      const int64_t last_pos = first_pos + num_queries - 1;
      const int64_t first_token = query_start[s] + item.query_begin;

      q_rows.resize(rows, head_dim);
      for (int64_t i = 0; i < num_queries; ++i)
        for (int64_t j = 0; j < group; ++j) {
          const scalar_t* src = q_data + ((first_token + i) * num_heads + item.kv_head * group + j) * head_dim;
          for (int64_t d = 0; d < head_dim; ++d) q_rows(i * group + j, d) = static_cast<float>(src[d]) * scale;
        }
      // Decodes read each block in place; prefill rows are many, so tiles of
      // several blocks make for fewer, larger matrix products.
      const int64_t tile = (rows >= kMinRowsForTiles ? kTileBlocks : 1) * block_size;
      scores.resize(rows, tile);
      acc.setZero(rows, head_dim);
      row_max.setConstant(rows, -std::numeric_limits<float>::infinity());
      row_sum.setZero(rows);

      const int64_t key_begin = sliding_window > 0 ? std::max<int64_t>(0, first_pos - sliding_window + 1) : 0;
      const int32_t* table = block_tables + s * max_blocks;
      // Tiles start on block boundaries; k0 is the position of a tile's first key.
      for (int64_t k0 = key_begin / block_size * block_size; k0 <= last_pos; k0 += tile) {
        const int64_t nb = std::min(tile, last_pos + 1 - k0);
        const ConstRowMap keys = kv_rows(k_data + item.kv_head * head_dim, table, k0, nb, layout, k_scratch.data());
        const ConstRowMap values = kv_rows(v_data + item.kv_head * head_dim, table, k0, nb, layout, v_scratch.data());
        auto block_scores = scores.leftCols(nb);  // [rows, nb]
        block_scores.noalias() = q_rows * keys.transpose();
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t pos = first_pos + r / group;
          const int64_t lo = sliding_window > 0 ? pos - sliding_window + 1 : 0;
          const int64_t j_begin = std::max<int64_t>(0, lo - k0);
          const int64_t j_end = std::min<int64_t>(nb, pos - k0 + 1);  // causal: keys up to pos
          auto row = scores.row(r).head(nb).array();  // [nb]
          if (j_begin >= j_end) {
            row.setZero();
            continue;
          }
          const float new_max = std::max(row_max[r], row.segment(j_begin, j_end - j_begin).maxCoeff());
          const float alpha = std::exp(row_max[r] - new_max);  // 0 on the first block (max was -inf)
          row = (row - new_max).exp();  // Eigen's vectorised exp
          row.head(j_begin).setZero();   // keys before the sliding window
          row.tail(nb - j_end).setZero();  // keys after the query (causal)
          const float sum = row.sum();
          row_sum[r] = row_sum[r] * alpha + sum;
          acc.row(r) *= alpha;
          row_max[r] = new_max;
        }
        acc.noalias() += block_scores * values;
      }

      for (int64_t i = 0; i < num_queries; ++i)
        for (int64_t j = 0; j < group; ++j) {
          const int64_t r = i * group + j;
          const float inv_sum = 1.0f / row_sum[r];  // > 0: a query always sees its own position
          scalar_t* dst = out_data + ((first_token + i) * num_heads + item.kv_head * group + j) * head_dim;
          for (int64_t d = 0; d < head_dim; ++d) dst[d] = static_cast<scalar_t>(acc(r, d) * inv_sum);
        }
    }
  });
}

}  // namespace

torch::Tensor paged_attention(const torch::Tensor& query, const torch::Tensor& key_pool,
                              const torch::Tensor& value_pool, const AttentionMetadata& metadata,
                              double scale, int64_t sliding_window) {
  if (query.device().is_cpu())
    return paged_attention_cpu(query, key_pool, value_pool, metadata, scale, sliding_window);
  return paged_attention_reference(query, key_pool, value_pool, metadata, scale, sliding_window);
}

torch::Tensor paged_attention_cpu(const torch::Tensor& query, const torch::Tensor& key_pool,
                                  const torch::Tensor& value_pool, const AttentionMetadata& metadata,
                                  double scale, int64_t sliding_window) {
  check_inputs(query, key_pool, value_pool, metadata);
  TORCH_CHECK(query.device().is_cpu() && key_pool.device().is_cpu() && value_pool.device().is_cpu(),
              "paged_attention_cpu needs CPU tensors");
  TORCH_CHECK(key_pool.is_contiguous() && value_pool.is_contiguous(), "KV pools must be contiguous");
  const torch::Tensor q = query.contiguous();
  const torch::Tensor tables = metadata.block_tables.contiguous();
  AttentionMetadata m{metadata.query_start_loc.contiguous(), metadata.context_lens.contiguous(), tables};
  torch::Tensor out = torch::empty_like(q);  // [num_tokens, num_heads, head_dim]
  const float s = static_cast<float>(scale);
  switch (q.scalar_type()) {
    case torch::kFloat32: run_cpu_kernel<float>(q, key_pool, value_pool, m, s, sliding_window, out); break;
    case torch::kBFloat16: run_cpu_kernel<c10::BFloat16>(q, key_pool, value_pool, m, s, sliding_window, out); break;
    case torch::kHalf: run_cpu_kernel<c10::Half>(q, key_pool, value_pool, m, s, sliding_window, out); break;
    default: TORCH_CHECK(false, "paged_attention_cpu supports float32, bfloat16 and float16, got ", q.scalar_type());
  }
  return out;
}

torch::Tensor paged_attention_reference(const torch::Tensor& query, const torch::Tensor& key_pool,
                                        const torch::Tensor& value_pool,
                                        const AttentionMetadata& metadata, double scale,
                                        int64_t sliding_window) {
  check_inputs(query, key_pool, value_pool, metadata);
  const int64_t num_kv_heads = key_pool.size(2);
  const int64_t head_dim = key_pool.size(3);
  const int64_t block_size = key_pool.size(1);
  const int64_t group = query.size(1) / num_kv_heads;
  const auto key_rows = key_pool.reshape({-1, num_kv_heads, head_dim});    // [num_slots, num_kv_heads, head_dim]
  const auto value_rows = value_pool.reshape({-1, num_kv_heads, head_dim});
  const auto long_cpu = torch::TensorOptions().dtype(torch::kLong);
  const auto long_dev = long_cpu.device(query.device());
  torch::Tensor out = torch::empty_like(query);  // [num_tokens, num_heads, head_dim]
  for (int64_t s = 0; s < metadata.num_seqs(); ++s) {
    const int64_t start = metadata.query_start_loc[s].item<int64_t>();
    const int64_t num_queries = metadata.query_start_loc[s + 1].item<int64_t>() - start;
    const int64_t context_len = metadata.context_lens[s].item<int64_t>();
    if (num_queries == 0) continue;
    // Slot of every position: block_tables[s][p / block_size] * block_size + p % block_size.
    const auto positions = torch::arange(context_len, long_cpu);  // [context_len]
    const auto blocks = metadata.block_tables[s].to(torch::kLong).index_select(0, positions.div(block_size, "floor"));
    const auto slots = (blocks * block_size + positions.remainder(block_size)).to(query.device());
    // [context_len, num_heads, head_dim]: each KV head repeated for its query heads.
    const auto keys = key_rows.index_select(0, slots).to(torch::kFloat32).repeat_interleave(group, 1);
    const auto values = value_rows.index_select(0, slots).to(torch::kFloat32).repeat_interleave(group, 1);
    const auto q = query.narrow(0, start, num_queries).to(torch::kFloat32);  // [num_queries, num_heads, head_dim]
    auto scores = torch::einsum("qhd,khd->hqk", {q, keys}) * scale;          // [num_heads, num_queries, context_len]
    const auto query_pos = torch::arange(context_len - num_queries, context_len, long_dev).unsqueeze(1);
    const auto key_pos = torch::arange(context_len, long_dev).unsqueeze(0);
    auto hidden = key_pos > query_pos;  // [num_queries, context_len]
    if (sliding_window > 0) hidden = hidden.logical_or(key_pos <= query_pos - sliding_window);
    scores.masked_fill_(hidden, -std::numeric_limits<float>::infinity());
    const auto probs = torch::softmax(scores, -1);
    out.narrow(0, start, num_queries).copy_(torch::einsum("hqk,khd->qhd", {probs, values}));
  }
  return out;
}

}  // namespace modelbench
