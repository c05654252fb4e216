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

// Causal attention of every query over its sequence's cached positions.
// query: [num_tokens, num_heads, head_dim]; key_pool, value_pool:
// [num_blocks, num_kv_heads, block_size, head_dim], same dtype as query.
// Query head h reads KV head h / (num_heads / num_kv_heads) (GQA). A query at
// position p sees keys at positions <= p, and > p - sliding_window when
// sliding_window > 0. Accumulates in fp32. Returns [num_tokens, num_heads, head_dim].
// Dispatches: CPU -> the Eigen kernel, other devices -> the reference path.
torch::Tensor paged_attention(const torch::Tensor& query, const torch::Tensor& key_pool,
                              const torch::Tensor& value_pool, const AttentionMetadata& metadata,
                              double scale, int64_t sliding_window = 0);

// The Eigen kernel (CPU; float32, bfloat16, float16), parallel over
// (sequence, KV head, chunk of up to 64 queries) with online softmax in
// fp32. Decode work items multiply against each float32 block where it sits
// in the pool; prefill work items (many query rows) copy tiles of 4 blocks
// into fp32 scratch for larger matrix products, as every bf16/fp16 read does.
// The query's tokens may be any stride apart (a view of the qkv projection's
// rows is read in place); its heads and dims must be packed, or it is copied.
torch::Tensor paged_attention_cpu(const torch::Tensor& query, const torch::Tensor& key_pool,
                                  const torch::Tensor& value_pool, const AttentionMetadata& metadata,
                                  double scale, int64_t sliding_window = 0);

// The same computation with ATen ops on any device: gather each sequence's
// K/V rows, matmul, mask, softmax, matmul.
torch::Tensor paged_attention_reference(const torch::Tensor& query, const torch::Tensor& key_pool,
                                        const torch::Tensor& value_pool,
                                        const AttentionMetadata& metadata, double scale,
                                        int64_t sliding_window = 0);

}  // namespace modelbench
