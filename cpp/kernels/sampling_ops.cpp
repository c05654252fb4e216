// sampling_ops: the batched operations behind the Sampler (see the header).
#include "kernels/sampling_ops.h"
#include "kernels/simd.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <limits>
#include <mutex>
#include <numeric>

namespace modelbench::sampling_ops {



torch::Tensor greedy_argmax(const torch::Tensor& logits) {
  if (!(logits.device().is_cpu() && logits.scalar_type() == torch::kFloat)) {
    torch::Tensor ids = logits.argmax(1);  // ATen's argmax prefers NaN: a row that picked one has one
    if (logits.gather(1, ids.unsqueeze(1)).isnan().any().item<bool>()) return torch::Tensor();
    return ids;
  }
  const torch::Tensor x = logits.contiguous();
  const int64_t num_rows = x.size(0), vocab = x.size(1);
  torch::Tensor ids = torch::empty({num_rows}, x.options().dtype(torch::kLong));
  const float* data = x.data_ptr<float>();
  int64_t* out = ids.data_ptr<int64_t>();
  std::atomic<bool> any_nan{false};
  at::parallel_for(0, num_rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = data + r * vocab;
      float best = kNegInf;
      bool nan = false;
      int64_t i = 0;
#if defined(MODELBENCH_SIMD)
      simd::vfloat best_v = simd::set1(kNegInf);
      unsigned nan_bits = 0;
      for (; i + simd::kLanes <= vocab; i += simd::kLanes) {
        const simd::vfloat v = simd::load(row + i);
        best_v = simd::max(v, best_v);  // a NaN v keeps best_v
        nan_bits |= simd::nan_lanes(v);
      }
      best = simd::reduce_max(best_v);
      nan = nan_bits != 0;
#endif
      for (; i < vocab; ++i) {
        best = std::max(best, row[i]);  // a NaN never replaces best
        nan = nan || row[i] != row[i];
      }
      if (nan) any_nan = true;
      // The first index of the max, a vector at a time.
      int64_t id = 0;
#if defined(MODELBENCH_SIMD)
      const simd::vfloat target = simd::set1(best);
      for (; id + simd::kLanes <= vocab; id += simd::kLanes) {
        if (const unsigned hit = simd::equal_lanes(simd::load(row + id), target); hit != 0) {
          id += __builtin_ctz(hit);
          break;
        }
      }
#endif
      while (id < vocab && !(row[id] == best)) ++id;
      out[r] = id < vocab ? id : 0;  // all -inf: 0, as ATen
    }
  });
  if (any_nan) return torch::Tensor();
  return ids;
}

// A float32 copy of the logits, ours to change in place, with NaN read as
// -inf so that a broken row cannot win an argmax. [num_rows, vocab_size]
torch::Tensor clean_logits(const torch::Tensor& logits) {
  auto copy = logits.to(logits.options().dtype(torch::kFloat), /*non_blocking=*/false, /*copy=*/true,
                        torch::MemoryFormat::Contiguous);
  return copy.nan_to_num_(kNegInf, kPosInf, kNegInf);
}

