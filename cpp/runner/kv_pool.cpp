// KVPool: allocation by budget and slot writes.
#include "runner/kv_pool.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "core/config.h"
#include "kernels/hadamard.h"

namespace modelbench {

void KVCacheSpec::validate() const {
  auto check = [](int value, const char* name) {
    if (value < 1) throw InvalidArgument(std::string(name) + " must be >= 1, got " + std::to_string(value), name);
  };
  check(num_layers, "num_layers");
  check(num_kv_heads, "num_kv_heads");
  check(head_dim, "head_dim");
  check(block_size, "block_size");
  if (int8() && (head_dim % 2 != 0 || head_dim > kMaxRotatedDim))
    throw InvalidArgument("kv_cache_dtype int8 needs an even head_dim of at most " + std::to_string(kMaxRotatedDim) +
                              " (its keys are stored in pairs of dims), the model's is " + std::to_string(head_dim),
                          "kv_cache_dtype");
}

int64_t KVCacheSpec::bytes_per_block() const {
  const int64_t row_bytes = head_dim * static_cast<int64_t>(c10::elementSize(dtype)) + (int8() ? 4 : 0);
  return 2LL * num_layers * block_size * num_kv_heads * row_bytes;
}

int num_blocks_for_memory(const KVCacheSpec& spec, int64_t bytes) {
  spec.validate();
  if (bytes < 0) throw InvalidArgument("KV cache memory must be >= 0 bytes, got " + std::to_string(bytes), "bytes");
  const int64_t n = bytes / spec.bytes_per_block();
  return static_cast<int>(std::min<int64_t>(n, 1 << 30));
}

int64_t available_host_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream fields(line.substr(13));
      int64_t kib = 0;
      fields >> kib;
      return kib * 1024;
    }
  }
  // No /proc (not Linux): fall back to free physical pages.
  return static_cast<int64_t>(sysconf(_SC_AVPHYS_PAGES)) * sysconf(_SC_PAGESIZE);
}

KVPool::KVPool(const KVCacheSpec& spec, int num_blocks) : spec_(spec), num_blocks_(num_blocks) {
  spec_.validate();
  if (num_blocks < 1)
    throw InvalidArgument("num_blocks must be >= 1, got " + std::to_string(num_blocks), "num_blocks");
  const auto options = torch::TensorOptions().dtype(spec_.dtype).device(spec_.device);
  keys_.reserve(spec_.num_layers);
  values_.reserve(spec_.num_layers);
  for (int layer = 0; layer < spec_.num_layers; ++layer) {
    keys_.push_back(torch::zeros({num_blocks, spec_.num_kv_heads, spec_.block_size, spec_.head_dim}, options));
    values_.push_back(torch::zeros({num_blocks, spec_.num_kv_heads, spec_.block_size, spec_.head_dim}, options));
    if (spec_.int8()) {
      const auto scale_options = options.dtype(torch::kFloat32);
      key_scales_.push_back(torch::zeros({num_blocks, spec_.num_kv_heads, spec_.block_size}, scale_options));
      value_scales_.push_back(torch::zeros({num_blocks, spec_.num_kv_heads, spec_.block_size}, scale_options));
    }
  }
}

