// The normalized Walsh-Hadamard transform of a row, in place: x <- H x with
// H[i][j] = (-1)^popcount(i & j) / sqrt(n), n a power of two (Sylvester's
// order). H is orthogonal and its own inverse, so (H q) . (H k) = q . k.
// An int8 KV cache stores its keys rotated by H: a key's few outlier
// channels (which would otherwise set the row's one scale and leave the
// other channels a few int8 steps) spread over every channel first, and the
// queries are rotated alike before their dot products (as QuaRot does).
#pragma once

#include <cmath>
#include <cstdint>

namespace modelbench {

constexpr int64_t kMaxRotatedDim = 1024;

// Whether an int8 pool's keys of this head_dim are stored rotated: every
// power of two up to kMaxRotatedDim (64 and 128 among them); other head dims
// keep their rows as they are.
inline bool int8_keys_rotated(int64_t head_dim) {
  return head_dim >= 2 && head_dim <= kMaxRotatedDim && (head_dim & (head_dim - 1)) == 0;
}

// x <- H x for a power-of-two n: log2(n) butterfly passes, then 1/sqrt(n).
inline void hadamard_rotate(float* x, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
#pragma omp simd
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float norm = 1.0f / std::sqrt(static_cast<float>(n));
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] *= norm;
}

// An int8 pool's keys are stored pair-major within each block and KV head:
// dims 2p and 2p + 1 of the block's block_size keys side by side, pair after
// pair ([head_dim / 2][block_size][2]), so that one load gives 16 keys' pair
// p and the scores of a block's keys come out as one vector (lanes = keys,
// attention_decode.cpp). Values stay row-major. The element (key j, dim d)
// of a block's KV head sits at:
inline int64_t int8_key_offset(int64_t j, int64_t d, int64_t block_size) {
  return (d / 2) * 2 * block_size + 2 * j + (d % 2);
}

}  // namespace modelbench