bool needs_penalties(const Sequence& seq) {
  const SamplingParams& p = seq.params();
  return seq.num_output_tokens() < p.min_tokens || p.repetition_penalty != 1.0f ||
         p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

// min_tokens masking, then the repetition penalty over prompt and output
// tokens, then frequency and presence penalties over output tokens, in place.
// logits: [num_rows, vocab_size] float32, contiguous.
void apply_penalties(torch::Tensor& logits, const std::vector<const Sequence*>& seqs,
                     int eos_token_id) {
  const int64_t vocab_size = logits.size(1);
  auto in_vocab = [vocab_size](int64_t id) { return id >= 0 && id < vocab_size; };
  // Flat indices (row * vocab_size + token id) and their per-entry values.
  std::vector<int64_t> masked;
  std::vector<int64_t> repeated;
  std::vector<float> repetition_penalty;
  std::vector<int64_t> penalized;
  std::vector<float> penalty;
  std::vector<int32_t> ids;
  for (size_t row = 0; row < seqs.size(); ++row) {
    const Sequence& seq = *seqs[row];
    const SamplingParams& p = seq.params();
    const int64_t base = static_cast<int64_t>(row) * vocab_size;
    if (seq.num_output_tokens() < p.min_tokens) {
      // Like vLLM, EOS is held back even with ignore_eos.
      if (in_vocab(eos_token_id)) masked.push_back(base + eos_token_id);
      for (int32_t id : p.stop_token_ids)
        if (in_vocab(id)) masked.push_back(base + id);
    }
    if (p.repetition_penalty != 1.0f) {
      ids = seq.token_ids();
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
      for (int32_t id : ids) {
        if (!in_vocab(id)) continue;
        repeated.push_back(base + id);
        repetition_penalty.push_back(p.repetition_penalty);
      }
    }
    if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
      ids.assign(seq.token_ids().begin() + seq.num_prompt_tokens(), seq.token_ids().end());
      std::sort(ids.begin(), ids.end());
      for (size_t i = 0; i < ids.size();) {
        size_t end = i;
        while (end < ids.size() && ids[end] == ids[i]) ++end;
        if (in_vocab(ids[i])) {
          penalized.push_back(base + ids[i]);
          penalty.push_back(p.frequency_penalty * static_cast<float>(end - i) + p.presence_penalty);
        }
        i = end;
      }
    }
  }
  const torch::Device device = logits.device();
  torch::Tensor flat = logits.view({-1});  // [num_rows * vocab_size]
  if (!masked.empty()) flat.index_fill_(0, to_device(masked, device), kNegInf);
  if (!repeated.empty()) {
    // Indices are unique per row, so a gather / transform / scatter is exact.
    auto index = to_device(repeated, device);
    auto factor = to_device(repetition_penalty, device);
    auto values = flat.index_select(0, index);
    flat.index_copy_(0, index, torch::where(values > 0, values / factor, values * factor));
  }
  if (!penalized.empty()) flat.index_add_(0, to_device(penalized, device), -to_device(penalty, device));
}

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
                                                              int64_t num_candidates) {
  const int64_t vocab_size = weights.size(1), n = num_candidates;
  auto values = std::get<0>(weights.topk(n, /*dim=*/1));  // [r, n], largest first
  auto k_on = (top_k > 0) & (top_k < vocab_size);          // [r, 1]
  auto kth = torch::where(k_on, values.gather(1, top_k.clamp(1, n) - 1), 0.0f);  // [r, 1]

  // Top-p over what top-k left, renormalized: keep a token while the mass of
  // the more likely ones is < top_p, so the most likely one always stays.
  auto cumulative = values.masked_fill(values < kth, 0.0f).cumsum(1, torch::kDouble);  // [r, n]
  // With top-k on, the candidates hold all of its mass (else not covered).
  cumulative.div_(torch::where(k_on, cumulative.narrow(1, n - 1, 1), mass));
  auto num_kept = (cumulative.narrow(1, 0, n - 1) < top_p).sum(1, /*keepdim=*/true) + 1;  // [r, 1]
  auto p_on = top_p < 1.0;
  auto with_p = torch::maximum(kth, values.gather(1, num_kept - 1));  // [r, 1]

  if (n == vocab_size)
    return {torch::where(p_on, with_p, kth), torch::ones({weights.size(0)}, k_on.options())};
  // Complete when no top-k tie can hide past the candidates, or, without
  // top-k, when the candidates already reach top_p. Uncovered rows get kth.
  auto complete = torch::where(k_on, values.narrow(1, n - 1, 1) < kth,
                               cumulative.narrow(1, n - 1, 1) >= top_p);  // [r, 1]
  return {torch::where(p_on & complete, with_p, kth), (complete | ~p_on).squeeze(1)};
}

// The top-p thresholds of the rows in `rows` (too wide for the candidates),
// on CPU, by a weighted quickselect per row: expected O(vocab), where
// topk(vocab) amounts to a sort of the vocabulary. Same semantics:
// tokens >= floor (top-k's kth), most likely first, until their mass
// reaches top_p of theirs; ties with the last one stay.
// weights: [num_rows, vocab_size] float32 CPU contiguous; top_p: [num_rows, 1]
// float64; threshold: [num_rows, 1] float32, the floor in, the threshold out.
void top_p_by_selection(const torch::Tensor& weights, const std::vector<int64_t>& rows,
                        const torch::Tensor& top_p, torch::Tensor& threshold) {
  const int64_t vocab_size = weights.size(1);
  at::parallel_for(0, static_cast<int64_t>(rows.size()), 1, [&](int64_t first, int64_t last) {
    std::vector<float> values;
    for (int64_t i = first; i < last; ++i) {
      const int64_t row = rows[i];
      const float* row_weights = weights.data_ptr<float>() + row * vocab_size;
      float& kept = threshold.data_ptr<float>()[row];
      const float lowest = std::max(kept, std::numeric_limits<float>::min());
      values.clear();
      double mass = 0.0;
      for (int64_t t = 0; t < vocab_size; ++t)
        if (row_weights[t] >= lowest) {
          values.push_back(row_weights[t]);
          mass += row_weights[t];
        }
      const double target = top_p.data_ptr<double>()[row] * mass;
      kept = lowest;      // keeps everything if rounding never reaches the target
      double above = 0.0;  // mass of the kept tokens larger than all of [begin, end)
      auto begin = values.begin(), end = values.end();
      while (begin != end) {
        const float a = *begin, b = *(begin + (end - begin) / 2), c = *(end - 1);
        const float pivot = std::max(std::min(a, b), std::min(std::max(a, b), c));  // median of 3
        auto greater_end = std::partition(begin, end, [pivot](float v) { return v > pivot; });
        auto equal_end = std::partition(greater_end, end, [pivot](float v) { return v == pivot; });
        const double greater = std::accumulate(begin, greater_end, 0.0);
        if (above + greater >= target) {  // the boundary is among the larger ones
          end = greater_end;
          continue;
        }
        above += greater + static_cast<double>(pivot) * (equal_end - greater_end);
        if (above >= target) {  // the boundary is the pivot: it and its ties stay
          kept = pivot;
          break;
        }
        begin = equal_end;
      }
    }
  });
}

