// Sampler: one step's logits -> next token per sequence. Per row, as vLLM:
// min_tokens masking, repetition / frequency / presence penalties, then
// greedy argmax, or temperature, top-k, top-p, min-p (transformers' order)
// and a draw. Rows go through batched ATen ops. Truncation is a per-row
// threshold found from the largest few weights, never a sort of the
// vocabulary; only top-p sets too wide for those fall back to a per-row
// selection over the vocabulary (CPU) or topk of all of it (CUDA).
#include "runner/sampler.h"

#include "kernels/sampling_ops.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <mutex>
#include <numeric>

namespace modelbench {

using namespace sampling_ops;

Sampler::Sampler(int eos_token_id) : eos_token_id_(eos_token_id) {}

SamplerOutput Sampler::sample(const torch::Tensor& logits, const std::vector<const Sequence*>& seqs) {
  TORCH_CHECK(logits.dim() == 2, "logits must be 2-D [num_rows, vocab_size], got shape ", logits.sizes());
  TORCH_CHECK(logits.size(0) == static_cast<int64_t>(seqs.size()), "logits has ", logits.size(0),
              " rows but ", seqs.size(), " sequences were given");
  TORCH_CHECK(logits.size(1) > 0, "logits must have a non-empty vocabulary dimension");
  const int64_t num_rows = logits.size(0);
  const torch::Device device = logits.device();
  SamplerOutput out;
  out.logprobs.resize(num_rows);
  out.guide_failed.assign(num_rows, 0);
  if (num_rows == 0) return out;

  std::vector<int64_t> greedy_rows, random_rows, logprob_rows, guided_rows;
  bool any_penalties = false;
  for (int64_t row = 0; row < num_rows; ++row) {
    const Sequence& seq = *seqs[row];
    (seq.params().is_greedy() ? greedy_rows : random_rows).push_back(row);
    if (seq.params().logprobs >= 0) logprob_rows.push_back(row);
    if (seq.guide) guided_rows.push_back(row);
    any_penalties = any_penalties || needs_penalties(seq);
  }

  auto rows_of = [&](const torch::Tensor& t, const std::vector<int64_t>& rows) {
    return static_cast<int64_t>(rows.size()) == num_rows ? t : t.index_select(0, to_device(rows, device));
  };
  torch::Tensor token_ids;  // [num_rows] int64
  if (random_rows.empty() && !any_penalties && logprob_rows.empty() && guided_rows.empty()) {
    // All greedy and nothing to adjust: one argmax over the logits as they
    // are (any dtype). A row with a NaN goes the long way below.
    token_ids = greedy_argmax(logits);  // ties go to the lowest id; undefined over a NaN
  }
  torch::Tensor logprobs;  // [logprob rows, vocab_size], of the raw logits
  if (!token_ids.defined()) {
    torch::Tensor x = clean_logits(logits);  // penalized, then sampled in place
    if (!logprob_rows.empty()) logprobs = rows_of(x, logprob_rows).log_softmax(1);
    if (any_penalties) apply_penalties(x, seqs, eos_token_id_);
    if (!guided_rows.empty()) apply_guides(x, seqs, guided_rows, out.guide_failed);
    if (random_rows.empty()) {
      token_ids = greedy_argmax(x);  // no NaN left in x
    } else if (greedy_rows.empty()) {
      token_ids = sample_random(x, seqs);
    } else {
      token_ids = x.argmax(1);  // right for the greedy rows; the others are drawn now
      std::vector<const Sequence*> random_seqs;
      for (int64_t row : random_rows) random_seqs.push_back(seqs[row]);
      token_ids.index_copy_(0, to_device(random_rows, device),
                            sample_random(rows_of(x, random_rows), random_seqs));
    }
  }

  auto token_ids_host = token_ids.cpu();
  const int64_t* ids = token_ids_host.data_ptr<int64_t>();
  out.token_ids.assign(ids, ids + num_rows);

  if (!logprob_rows.empty()) {
    std::vector<int> num_top;
    for (int64_t row : logprob_rows) num_top.push_back(seqs[row]->params().logprobs);
    auto entries = gather_logprobs(logprobs, rows_of(token_ids, logprob_rows), num_top);
    for (size_t i = 0; i < logprob_rows.size(); ++i)
      out.logprobs[logprob_rows[i]].push_back(std::move(entries[i]));
  }
  return out;
}

void Sampler::apply_guides(torch::Tensor& logits, const std::vector<const Sequence*>& seqs,
                           const std::vector<int64_t>& guided_rows, std::vector<uint8_t>& failed) {
  const int64_t vocab_size = logits.size(1), num_guided = static_cast<int64_t>(guided_rows.size());
  const bool in_place = logits.device().is_cpu() && logits.is_contiguous() &&
                        logits.scalar_type() == torch::kFloat;
  // Off the CPU: allowed[i][t] (row guided_rows[i] may take token t), built
  // on the host from the bitmasks, then one masked fill of the guided rows.
  torch::Tensor allowed;
  if (!in_place) allowed = torch::ones({num_guided, vocab_size}, torch::kBool);
  for (int64_t i = 0; i < num_guided; ++i) {
    const Sequence& seq = *seqs[guided_rows[i]];
    std::shared_ptr<const TokenMask> mask;
    // The mask of the token about to be sampled: output position num_output_tokens.
    const TokenGuide::Wait got = seq.guide->wait(seq.num_output_tokens(), kGuideWaitSeconds, &mask);
    if (got == TokenGuide::Wait::kTimedOut)
      seq.guide->fail("no token mask came for output position " + std::to_string(seq.num_output_tokens()) +
                      " within " + std::to_string(static_cast<int>(kGuideWaitSeconds)) + " s");
    if (got != TokenGuide::Wait::kReady) {
      failed[guided_rows[i]] = 1;  // its token is dropped: the row stays as it is
      continue;
    }
    const int64_t num_words = (vocab_size + 31) / 32;
    const uint32_t* words = mask->data();
    const int64_t have = std::min<int64_t>(num_words, static_cast<int64_t>(mask->size()));
    bool any = false;
    for (int64_t w = 0; w < have && !any; ++w) {
      const uint32_t bits = w == num_words - 1 && vocab_size % 32 ? words[w] & ((1u << (vocab_size % 32)) - 1)
                                                                   : words[w];
      any = bits != 0;
    }
    if (!any) {
      seq.guide->fail("the grammar allows no token at output position " + std::to_string(seq.num_output_tokens()));
      failed[guided_rows[i]] = 1;
      continue;
    }
    if (in_place) {
      // Straight into the row: a grammar's mask is mostly whole words of
      // zeros (filled at once) and a few mixed words.
      float* row = logits.data_ptr<float>() + guided_rows[i] * vocab_size;
      for (int64_t w = 0; w < num_words; ++w) {
        const uint32_t bits = w < have ? words[w] : 0u;
        if (bits == 0xFFFFFFFFu) continue;
        const int64_t first = w * 32, last = std::min<int64_t>(first + 32, vocab_size);
        if (bits == 0) {
          std::fill(row + first, row + last, kNegInf);
          continue;
        }
        for (int64_t t = first; t < last; ++t)
          if (!((bits >> (t - first)) & 1u)) row[t] = kNegInf;
      }
    } else {
      bool* a = allowed.data_ptr<bool>() + i * vocab_size;
      for (int64_t t = 0; t < vocab_size; ++t) a[t] = t / 32 < have && ((words[t >> 5] >> (t & 31)) & 1u);
    }
  }
  if (in_place) return;
  const torch::Device device = logits.device();
  auto rows = to_device(guided_rows, device);
  auto sub = logits.index_select(0, rows);
  sub.masked_fill_(allowed.to(device).logical_not(), kNegInf);
  logits.index_copy_(0, rows, sub);
}

torch::Tensor Sampler::sample_random(torch::Tensor logits, const std::vector<const Sequence*>& seqs) {
  const int64_t num_rows = logits.size(0);
  const torch::Device device = logits.device();
  auto weights = truncated_weights(logits, seqs);
  // One uniform per row; a seeded row takes its own from its generator, so
  // its draw does not depend on the rest of the batch.
  bool any_unseeded = false;
  for (const Sequence* seq : seqs) any_unseeded = any_unseeded || !seq->params().seed.has_value();
  auto u = torch::empty({num_rows, 1}, torch::dtype(torch::kDouble).device(device));
  if (any_unseeded) u.uniform_(0.0, 1.0);
  for (int64_t row = 0; row < num_rows; ++row)
    if (seqs[row]->params().seed) u[row].uniform_(0.0, 1.0, generator_for(*seqs[row], device));
  return draw(weights, u);
}

double Sampler::uniform(const Sequence& seq, const torch::Device& device) {
  auto u = torch::empty({1}, torch::dtype(torch::kDouble).device(device));
  if (seq.params().seed) {
    u.uniform_(0.0, 1.0, generator_for(seq, device));
  } else {
    u.uniform_(0.0, 1.0);
  }
  return u.item<double>();
}

std::vector<int32_t> Sampler::verify(const torch::Tensor& logits, const Sequence& seq,
                                     const std::vector<int32_t>& drafts) {
  const auto num_drafts = static_cast<int64_t>(drafts.size());
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) == num_drafts + 1, "verify needs ", num_drafts + 1,
              " rows of logits (the last known token's and each draft's), got shape ", logits.sizes());
  std::vector<int32_t> tokens;
  torch::Tensor x = clean_logits(logits);  // [1 + drafts, vocab_size] float32
  if (seq.params().is_greedy()) {
    // Each draft stands when it is the model's own greedy choice; the first
    // that is not is replaced by that choice, and after a full match the
    // model's next token follows: exactly the tokens greedy decoding makes.
    auto best = greedy_argmax(x).cpu();
    const int64_t* ids = best.data_ptr<int64_t>();
    for (int64_t i = 0; i <= num_drafts; ++i) {
      tokens.push_back(static_cast<int32_t>(ids[i]));
      if (i == num_drafts || ids[i] != drafts[i]) break;
    }
    return tokens;
  }
  // Rejection sampling against a proposal that is one token for sure (the
  // n-gram's): draft d at a position stands with probability p(d) under the
  // request's own distribution there (temperature, top-k, top-p, min-p); a
  // rejected one is replaced by a draw from p with d removed. Each output
  // token is then distributed exactly as plain sampling's.
  const torch::Device device = x.device();
  std::vector<const Sequence*> rows(num_drafts + 1, &seq);
  auto weights = truncated_weights(x, rows);  // [1 + drafts, vocab_size], unnormalized
  auto mass = weights.sum(1).to(torch::kDouble).cpu();
  auto draft_ids = to_device(std::vector<int64_t>(drafts.begin(), drafts.end()), device).unsqueeze(1);
  auto drafted = weights.narrow(0, 0, num_drafts).gather(1, draft_ids).squeeze(1).to(torch::kDouble).cpu();
  for (int64_t i = 0; i < num_drafts; ++i) {
    const double p = drafted[i].item<double>() / mass[i].item<double>();
    if (uniform(seq, device) < p) {
      tokens.push_back(drafts[i]);
      continue;
    }
    auto row = weights.narrow(0, i, 1).clone();
    row[0][drafts[i]] = 0.0f;
    auto u = torch::full({1, 1}, uniform(seq, device), torch::dtype(torch::kDouble).device(device));
    tokens.push_back(static_cast<int32_t>(draw(row, u).item<int64_t>()));
    return tokens;
  }
  auto u = torch::full({1, 1}, uniform(seq, device), torch::dtype(torch::kDouble).device(device));
  tokens.push_back(static_cast<int32_t>(draw(weights.narrow(0, num_drafts, 1), u).item<int64_t>()));
  return tokens;
}

