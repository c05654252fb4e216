// Paged attention on the CPU: the work plan (decodes to attention_decode,
// prefill chunks to Eigen tiles over K/V blocks read through block tables,
// online softmax, GQA groups sharing each block read), and the ATen
// reference path used on other devices and by tests.
#include "kernels/attention.h"
#include "kernels/attention_decode.h"
#include "kernels/hadamard.h"

// at::parallel_for owns the threads; Eigen must not start its own inside it.
#define EIGEN_DONT_PARALLELIZE
#include <ATen/Parallel.h>

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
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

void check_inputs(const torch::Tensor& query, const torch::Tensor& key_pool,
                  const torch::Tensor& value_pool, const AttentionMetadata& metadata, const KVRowScales& kv_scales) {
  TORCH_CHECK(query.dim() == 3, "query must be [num_tokens, num_heads, head_dim], got ", query.sizes());
  TORCH_CHECK(key_pool.dim() == 4 && key_pool.sizes() == value_pool.sizes(),
              "key and value pools must both be [num_blocks, num_kv_heads, block_size, head_dim], got ",
              key_pool.sizes(), " and ", value_pool.sizes());
  TORCH_CHECK(query.size(2) == key_pool.size(3), "query head_dim ", query.size(2),
              " differs from the pool's ", key_pool.size(3));
  TORCH_CHECK(query.size(1) % key_pool.size(1) == 0, "num_heads ", query.size(1),
              " is not a multiple of num_kv_heads ", key_pool.size(1));
  TORCH_CHECK(key_pool.scalar_type() == value_pool.scalar_type() &&
                  (key_pool.scalar_type() == query.scalar_type() || query.scalar_type() == torch::kFloat32),
              "the key and value pools must share a dtype, the query's or (a float32 query) bfloat16, "
              "float16 or int8, got query ", query.scalar_type(), ", pools ", key_pool.scalar_type(), " and ",
              value_pool.scalar_type());
  const bool int8_pools = key_pool.scalar_type() == torch::kChar;
  TORCH_CHECK(int8_pools == kv_scales.defined(),
              int8_pools ? "int8 KV pools need their row scales (KVRowScales)" : "row scales are for int8 KV pools only");
  if (int8_pools) {
    const std::vector<int64_t> scale_shape{key_pool.size(0), key_pool.size(1), key_pool.size(2)};
    TORCH_CHECK(kv_scales.value.defined() && kv_scales.key.sizes() == scale_shape &&
                    kv_scales.value.sizes() == scale_shape && kv_scales.key.scalar_type() == torch::kFloat32 &&
                    kv_scales.value.scalar_type() == torch::kFloat32,
                "the row scales of int8 pools must be float32 [num_blocks, num_kv_heads, block_size] = ",
                scale_shape, ", got ", kv_scales.key.sizes(), " and ",
                kv_scales.value.defined() ? kv_scales.value.sizes() : c10::IntArrayRef{});
  }
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
  const int64_t last_query = m.query_start_loc.contiguous().data_ptr<int64_t>()[m.num_seqs()];
  TORCH_CHECK(last_query == query.size(0), "query_start_loc ends at ", last_query,
              " but there are ", query.size(0), " queries");
}

// Positions [k0, k0 + num_rows) of one KV head as an fp32 matrix [num_rows,
// head_dim]. Rows within one float32 block are mapped where they sit in the
// pool; rows spanning several blocks, or of another dtype, are copied
// (converted; int8 rows times their scale, `scale_base` being the head's
// first row scale, int8 keys read from their pairs) into `scratch`, which
// holds a few blocks, never a whole context.
template <typename scalar_t>
ConstRowMap kv_rows(const scalar_t* head_base, const float* scale_base, const int32_t* block_table, int64_t k0,
                    int64_t num_rows, const KVLayout& layout, float* scratch, bool pair_major = false) {
  const int64_t first_block = k0 / layout.block_size;
  const int64_t offset = k0 % layout.block_size;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (offset + num_rows <= layout.block_size)
      return ConstRowMap(head_base + block_table[first_block] * layout.block_stride + offset * layout.row_stride,
                         num_rows, layout.head_dim, Eigen::OuterStride<>(layout.row_stride));
  }
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t pos = offset + r;  // relative to first_block's start
    const int64_t block_start = block_table[first_block + pos / layout.block_size] * layout.block_stride;
    const int64_t j = pos % layout.block_size, row = block_start + j * layout.row_stride;
    const scalar_t* src = head_base + row;
    float* dst = scratch + r * layout.head_dim;
    if constexpr (std::is_same_v<scalar_t, int8_t>) {
      const float row_scale = scale_base[row / layout.head_dim];
      if (pair_major) {
        for (int64_t d = 0; d < layout.head_dim; ++d)
          dst[d] = static_cast<float>(head_base[block_start + int8_key_offset(j, d, layout.block_size)]) * row_scale;
      } else {
        for (int64_t d = 0; d < layout.head_dim; ++d) dst[d] = static_cast<float>(src[d]) * row_scale;
      }
    } else {
      (void)pair_major;
      (void)scale_base;
      for (int64_t d = 0; d < layout.head_dim; ++d) dst[d] = static_cast<float>(src[d]);
    }
  }
  return ConstRowMap(scratch, num_rows, layout.head_dim, Eigen::OuterStride<>(layout.head_dim));
}