// Inverse-CDF draw of one token per row: the first token whose running
// weight reaches (1 - u) * total. Two levels, blocks of kBlock tokens then a
// token inside the block, so that no [rows, vocab] float64 prefix sum is
// built. A zero-weight token is never drawn: the target is > 0 and the token
// that first reaches it adds weight. weights: [r, vocab_size] >= 0;
// u: [r, 1] float64 in [0, 1). Returns [r] int64.
torch::Tensor draw(const torch::Tensor& weights, const torch::Tensor& u) {
  constexpr int64_t kBlock = 1024;
  const int64_t num_rows = weights.size(0), vocab_size = weights.size(1);
  const int64_t num_full = vocab_size / kBlock, tail = vocab_size % kBlock;
  std::vector<torch::Tensor> masses;
  if (num_full > 0)
    masses.push_back(weights.narrow(1, 0, num_full * kBlock).view({num_rows, num_full, kBlock}).sum(2));
  if (tail > 0) masses.push_back(weights.narrow(1, num_full * kBlock, tail).sum(1, /*keepdim=*/true));
  auto block_cdf = torch::cat(masses, 1).to(torch::kDouble).cumsum(1);  // [r, num_blocks]
  const int64_t num_blocks = block_cdf.size(1);

  auto target = (1.0 - u) * block_cdf.narrow(1, num_blocks - 1, 1);              // (0, total]: [r, 1]
  auto block = torch::searchsorted(block_cdf, target).clamp_max_(num_blocks - 1);  // [r, 1]
  auto before = torch::where(block > 0, block_cdf.gather(1, (block - 1).clamp_min(0)), 0.0);
  auto position = block * kBlock + torch::arange(kBlock, block.options());  // [r, kBlock]
  auto in_block = weights.gather(1, position.clamp_max(vocab_size - 1))
                      .masked_fill_(position >= vocab_size, 0.0f)
                      .cumsum(1, torch::kDouble);  // [r, kBlock]
  // Block sums and the in-block running sum round differently: clamp, so the
  // block's last weighted token takes any excess.
  auto rest = torch::minimum(target - before, in_block.narrow(1, kBlock - 1, 1));
  auto offset = torch::searchsorted(in_block, rest);
  // A row with no finite logit has NaN weights; the clamp keeps its id in range.
  return (block * kBlock + offset).squeeze(1).clamp_(0, vocab_size - 1);
}

// logprobs: [n, vocab_size] log_softmax; target_ids: [n] int64; num_top[i]
// alternatives for row i. Ranks count the tokens with a strictly larger
// logprob, so tied tokens share a rank.
std::vector<PositionLogprobs> gather_logprobs(const torch::Tensor& logprobs,
                                              const torch::Tensor& target_ids,
                                              const std::vector<int>& num_top) {
  const int64_t n = logprobs.size(0), vocab_size = logprobs.size(1);
  auto chosen = logprobs.gather(1, target_ids.unsqueeze(1));  // [n, 1]
  auto ranks = (logprobs > chosen).sum(1, false, torch::kInt) + 1;  // [n]; int32 sums a bool faster
  const int64_t max_top =
      std::min<int64_t>(vocab_size, num_top.empty() ? 0 : *std::max_element(num_top.begin(), num_top.end()));
  torch::Tensor top_values, top_ids;  // [n, max_top], most likely first
  if (max_top > 0) {
    std::tie(top_values, top_ids) = logprobs.topk(max_top, /*dim=*/1);
    top_values = top_values.cpu().contiguous();
    top_ids = top_ids.cpu().contiguous();
  }
  auto chosen_host = chosen.squeeze(1).cpu();
  auto ranks_host = ranks.cpu();
  auto targets_host = target_ids.cpu();
  auto chosen_a = chosen_host.accessor<float, 1>();
  auto ranks_a = ranks_host.accessor<int32_t, 1>();
  auto targets_a = targets_host.accessor<int64_t, 1>();

  std::vector<PositionLogprobs> out(n);
  for (int64_t i = 0; i < n; ++i) {
    PositionLogprobs& entry = out[i];
    entry.chosen = {static_cast<int32_t>(targets_a[i]), chosen_a[i], static_cast<int>(ranks_a[i])};
    const int64_t count = std::min<int64_t>(num_top[i], max_top);
    if (count == 0) continue;
    const float* values_a = top_values.data_ptr<float>() + i * max_top;
    const int64_t* ids_a = top_ids.data_ptr<int64_t>() + i * max_top;
    entry.top.reserve(count);
    for (int64_t j = 0; j < count; ++j) {
      const bool tied = j > 0 && values_a[j] == values_a[j - 1];
      const int rank = tied ? entry.top.back().rank : static_cast<int>(j + 1);
      entry.top.push_back({static_cast<int32_t>(ids_a[j]), values_a[j], rank});
    }
  }
  return out;
}

}  // namespace modelbench::sampling_ops
