// Paged attention: queries of a flat token batch attend over K/V that sit in
// the KV pool's blocks, reached through each sequence's block table. On CPU
// an Eigen kernel reads the blocks from the pool (no gather of whole
// contexts into new tensors); elsewhere an ATen reference path (gather +
// matmul + softmax) runs, and tests compare the two.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace modelbench {

// Where each sequence's queries and keys are. All tensors live on the CPU:
// the kernels read them on the host to plan the work.
struct AttentionMetadata {
  // [num_seqs + 1] int64: sequence s owns query rows [query_start_loc[s], query_start_loc[s + 1]).
  torch::Tensor query_start_loc;
  // [num_seqs] int64: sequence s has keys at positions [0, context_lens[s]); its
  // queries are its last positions, [context_lens[s] - num_queries, context_lens[s]).
  torch::Tensor context_lens;
  // [num_seqs, max_blocks_per_seq] int32: position p of sequence s lives in
  // block block_tables[s][p / block_size]; entries past the context are unused.
  torch::Tensor block_tables;

  int64_t num_seqs() const { return context_lens.size(0); }
};

// An int8 KV pool's scales: key and value, each [num_blocks, num_kv_heads,
// block_size] float32 beside the pool, one per row (a KV head's head_dim
// values at one position): the row's values are its int8s times its scale.
// Undefined (the default) for float pools.
// Its keys are stored rotated, H k, when head_dim is a power of two
// (hadamard.h: H is the normalized Walsh-Hadamard matrix; the kernels
// rotate the queries alike, so the scores are q . k), and pair-major within
// a block (hadamard.h, int8_key_offset); values row-major as float pools.
struct KVRowScales {
  torch::Tensor key;
  torch::Tensor value;

  bool defined() const { return key.defined(); }
};

// An int8 pool's write on the CPU: token t's rows (rows [num_tokens,
// num_kv_heads, head_dim] float32, each row packed) quantized into slot
// slots[t] of pool [num_blocks, num_kv_heads, block_size, head_dim] int8,
// their scales into pool_scales [num_blocks, num_kv_heads, block_size]: s =
// max |x| / 127 (0 for a row of zeros), q = round(x / s), half to even.
// `keys`: each row is first rotated by the Hadamard transform (a
// power-of-two head_dim) and stored pair-major (KVRowScales).
void write_int8_kv_rows(const torch::Tensor& rows, const int64_t* slots, const torch::Tensor& pool,
                        const torch::Tensor& pool_scales, bool keys);

// An int8 key pool [num_blocks, num_kv_heads, block_size, head_dim] (its
// bytes pair-major) as a view whose [b, h, j, d] is key j's dim d.
torch::Tensor int8_keys_by_row(const torch::Tensor& key_pool);

// The normalized Walsh-Hadamard matrix [n, n] (n a power of two) in float32
// on `device`: symmetric and its own inverse.
torch::Tensor hadamard_matrix(int64_t n, const torch::Device& device = torch::kCPU);

// Causal attention of every query over its sequence's cached positions.
// query: [num_tokens, num_heads, head_dim]; key_pool, value_pool:
// [num_blocks, num_kv_heads, block_size, head_dim], same dtype as query, or
// (a float32 query) bfloat16, float16, or int8 with its row scales.
// Query head h reads KV head h / (num_heads / num_kv_heads) (GQA). A query at
// position p sees keys at positions <= p, and > p - sliding_window when
// sliding_window > 0. Accumulates in fp32. Returns [num_tokens, num_heads, head_dim].
// Dispatches: CPU -> the Eigen kernel, other devices -> the reference path.
torch::Tensor paged_attention(const torch::Tensor& query, const torch::Tensor& key_pool,
                              const torch::Tensor& value_pool, const AttentionMetadata& metadata,
                              double scale, int64_t sliding_window = 0, const KVRowScales& kv_scales = {});

// The Eigen kernel (CPU; float32, bfloat16, float16), parallel over
// (sequence, KV head, chunk of up to 64 queries) with online softmax in
// fp32. Decode work items multiply against each float32 block where it sits
// in the pool; prefill work items (many query rows) copy tiles of 4 blocks
// into fp32 scratch for larger matrix products, as every bf16/fp16 read does.
// The query's tokens may be any stride apart (a view of the qkv projection's
// rows is read in place); its heads and dims must be packed, or it is copied.
torch::Tensor paged_attention_cpu(const torch::Tensor& query, const torch::Tensor& key_pool,
                                  const torch::Tensor& value_pool, const AttentionMetadata& metadata,
                                  double scale, int64_t sliding_window = 0, const KVRowScales& kv_scales = {});

// The same computation with ATen ops on any device: gather each sequence's
// K/V rows, matmul, mask, softmax, matmul.
torch::Tensor paged_attention_reference(const torch::Tensor& query, const torch::Tensor& key_pool,
                                        const torch::Tensor& value_pool,
                                        const AttentionMetadata& metadata, double scale,
                                        int64_t sliding_window = 0, const KVRowScales& kv_scales = {});

}  // namespace modelbench