torch::Tensor Sampler::truncated_weights(torch::Tensor logits, const std::vector<const Sequence*>& seqs) {
  const int64_t num_rows = logits.size(0), vocab_size = logits.size(1);
  const torch::Device device = logits.device();
  std::vector<float> temperature(num_rows), min_p(num_rows);
  std::vector<int64_t> top_k(num_rows);
  std::vector<double> top_p(num_rows);
  int64_t max_k = 0;
  bool any_p = false, any_min_p = false;
  for (int64_t row = 0; row < num_rows; ++row) {
    const SamplingParams& p = seqs[row]->params();
    temperature[row] = p.temperature;
    top_k[row] = p.top_k;
    top_p[row] = p.top_p;
    min_p[row] = p.min_p;
    if (p.top_k < vocab_size) max_k = std::max<int64_t>(max_k, p.top_k);
    any_p = any_p || p.top_p < 1.0f;
    any_min_p = any_min_p || p.min_p > 0.0f;
  }
  auto column = [&](const auto& values) { return to_device(values, device).unsqueeze(1); };
  // The logits become unnormalized probs in place: exp(logits / T - row max),
  // so each row's largest weight is exp(0) = 1.
  auto weights = logits.div_(column(temperature));  // [num_rows, vocab_size]
  weights.sub_(weights.amax(1, /*keepdim=*/true)).exp_();

  if (max_k > 0 || any_p || any_min_p) {
    auto threshold = column(min_p);  // prob < min_p * max prob, and the max weight is 1
    if (max_k > 0 || any_p) {
      auto top_k_t = column(top_k), top_p_t = column(top_p);
      // [num_rows, 1]; only top-p without top-k reads it
      auto mass = any_p ? weights.sum(1, /*keepdim=*/true) : torch::ones({num_rows, 1}, weights.options());
      // Few candidates first: most rows' top-p sets are small. Wider rows
      // then search their whole row.
      int64_t n = std::min(vocab_size, any_p ? std::max<int64_t>(max_k + 1, 64) : max_k);
      auto [kept, covered] = top_k_top_p_threshold(weights, mass, top_k_t, top_p_t, n);
      if (!covered.all().item<bool>()) {
        auto rows = covered.logical_not().nonzero().squeeze(1);  // [num_wide]
        if (device.is_cpu()) {
          auto rows_host = rows.contiguous();
          const int64_t* first = rows_host.data_ptr<int64_t>();
          top_p_by_selection(weights, {first, first + rows_host.numel()}, top_p_t, kept);
        } else {
          auto wide = top_k_top_p_threshold(weights.index_select(0, rows), mass.index_select(0, rows),
                                            top_k_t.index_select(0, rows), top_p_t.index_select(0, rows),
                                            vocab_size);
          kept.index_copy_(0, rows, wide.first);
        }
      }
      threshold = torch::maximum(threshold, kept);
    }
    weights.mul_(weights >= threshold);  // zero what is dropped; faster than masked_fill_
  }
  return weights;
}

