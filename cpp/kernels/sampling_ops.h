// The batched operations behind the Sampler: cleaning logits, penalties,
// top-k / top-p thresholds without a sort of the vocabulary, the two-level
// inverse-CDF draw, and gathering logprobs. Tensors in, tensors out.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "core/logprobs.h"
#include "core/sequence.h"

namespace modelbench::sampling_ops {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// A copy of a host vector as a 1-D tensor on `device`.
template <typename T>
torch::Tensor to_device(const std::vector<T>& values, const torch::Device& device) {
  auto host = torch::from_blob(const_cast<T*>(values.data()), {static_cast<int64_t>(values.size())},
                               c10::CppTypeToScalarType<T>::value);
  return host.to(host.options().device(device), /*non_blocking=*/false, /*copy=*/true);
}

// A float32 copy of the logits, ours to change in place, with NaN read as
// -inf so that a broken row cannot win an argmax. [num_rows, vocab_size]
torch::Tensor clean_logits(const torch::Tensor& logits);

// Greedy choices over raw logits [num_rows, vocab_size]: each row's argmax
// (ties to the lowest id), int64 [num_rows]; undefined when a row holds a NaN
// (the caller cleans the logits first). Float32 CPU logits take a pass for
// the max and one for its first index, rows in parallel, in simd.h's vectors
// (faster than ATen's argmax: docs/performance.md); others, ATen's argmax.
torch::Tensor greedy_argmax(const torch::Tensor& logits);

bool needs_penalties(const Sequence& seq);

// min_tokens masking, then the repetition penalty over prompt and output
// tokens, then frequency and presence penalties over output tokens, in place.
// logits: [num_rows, vocab_size] float32, contiguous.
void apply_penalties(torch::Tensor& logits, const std::vector<const Sequence*>& seqs,
                     int eos_token_id);

// The smallest weight each row keeps under top-k and then top-p, judged from
// its `num_candidates` largest weights: a threshold instead of a sort of the
// vocabulary, which on CPU costs more than the rest of the step. Ties with
// the boundary stay (transformers and vLLM keep top-k ties too).
// Returns thresholds [r, 1] and `covered` [r] bool, false for rows whose
// answer may lie past the candidates: they need a larger num_candidates.
// weights: [r, vocab_size] unnormalized probs; mass: [r, 1] their row sums;
// top_k: [r, 1] int64, 0 off; top_p: [r, 1] float64, 1 off.
std::pair<torch::Tensor, torch::Tensor> top_k_top_p_threshold(const torch::Tensor& weights,
                                                              const torch::Tensor& mass,
                                                              const torch::Tensor& top_k,
                                                              const torch::Tensor& top_p,
                                                              int64_t num_candidates);

// The top-p thresholds of the rows in `rows` (too wide for the candidates),
// on CPU, by a weighted quickselect per row: expected O(vocab), where
// topk(vocab) amounts to a sort of the vocabulary. Same semantics:
// tokens >= floor (top-k's kth), most likely first, until their mass
// reaches top_p of theirs; ties with the last one stay.
// weights: [num_rows, vocab_size] float32 CPU contiguous; top_p: [num_rows, 1]
// float64; threshold: [num_rows, 1] float32, the floor in, the threshold out.
void top_p_by_selection(const torch::Tensor& weights, const std::vector<int64_t>& rows,
                        const torch::Tensor& top_p, torch::Tensor& threshold);

// Inverse-CDF draw of one token per row: the first token whose running
// weight reaches (1 - u) * total. Two levels, blocks of kBlock tokens then a
// token inside the block, so that no [rows, vocab] float64 prefix sum is
// built. A zero-weight token is never drawn: the target is > 0 and the token
// that first reaches it adds weight. weights: [r, vocab_size] >= 0;
// u: [r, 1] float64 in [0, 1). Returns [r] int64.
torch::Tensor draw(const torch::Tensor& weights, const torch::Tensor& u);

// logprobs: [n, vocab_size] log_softmax; target_ids: [n] int64; num_top[i]
// alternatives for row i. Ranks count the tokens with a strictly larger
// logprob, so tied tokens share a rank.
std::vector<PositionLogprobs> gather_logprobs(const torch::Tensor& logprobs,
                                              const torch::Tensor& target_ids,
                                              const std::vector<int>& num_top);

}  // namespace modelbench::sampling_ops
