// The decode path of CPU paged attention: one query position over its
// sequence's keys, for the query heads of a range of KV heads, reading K/V
// where they sit in the pool (attention.cpp plans the work items).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace modelbench {

// Where one KV head's rows sit in a pool.
struct KVLayout {
  int64_t block_size;
  int64_t head_dim;
  int64_t row_stride;    // head_dim: between positions of one KV head in a block
  int64_t head_stride;   // block_size * head_dim: between KV heads of a block
  int64_t block_stride;  // num_kv_heads * head_stride: between blocks
};

// Query heads that one decode work item keeps on the stack, and the largest head_dim.
constexpr int64_t kMaxDecodeRows = 64;
constexpr int64_t kMaxHeadDim = 512;

// An unnormalised decode result over part of a sequence's keys, merged
// with the other parts' afterwards: per query head row, the sum of
// exp(score - max) times values (acc [rows, head_dim]), the max, and the sum
// of exp(score - max).
struct DecodePartial {
  float* acc;
  float* max;
  float* sum;
};

// Attention of the query at position `pos` (q: [rows, head_dim], rows =
// (kv_end - kv_begin) * group query heads in order) over keys [key_begin,
// pos] of KV heads [kv_begin, kv_end): k_data and v_data are the layer's
// pools, table the sequence's block table. Online softmax in fp32 per
// block. An int8 pool (scalar_t int8_t) comes with its row scales,
// k_scales and v_scales (KVRowScales's data: a row's scale sits at its
// element offset in the pool divided by head_dim); float pools pass nullptr.
// Scratch (fp32): q_buf and acc [rows, head_dim], scores [rows, block_size].
// Writes out: [rows, head_dim]. Needs rows <= kMaxDecodeRows and
// head_dim <= kMaxHeadDim. With `partial`, keys [key_begin, pos] are one
// part of the query's keys (pos need not be its position): the result goes
// to *partial, unnormalised, and out is not written. Defined for queries and pools of one dtype
// (float, c10::BFloat16, c10::Half) and for float queries over
// c10::BFloat16, c10::Half or int8_t pools.
template <typename q_t, typename scalar_t>
void decode_one(const q_t* q, const scalar_t* k_data, const scalar_t* v_data, const float* k_scales,
                const float* v_scales, const int32_t* table,
                int64_t key_begin, int64_t pos, int64_t kv_begin, int64_t kv_end, int64_t group,
                const KVLayout& layout, float scale, float* q_buf, float* acc, float* scores, q_t* out,
                const DecodePartial* partial = nullptr);

}  // namespace modelbench