at::Generator& Sampler::generator_for(const Sequence& seq, const torch::Device& device) {
  // Kept across steps so a request's draws continue one seeded stream.
  auto it = generators_.find(seq.request_id());
  if (it != generators_.end() && it->second.device() == device) return it->second;
  const uint64_t seed = *seq.params().seed;
  at::Generator generator;
  if (device.is_cpu()) {
    generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  } else {
    // A fresh generator of the accelerator's own type, without its headers:
    // clone the device's default one, then reseed the clone.
    at::Generator base = at::globalContext().defaultGenerator(device);
    {
      std::lock_guard<std::mutex> lock(base.mutex());
      generator = base.clone();
    }
    generator.set_current_seed(seed);
  }
  return generators_.insert_or_assign(seq.request_id(), std::move(generator)).first->second;
}

std::vector<PositionLogprobs> Sampler::compute_logprobs(const torch::Tensor& logits,
                                                        const torch::Tensor& target_ids, int num_top) {
  TORCH_CHECK(logits.dim() == 2, "logits must be 2-D [n, vocab_size], got shape ", logits.sizes());
  TORCH_CHECK(target_ids.dim() == 1 && target_ids.size(0) == logits.size(0), "target_ids must be [",
              logits.size(0), "] to match logits, got shape ", target_ids.sizes());
  TORCH_CHECK(num_top >= 0, "num_top must be >= 0, got ", num_top);
  const int64_t n = logits.size(0), vocab_size = logits.size(1);
  if (n == 0) return {};
  auto targets = target_ids.to(logits.device(), torch::kLong);  // [n]
  TORCH_CHECK(targets.min().item<int64_t>() >= 0 && targets.max().item<int64_t>() < vocab_size,
              "target_ids must lie in [0, ", vocab_size, ")");
  auto logprobs = clean_logits(logits).log_softmax(1);  // [n, vocab_size]
  return gather_logprobs(logprobs, targets, std::vector<int>(n, num_top));
}

void Sampler::drop_request(const std::string& request_id) { generators_.erase(request_id); }

}  // namespace modelbench