struct WorkItem {
  int64_t seq;
  int64_t kv_head;
  int64_t kv_head_end;  // decode items may take several KV heads: [kv_head, kv_head_end)
  int64_t query_begin;  // query index within the sequence
  int64_t query_end;
  // A decode split over its keys: keys [key_lo, key_hi), result in partial
  // slot `partial` (-1: not split, the item takes all of its keys).
  int64_t key_lo = 0;
  int64_t key_hi = 0;
  int64_t partial = -1;
};

// A split decode's parts, merged after the parallel work: partial slots
// [first, first + count) hold one KV head's query rows of one token.
struct SplitDecode {
  int64_t token;
  int64_t kv_head;
  int64_t first;
  int64_t count;
};

using AlignedFloats = std::vector<float, Eigen::aligned_allocator<float>>;

// Keys per part of a split decode, at least (4 blocks of 16).
constexpr int64_t kMinSplitKeys = 64;

template <typename scalar_t, typename kv_t>
void run_cpu_kernel(const torch::Tensor& query, const torch::Tensor& key_pool,
                    const torch::Tensor& value_pool, const KVRowScales& kv_scales,
                    const AttentionMetadata& metadata, float scale, int64_t sliding_window, torch::Tensor& out) {
  const int64_t num_heads = query.size(1);
  const int64_t head_dim = query.size(2);
  const int64_t num_kv_heads = key_pool.size(1);
  const int64_t block_size = key_pool.size(2);
  const int64_t group = num_heads / num_kv_heads;
  const KVLayout layout{block_size, head_dim, head_dim, block_size * head_dim, num_kv_heads * block_size * head_dim};
  const int64_t max_blocks = metadata.block_tables.size(1);
  const int64_t* query_start = metadata.query_start_loc.data_ptr<int64_t>();
  const int64_t* context_lens = metadata.context_lens.data_ptr<int64_t>();
  const int32_t* block_tables = metadata.block_tables.data_ptr<int32_t>();
  // [num_tokens, num_heads, head_dim], heads contiguous within a token; tokens
  // q_stride apart (a view of the qkv projection's rows needs no copy).
  const scalar_t* q_data = query.data_ptr<scalar_t>();
  const int64_t q_stride = query.stride(0);
  const kv_t* k_data = key_pool.data_ptr<kv_t>();   // [num_blocks, num_kv_heads, block_size, head_dim]
  const kv_t* v_data = value_pool.data_ptr<kv_t>();
  // An int8 pool's row scales, [num_blocks, num_kv_heads, block_size]; nullptr for float pools.
  const float* k_scales = kv_scales.defined() ? kv_scales.key.data_ptr<float>() : nullptr;
  const float* v_scales = kv_scales.defined() ? kv_scales.value.data_ptr<float>() : nullptr;
  const bool rotated_keys = std::is_same_v<kv_t, int8_t> && int8_keys_rotated(head_dim);
  scalar_t* out_data = out.data_ptr<scalar_t>();            // [num_tokens, num_heads, head_dim]

  // The query heads of one KV head share every K/V block read, so a work
  // item takes a whole group and a chunk of queries. Decodes take all KV
  // heads of their sequence at once (whole block rows read in order) when
  // there are enough of them to keep every thread busy, else one KV head
  // each, and when even those are fewer than two per thread (batch 1: 3 KV
  // heads on 2 threads), each KV head's keys split into parts of whole
  // blocks, merged afterwards (as flash-decoding does on GPUs).
  const int64_t threads = at::get_num_threads();
  int64_t num_decodes = 0;
  for (int64_t s = 0; s < metadata.num_seqs(); ++s) num_decodes += query_start[s + 1] - query_start[s] == 1;
  const bool whole_decodes = num_decodes >= 2 * threads && num_heads <= kMaxDecodeRows;
  const bool tiny_decodes = group <= kMaxDecodeRows && head_dim <= kMaxHeadDim;  // decode_one takes them
  const int64_t wanted_parts = (2 * threads + num_decodes * num_kv_heads - 1) / std::max<int64_t>(1, num_decodes * num_kv_heads);
  std::vector<WorkItem> items;
  std::vector<SplitDecode> splits;
  int64_t num_partials = 0;
  for (int64_t s = 0; s < metadata.num_seqs(); ++s) {
    const int64_t num_queries = query_start[s + 1] - query_start[s];
    if (num_queries == 1 && whole_decodes) {
      items.push_back({s, 0, num_kv_heads, 0, 1});
      continue;
    }
    if (num_queries == 1 && tiny_decodes && wanted_parts > 1) {
      const int64_t pos = context_lens[s] - 1;
      const int64_t key_begin = sliding_window > 0 ? std::max<int64_t>(0, pos - sliding_window + 1) : 0;
      const int64_t first_block = key_begin / block_size, num_blocks = pos / block_size - first_block + 1;
      const int64_t parts = std::min(wanted_parts, (pos + 1 - key_begin) / kMinSplitKeys);
      if (parts > 1) {
        for (int64_t kv_head = 0; kv_head < num_kv_heads; ++kv_head) {
          splits.push_back({query_start[s], kv_head, num_partials, parts});
          for (int64_t c = 0; c < parts; ++c) {
            WorkItem item{s, kv_head, kv_head + 1, 0, 1};
            item.key_lo = std::max(key_begin, (first_block + num_blocks * c / parts) * block_size);
            item.key_hi = std::min(pos + 1, (first_block + num_blocks * (c + 1) / parts) * block_size);
            item.partial = num_partials++;
            items.push_back(item);
          }
        }
        continue;
      }
    }
    for (int64_t kv_head = 0; kv_head < num_kv_heads; ++kv_head)
      for (int64_t q0 = 0; q0 < num_queries; q0 += kQueryChunk)
        items.push_back({s, kv_head, kv_head + 1, q0, std::min(q0 + kQueryChunk, num_queries)});
  }
  // Split decodes' parts: [slot, group, head_dim] sums and [slot, group] maxima and denominators.
  std::vector<float> partial_acc(num_partials * group * head_dim), partial_max(num_partials * group),
      partial_sum(num_partials * group);

  // Items are taken one at a time from a shared counter: a thread that
  // finishes early (a shorter sequence, a core the host slowed) takes the
  // next, instead of waiting at the end for a fixed half.
  const auto num_items = static_cast<int64_t>(items.size());
  std::atomic<int64_t> next_item{0};
  at::parallel_for(0, std::min(threads, num_items), 1, [&](int64_t, int64_t) {
    RowMatrix q_rows;       // [rows, head_dim]: row i * group + j is query i, head kv_head * group + j
    RowMatrix scores;       // [rows, tile], then the tile's unnormalised probabilities
    RowMatrix acc;          // [rows, head_dim]: sum of probabilities times values
    Eigen::VectorXf row_max, row_sum;  // [rows]: online softmax running max and denominator
    // Every buffer aligned to Eigen's packet: Eigen peels a reduction's
    // unaligned head off as scalars, so a malloc'd buffer (16-byte aligned,
    // 32 or not by chance) would give another thread other bits.
    AlignedFloats k_scratch(kTileBlocks * block_size * head_dim);  // [tile, head_dim]
    AlignedFloats v_scratch(kTileBlocks * block_size * head_dim);
    AlignedFloats decode_q(num_heads * head_dim), decode_acc(num_heads * head_dim);
    AlignedFloats decode_scores(num_heads * block_size);
    for (int64_t w = next_item.fetch_add(1, std::memory_order_relaxed); w < num_items;
         w = next_item.fetch_add(1, std::memory_order_relaxed)) {
      const WorkItem& item = items[w];
      const int64_t s = item.seq;
      const int64_t num_queries = item.query_end - item.query_begin;
      // The sequence's queries are its last positions.
      const int64_t first_pos =
          context_lens[s] - (query_start[s + 1] - query_start[s]) + item.query_begin;
      const int64_t first_token = query_start[s] + item.query_begin;
      if (num_queries == 1 && (item.kv_head_end - item.kv_head) * group <= kMaxDecodeRows &&
          head_dim <= kMaxHeadDim) {  // a decode (or a one-token chunk)
        const int64_t offset = (first_token * num_heads + item.kv_head * group) * head_dim;  // in out
        const scalar_t* q_item = q_data + first_token * q_stride + item.kv_head * group * head_dim;
        if (item.partial >= 0) {  // one part of a split decode: keys [key_lo, key_hi)
          const DecodePartial part{partial_acc.data() + item.partial * group * head_dim,
                                   partial_max.data() + item.partial * group, partial_sum.data() + item.partial * group};
          decode_one(q_item, k_data, v_data, k_scales, v_scales, block_tables + s * max_blocks, item.key_lo,
                     item.key_hi - 1,
                     item.kv_head, item.kv_head_end, group, layout, scale, decode_q.data(), decode_acc.data(),
                     decode_scores.data(), out_data + offset, &part);
          continue;
        }
        const int64_t key_begin = sliding_window > 0 ? std::max<int64_t>(0, first_pos - sliding_window + 1) : 0;
        decode_one(q_item, k_data, v_data, k_scales, v_scales, block_tables + s * max_blocks, key_begin, first_pos,
                   item.kv_head, item.kv_head_end, group, layout, scale, decode_q.data(), decode_acc.data(),
                   decode_scores.data(), out_data + offset);
        continue;
      }
      const int64_t rows = num_queries * group;
      const int64_t last_pos = first_pos + num_queries - 1;

      q_rows.resize(rows, head_dim);
      for (int64_t i = 0; i < num_queries; ++i)
        for (int64_t j = 0; j < group; ++j) {
          const scalar_t* src = q_data + (first_token + i) * q_stride + (item.kv_head * group + j) * head_dim;
          for (int64_t d = 0; d < head_dim; ++d) q_rows(i * group + j, d) = static_cast<float>(src[d]) * scale;
          if (rotated_keys) hadamard_rotate(q_rows.row(i * group + j).data(), head_dim);  // as the keys are
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
        const int64_t head_rows = item.kv_head * block_size;  // the head's first row scale in a block
        const ConstRowMap keys = kv_rows(k_data + item.kv_head * layout.head_stride,
                                         k_scales == nullptr ? nullptr : k_scales + head_rows, table, k0, nb, layout,
                                         k_scratch.data(), /*pair_major=*/k_scales != nullptr);
        const ConstRowMap values = kv_rows(v_data + item.kv_head * layout.head_stride,
                                           v_scales == nullptr ? nullptr : v_scales + head_rows, table, k0, nb,
                                           layout, v_scratch.data());
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

  // Each split decode's parts, rescaled to the largest max and summed.
  for (const SplitDecode& split : splits)
    for (int64_t r = 0; r < group; ++r) {
      float max = -std::numeric_limits<float>::infinity();
      for (int64_t c = 0; c < split.count; ++c) max = std::max(max, partial_max[(split.first + c) * group + r]);
      float sum = 0.0f;
      float merged[kMaxHeadDim] = {};
      for (int64_t c = 0; c < split.count; ++c) {
        const int64_t slot = (split.first + c) * group + r;
        const float weight = std::exp(partial_max[slot] - max);
        sum += partial_sum[slot] * weight;
        const float* part = partial_acc.data() + slot * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) merged[d] += part[d] * weight;
      }
      scalar_t* dst = out_data + (split.token * num_heads + split.kv_head * group + r) * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) dst[d] = static_cast<scalar_t>(merged[d] / sum);
    }
}

}  // namespace

torch::Tensor paged_attention(const torch::Tensor& query, const torch::Tensor& key_pool,
                              const torch::Tensor& value_pool, const AttentionMetadata& metadata,
                              double scale, int64_t sliding_window, const KVRowScales& kv_scales) {
  if (query.device().is_cpu())
    return paged_attention_cpu(query, key_pool, value_pool, metadata, scale, sliding_window, kv_scales);
  return paged_attention_reference(query, key_pool, value_pool, metadata, scale, sliding_window, kv_scales);
}

torch::Tensor paged_attention_cpu(const torch::Tensor& query, const torch::Tensor& key_pool,
                                  const torch::Tensor& value_pool, const AttentionMetadata& metadata,
                                  double scale, int64_t sliding_window, const KVRowScales& kv_scales) {
  check_inputs(query, key_pool, value_pool, metadata, kv_scales);
  TORCH_CHECK(query.device().is_cpu() && key_pool.device().is_cpu() && value_pool.device().is_cpu(),
              "paged_attention_cpu needs CPU tensors");
  TORCH_CHECK(key_pool.is_contiguous() && value_pool.is_contiguous(), "KV pools must be contiguous");
  TORCH_CHECK(!kv_scales.defined() || (kv_scales.key.is_contiguous() && kv_scales.value.is_contiguous() &&
                                       kv_scales.key.device().is_cpu() && kv_scales.value.device().is_cpu()),
              "the KV pools' row scales must be contiguous CPU tensors");
  // Tokens may lie any distance apart; within one, heads and dims must be packed.
  const torch::Tensor q = query.stride(2) == 1 && query.stride(1) == query.size(2) ? query : query.contiguous();
  const torch::Tensor tables = metadata.block_tables.contiguous();
  AttentionMetadata m{metadata.query_start_loc.contiguous(), metadata.context_lens.contiguous(), tables};
  torch::Tensor out = torch::empty(q.sizes(), q.options());  // [num_tokens, num_heads, head_dim], contiguous
  const float s = static_cast<float>(scale);
  const auto kv = key_pool.scalar_type();
  switch (q.scalar_type()) {
    case torch::kFloat32:  // a float32 model may keep its cache in bf16, fp16 or int8 (kv_cache_dtype)
      if (kv == torch::kChar)
        run_cpu_kernel<float, int8_t>(q, key_pool, value_pool, kv_scales, m, s, sliding_window, out);
      else if (kv == torch::kBFloat16)
        run_cpu_kernel<float, c10::BFloat16>(q, key_pool, value_pool, kv_scales, m, s, sliding_window, out);
      else if (kv == torch::kHalf)
        run_cpu_kernel<float, c10::Half>(q, key_pool, value_pool, kv_scales, m, s, sliding_window, out);
      else
        run_cpu_kernel<float, float>(q, key_pool, value_pool, kv_scales, m, s, sliding_window, out);
      break;
    case torch::kBFloat16:
      run_cpu_kernel<c10::BFloat16, c10::BFloat16>(q, key_pool, value_pool, kv_scales, m, s, sliding_window, out);
      break;
    case torch::kHalf: run_cpu_kernel<c10::Half, c10::Half>(q, key_pool, value_pool, kv_scales, m, s, sliding_window, out); break;
    default: TORCH_CHECK(false, "paged_attention_cpu supports float32, bfloat16 and float16, got ", q.scalar_type());
  }
  return out;
}

void write_int8_kv_rows(const torch::Tensor& rows, const int64_t* slots, const torch::Tensor& pool,
                        const torch::Tensor& pool_scales, bool keys) {
  TORCH_CHECK(rows.dim() == 3 && rows.scalar_type() == torch::kFloat32 && rows.stride(2) == 1,
              "int8 KV rows must be [num_tokens, num_kv_heads, head_dim] float32 with packed rows");
  const int64_t num_tokens = rows.size(0), heads = rows.size(1), head_dim = rows.size(2);
  const int64_t block_size = pool.size(2);
  TORCH_CHECK(head_dim % 2 == 0, "an int8 KV cache needs an even head_dim, got ", head_dim);
  const bool rotate = keys && int8_keys_rotated(head_dim);
  const float* src = rows.data_ptr<float>();
  int8_t* dst = pool.data_ptr<int8_t>();
  float* scales = pool_scales.data_ptr<float>();
  float rotated[kMaxRotatedDim];
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t block = slots[t] / block_size, offset = slots[t] % block_size;
    for (int64_t h = 0; h < heads; ++h) {
      const float* x = src + t * rows.stride(0) + h * rows.stride(1);
      if (rotate) {
        std::copy(x, x + head_dim, rotated);
        hadamard_rotate(rotated, head_dim);
        x = rotated;
      }
      float absmax = 0.0f;
#pragma omp simd reduction(max : absmax)
      for (int64_t d = 0; d < head_dim; ++d) absmax = std::max(absmax, std::fabs(x[d]));
      const float inverse = absmax > 0.0f ? 127.0f / absmax : 0.0f;
      const int64_t row = (block * heads + h) * block_size + offset;
      int8_t q[kMaxRotatedDim];
      // |x * inverse| <= 127 but for rounding; the bounds (as selects, so the loop
      // vectorizes) keep a row holding infinities in range.
#pragma omp simd
      for (int64_t d = 0; d < head_dim; ++d) {
        float r = std::nearbyint(x[d] * inverse);
        r = r > 127.0f ? 127.0f : r;
        r = r < -127.0f ? -127.0f : r;
        q[d] = static_cast<int8_t>(static_cast<int32_t>(r));
      }
      if (keys) {  // pair-major within the block's KV head
        int8_t* head_block = dst + (block * heads + h) * block_size * head_dim;
        for (int64_t p = 0; p < head_dim / 2; ++p) {
          head_block[int8_key_offset(offset, 2 * p, block_size)] = q[2 * p];
          head_block[int8_key_offset(offset, 2 * p + 1, block_size)] = q[2 * p + 1];
        }
      } else {
        std::copy(q, q + head_dim, dst + row * head_dim);
      }
      scales[row] = absmax / 127.0f;
    }
  }
}

