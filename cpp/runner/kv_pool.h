// KV storage: preallocated K and V pools per layer, each
// [num_blocks, num_kv_heads, block_size, head_dim]; token slot
// s = block_id * block_size + offset of KV head h lives at pool[block_id][h][offset].
// A block's rows of one KV head are contiguous (block_size * head_dim
// elements: 4 KiB for 16 fp32 rows of 64), so a decode reads them as one
// stream that the hardware prefetcher follows.
// Sized from a memory budget in bytes.
// An int8 pool (dtype kChar, kv_cache_dtype "int8") keeps beside each of its
// K and V pools the rows' scales, [num_blocks, num_kv_heads, block_size]
// float32: each row (one KV head at one position) is quantized on write to
// round(x / s) with s = max|x| / 127, so it reads back as int8 * s.
#pragma once

#include <torch/torch.h>

#include "kernels/attention.h"

#include <cstdint>
#include <vector>

namespace modelbench {

struct KVCacheSpec {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
  torch::ScalarType dtype = torch::kFloat32;
  torch::Device device = torch::kCPU;

  void validate() const;
  // K and V of one block across all layers (an int8 pool's row scales included).
  int64_t bytes_per_block() const;
  bool int8() const { return dtype == torch::kChar; }
};

// Blocks that fit in `bytes` (at least 0).
int num_blocks_for_memory(const KVCacheSpec& spec, int64_t bytes);

// Memory the OS reports as available for new allocations (MemAvailable).
int64_t available_host_memory_bytes();

class KVPool {
 public:
  KVPool(const KVCacheSpec& spec, int num_blocks);

  const KVCacheSpec& spec() const { return spec_; }
  int num_blocks() const { return num_blocks_; }
  int64_t num_bytes() const { return spec_.bytes_per_block() * num_blocks_; }

  // [num_blocks, num_kv_heads, block_size, head_dim]
  const torch::Tensor& key(int layer) const { return keys_.at(layer); }
  const torch::Tensor& value(int layer) const { return values_.at(layer); }
  // An int8 pool's row scales for the layer; undefined tensors for float pools.
  KVRowScales row_scales(int layer) const {
    return spec_.int8() ? KVRowScales{key_scales_.at(layer), value_scales_.at(layer)} : KVRowScales{};
  }

  // Write new K/V rows into their slots.
  // slot_mapping: [num_tokens] int64; key, value: [num_tokens, num_kv_heads, head_dim].
  void write(int layer, const torch::Tensor& slot_mapping, const torch::Tensor& key,
             const torch::Tensor& value);

 private:
  KVCacheSpec spec_;
  int num_blocks_;
  std::vector<torch::Tensor> keys_;
  std::vector<torch::Tensor> values_;
  std::vector<torch::Tensor> key_scales_;  // int8 pools only
  std::vector<torch::Tensor> value_scales_;
};

}  // namespace modelbench