void KVPool::write(int layer, const torch::Tensor& slot_mapping, const torch::Tensor& key,
                   const torch::Tensor& value) {
  TORCH_CHECK(slot_mapping.dim() == 1 && slot_mapping.scalar_type() == torch::kLong,
              "slot_mapping must be a 1-D int64 tensor");
  const int64_t num_tokens = slot_mapping.size(0);
  const std::vector<int64_t> row_shape{num_tokens, spec_.num_kv_heads, spec_.head_dim};
  TORCH_CHECK(key.sizes() == row_shape && value.sizes() == row_shape,
              "key and value must be [", num_tokens, ", ", spec_.num_kv_heads, ", ", spec_.head_dim,
              "], got ", key.sizes(), " and ", value.sizes());
  const int64_t num_slots = static_cast<int64_t>(num_blocks_) * spec_.block_size;
  if (spec_.device.is_cpu() && slot_mapping.device().is_cpu()) {
    // Each token's row of each KV head goes to [block, head, offset]: a copy
    // of head_dim elements per (token, head).
    const torch::Tensor slots = slot_mapping.contiguous();
    const int64_t* slot = slots.data_ptr<int64_t>();
    for (int64_t t = 0; t < num_tokens; ++t)
      TORCH_CHECK(slot[t] >= 0 && slot[t] < num_slots, "slot ", slot[t], " of token ", t,
                  " is outside the pool's ", num_slots, " slots");
    const int64_t heads = spec_.num_kv_heads, head_dim = spec_.head_dim, block_size = spec_.block_size;
    const int64_t elem = static_cast<int64_t>(c10::elementSize(spec_.dtype)), row_bytes = head_dim * elem;
    if (spec_.int8()) {  // each token's rows quantized into their slots, their scales beside them
      // Keys rotated (a power-of-two head_dim) and pair-major (hadamard.h), values as they are.
      auto quantize = [&](const torch::Tensor& given, const torch::Tensor& pool, const torch::Tensor& pool_scales,
                          bool keys) {
        // Read in place where each row is packed float32 (views of the fused qkv output are).
        const bool in_place = given.scalar_type() == torch::kFloat32 && given.stride(2) == 1;
        write_int8_kv_rows(in_place ? given : given.to(torch::kFloat32).contiguous(), slot, pool, pool_scales, keys);
      };
      quantize(key, keys_.at(layer), key_scales_.at(layer), true);
      quantize(value, values_.at(layer), value_scales_.at(layer), false);
      return;
    }
    auto scatter = [&](const torch::Tensor& given, const torch::Tensor& pool) {
      // Rows in place when they are the pool's dtype with heads head_dim apart (views of the
      // fused qkv output are), else a contiguous copy.
      const bool in_place = given.scalar_type() == spec_.dtype && given.stride(2) == 1 && given.stride(1) == head_dim;
      const torch::Tensor rows = in_place ? given : given.to(spec_.dtype).contiguous();
      const int64_t token_bytes = rows.stride(0) * elem;
      const char* src = static_cast<const char*>(rows.data_ptr());
      char* dst = static_cast<char*>(pool.data_ptr());
      for (int64_t t = 0; t < num_tokens; ++t) {
        const int64_t block = slot[t] / block_size, offset = slot[t] % block_size;
        for (int64_t h = 0; h < heads; ++h)
          std::memcpy(dst + ((block * heads + h) * block_size + offset) * row_bytes,
                      src + t * token_bytes + h * row_bytes, row_bytes);
      }
    };
    scatter(key, keys_.at(layer));
    scatter(value, values_.at(layer));
    return;
  }
  // Other devices: pool[block, :, offset] = row, as one indexed write.
  const torch::Tensor slots = slot_mapping.to(spec_.device);
  const torch::Tensor blocks = slots.div(spec_.block_size, "floor"), offsets = slots.remainder(spec_.block_size);
  using torch::indexing::Slice;
  if (spec_.int8()) {  // the same rounding as the CPU loop, in tensor ops
    auto quantize = [&](const torch::Tensor& given, torch::Tensor& pool, torch::Tensor& pool_scales, bool keys) {
      torch::Tensor x = given.to(torch::kFloat32);
      if (keys && int8_keys_rotated(spec_.head_dim))
        x = torch::matmul(x, hadamard_matrix(spec_.head_dim, x.device()));  // H is symmetric
      const torch::Tensor absmax = x.abs().amax(-1);  // [num_tokens, heads]
      const torch::Tensor inverse = torch::where(absmax > 0, 127.0f / absmax, torch::zeros_like(absmax));
      const torch::Tensor q = (x * inverse.unsqueeze(-1)).round().clamp(-127, 127).to(torch::kChar);
      if (keys) {  // pair-major: a view of the pool whose [b, h, j, p, i] is key j's dim 2p + i
        const int64_t heads = spec_.num_kv_heads, head_dim = spec_.head_dim;
        pool.view({num_blocks_, heads, head_dim / 2, spec_.block_size, 2})
            .permute({0, 1, 3, 2, 4})
            .index_put_({blocks, Slice(), offsets}, q.view({-1, heads, head_dim / 2, 2}));
      } else {
        pool.index_put_({blocks, Slice(), offsets}, q);
      }
      pool_scales.index_put_({blocks, Slice(), offsets}, absmax / 127.0f);
    };
    quantize(key, keys_.at(layer), key_scales_.at(layer), true);
    quantize(value, values_.at(layer), value_scales_.at(layer), false);
    return;
  }
  keys_.at(layer).index_put_({blocks, Slice(), offsets}, key.to(spec_.dtype));
  values_.at(layer).index_put_({blocks, Slice(), offsets}, value.to(spec_.dtype));
}

}  // namespace modelbench