torch::Tensor int8_keys_by_row(const torch::Tensor& key_pool) {
  const int64_t blocks = key_pool.size(0), heads = key_pool.size(1), block_size = key_pool.size(2),
                head_dim = key_pool.size(3);
  return key_pool.view({blocks, heads, head_dim / 2, block_size, 2})
      .permute({0, 1, 3, 2, 4})
      .reshape({blocks, heads, block_size, head_dim});  // a copy: the pair-major bytes read by row
}

torch::Tensor hadamard_matrix(int64_t n, const torch::Device& device) {
  TORCH_CHECK(n >= 1 && (n & (n - 1)) == 0, "a Hadamard matrix needs a power-of-two size, got ", n);
  torch::Tensor h = torch::ones({1, 1});
  while (h.size(0) < n) h = torch::cat({torch::cat({h, h}, 1), torch::cat({h, -h}, 1)}, 0);  // Sylvester
  return (h / std::sqrt(static_cast<double>(n))).to(device);
}

torch::Tensor paged_attention_reference(const torch::Tensor& query, const torch::Tensor& key_pool,
                                        const torch::Tensor& value_pool,
                                        const AttentionMetadata& metadata, double scale,
                                        int64_t sliding_window, const KVRowScales& kv_scales) {
  check_inputs(query, key_pool, value_pool, metadata, kv_scales);
  const int64_t num_kv_heads = key_pool.size(1);
  const int64_t block_size = key_pool.size(2);
  const int64_t head_dim = key_pool.size(3);
  const int64_t group = query.size(1) / num_kv_heads;
  const auto long_cpu = torch::TensorOptions().dtype(torch::kLong);
  const auto long_dev = long_cpu.device(query.device());
  torch::Tensor out = torch::empty_like(query);  // [num_tokens, num_heads, head_dim]
  // An int8 pool's keys read by row, and the rotation that gives them back (once for all sequences).
  const torch::Tensor key_rows = kv_scales.defined() ? int8_keys_by_row(key_pool) : key_pool;
  const torch::Tensor unrotate = kv_scales.defined() && int8_keys_rotated(head_dim)
                                     ? hadamard_matrix(head_dim, key_pool.device())
                                     : torch::Tensor();
  for (int64_t s = 0; s < metadata.num_seqs(); ++s) {
    const int64_t start = metadata.query_start_loc[s].item<int64_t>();
    const int64_t num_queries = metadata.query_start_loc[s + 1].item<int64_t>() - start;
    const int64_t context_len = metadata.context_lens[s].item<int64_t>();
    if (num_queries == 0) continue;
    // The sequence's blocks, [num_used, num_kv_heads, block_size, head_dim], as rows by position:
    // [context_len, num_heads, head_dim], each KV head repeated for its query heads.
    const int64_t num_used = (context_len + block_size - 1) / block_size;
    const auto blocks = metadata.block_tables[s].narrow(0, 0, num_used).to(torch::kLong).to(query.device());
    auto rows = [&](const torch::Tensor& pool, const torch::Tensor& row_scales) {
      torch::Tensor used = pool.index_select(0, blocks).to(torch::kFloat32);  // [num_used, num_kv_heads, block_size, head_dim]
      if (row_scales.defined()) used = used * row_scales.index_select(0, blocks).unsqueeze(-1);  // int8 rows
      return used.permute({0, 2, 1, 3}).reshape({-1, num_kv_heads, head_dim})
          .narrow(0, 0, context_len).repeat_interleave(group, 1);
    };
    auto keys = rows(key_rows, kv_scales.key);
    if (unrotate.defined()) keys = torch::matmul(keys, unrotate);  // H (H k) = k
    const auto values = rows(value_pool, kv_scales.value);
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
