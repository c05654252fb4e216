// Sampler: one step's logits -> next token per sequence. The order per row
// is vLLM's: min_tokens masking, repetition / frequency / presence
// penalties, then greedy argmax, or temperature, top-k, top-p, min-p and a
// draw. Rows are processed together with ATen ops; the host only walks token
// histories (never the vocabulary) to build index tensors for the penalties.
#include "sampler.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <limits>
#include <mutex>

namespace modelbench {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// A copy of a host vector as a 1-D tensor on `device`.
template <typename T>
torch::Tensor to_device(const std::vector<T>& values, const torch::Device& device) {
  auto host = torch::from_blob(const_cast<T*>(values.data()), {static_cast<int64_t>(values.size())},
                               c10::CppTypeToScalarType<T>::value);
  return host.to(host.options().device(device), /*non_blocking=*/false, /*copy=*/true);
}

// float32 copy of the logits with NaN read as -inf, so that a broken row
// cannot win an argmax or poison a softmax. [num_rows, vocab_size]
torch::Tensor clean_logits(const torch::Tensor& logits) {
  return at::nan_to_num(logits.to(torch::kFloat), kNegInf, kPosInf, kNegInf).contiguous();
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

// Keeps each row's top-k tokens (ties with the k-th value stay, as in vLLM
// and transformers), then its smallest set whose probability reaches top_p;
// the rest become -inf. logits: [num_rows, vocab_size]; top_k 0 and top_p 1
// are off. Returns a new tensor, or `logits` when no row asks for either.
torch::Tensor apply_top_k_top_p(const torch::Tensor& logits, const std::vector<int>& top_k,
                                const std::vector<float>& top_p) {
  const int64_t num_rows = logits.size(0), vocab_size = logits.size(1);
  const torch::Device device = logits.device();
  auto k_is_on = [vocab_size](int k) { return k > 0 && k < vocab_size; };
  const bool any_k = std::any_of(top_k.begin(), top_k.end(), k_is_on);
  const bool any_p = std::any_of(top_p.begin(), top_p.end(), [](float p) { return p < 1.0f; });
  if (!any_k && !any_p) return logits;

  if (!any_p) {
    // Top-k alone: the largest max_k values give every row's threshold
    // without sorting the whole vocabulary.
    int max_k = 0;
    for (int k : top_k)
      if (k_is_on(k)) max_k = std::max(max_k, k);
    std::vector<int64_t> kth_index(num_rows);
    std::vector<uint8_t> is_off(num_rows);
    for (int64_t row = 0; row < num_rows; ++row) {
      is_off[row] = !k_is_on(top_k[row]);
      kth_index[row] = is_off[row] ? 0 : top_k[row] - 1;
    }
    auto largest = std::get<0>(logits.topk(max_k, /*dim=*/1));                     // [num_rows, max_k]
    auto kth = largest.gather(1, to_device(kth_index, device).unsqueeze(1));        // [num_rows, 1]
    kth.masked_fill_(to_device(is_off, device).to(torch::kBool).unsqueeze(1), kNegInf);
    return logits.masked_fill(logits < kth, kNegInf);
  }

  // Ascending order, as transformers and vLLM do, so top-p drops a prefix.
  auto [sorted, order] = logits.sort(/*dim=*/1, /*descending=*/false);  // [num_rows, vocab_size]
  if (any_k) {
    // The k-th largest value sits at vocab_size - k; rows without top-k use
    // index 0, the smallest value, which keeps everything.
    std::vector<int64_t> kth_index(num_rows);
    for (int64_t row = 0; row < num_rows; ++row)
      kth_index[row] = k_is_on(top_k[row]) ? vocab_size - top_k[row] : 0;
    auto kth = sorted.gather(1, to_device(kth_index, device).unsqueeze(1));  // [num_rows, 1]
    sorted.masked_fill_(sorted < kth, kNegInf);
  }
  // Drop the least likely tokens while their total stays <= 1 - top_p (after
  // top-k, renormalized); the most likely token always stays.
  std::vector<float> tail(num_rows);
  for (int64_t row = 0; row < num_rows; ++row) tail[row] = 1.0f - top_p[row];
  auto cumulative = sorted.softmax(1).cumsum(1);                                // [num_rows, vocab_size]
  auto drop = cumulative <= to_device(tail, device).unsqueeze(1);
  drop.select(1, vocab_size - 1).fill_(false);
  sorted.masked_fill_(drop, kNegInf);
  return torch::empty_like(sorted).scatter_(1, order, sorted);
}

// Drops tokens whose probability is below min_p times the row's largest, in
// place. logits: [num_rows, vocab_size]; min_p 0 is off.
void apply_min_p(torch::Tensor& logits, const std::vector<float>& min_p) {
  if (std::none_of(min_p.begin(), min_p.end(), [](float p) { return p > 0.0f; })) return;
  auto probs = logits.softmax(1);                                                       // [num_rows, vocab_size]
  auto threshold = probs.amax(1, /*keepdim=*/true) * to_device(min_p, logits.device()).unsqueeze(1);
  logits.masked_fill_(probs < threshold, kNegInf);
}

// logprobs: [n, vocab_size] log_softmax; target_ids: [n] int64; num_top[i]
// alternatives for row i. Ranks count the tokens with a strictly larger
// logprob, so tied tokens share a rank.
std::vector<PositionLogprobs> gather_logprobs(const torch::Tensor& logprobs,
                                              const torch::Tensor& target_ids,
                                              const std::vector<int>& num_top) {
  const int64_t n = logprobs.size(0), vocab_size = logprobs.size(1);
  auto chosen = logprobs.gather(1, target_ids.unsqueeze(1));  // [n, 1]
  auto ranks = (logprobs > chosen).sum(1) + 1;                // [n]
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
  auto ranks_a = ranks_host.accessor<int64_t, 1>();
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

}  // namespace

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
  if (num_rows == 0) return out;

  std::vector<int64_t> greedy_rows, random_rows, logprob_rows;
  bool any_penalties = false;
  for (int64_t row = 0; row < num_rows; ++row) {
    const Sequence& seq = *seqs[row];
    (seq.params().is_greedy() ? greedy_rows : random_rows).push_back(row);
    if (seq.params().logprobs >= 0) logprob_rows.push_back(row);
    any_penalties = any_penalties || needs_penalties(seq);
  }

  // raw feeds the logprobs; x is what gets penalized and sampled.
  torch::Tensor raw = clean_logits(logits);  // [num_rows, vocab_size]
  torch::Tensor x = raw;
  if (any_penalties) {
    x = raw.clone();
    apply_penalties(x, seqs, eos_token_id_);
  }

  torch::Tensor token_ids;  // [num_rows] int64
  if (random_rows.empty()) {
    token_ids = x.argmax(1);  // ties go to the lowest id
  } else if (greedy_rows.empty()) {
    token_ids = sample_random(x, seqs);
  } else {
    token_ids = torch::empty({num_rows}, torch::dtype(torch::kLong).device(device));
    auto greedy_index = to_device(greedy_rows, device);
    token_ids.index_copy_(0, greedy_index, x.index_select(0, greedy_index).argmax(1));
    std::vector<const Sequence*> random_seqs;
    for (int64_t row : random_rows) random_seqs.push_back(seqs[row]);
    auto random_index = to_device(random_rows, device);
    token_ids.index_copy_(0, random_index, sample_random(x.index_select(0, random_index), random_seqs));
  }

  auto token_ids_host = token_ids.cpu();
  const int64_t* ids = token_ids_host.data_ptr<int64_t>();
  out.token_ids.assign(ids, ids + num_rows);

  if (!logprob_rows.empty()) {
    const bool all_rows = static_cast<int64_t>(logprob_rows.size()) == num_rows;
    auto index = all_rows ? torch::Tensor() : to_device(logprob_rows, device);
    auto logprobs = (all_rows ? raw : raw.index_select(0, index)).log_softmax(1);  // [n, vocab_size]
    auto targets = all_rows ? token_ids : token_ids.index_select(0, index);       // [n]
    std::vector<int> num_top;
    for (int64_t row : logprob_rows) num_top.push_back(seqs[row]->params().logprobs);
    auto entries = gather_logprobs(logprobs, targets, num_top);
    for (size_t i = 0; i < logprob_rows.size(); ++i)
      out.logprobs[logprob_rows[i]].push_back(std::move(entries[i]));
  }
  return out;
}

torch::Tensor Sampler::sample_random(const torch::Tensor& logits, const std::vector<const Sequence*>& seqs) {
  const int64_t num_rows = logits.size(0);
  const torch::Device device = logits.device();
  std::vector<float> temperature(num_rows), top_p(num_rows), min_p(num_rows);
  std::vector<int> top_k(num_rows);
  bool any_unseeded = false;
  for (int64_t row = 0; row < num_rows; ++row) {
    const SamplingParams& p = seqs[row]->params();
    temperature[row] = p.temperature;
    top_k[row] = p.top_k;
    top_p[row] = p.top_p;
    min_p[row] = p.min_p;
    any_unseeded = any_unseeded || !p.seed.has_value();
  }
  auto scaled = logits / to_device(temperature, device).unsqueeze(1);  // [num_rows, vocab_size]
  scaled = apply_top_k_top_p(scaled, top_k, top_p);
  apply_min_p(scaled, min_p);
  auto probs = scaled.softmax(1);  // [num_rows, vocab_size]

  // Exponential race: argmax(probs / q) with q ~ Exp(1) draws token i with
  // probability probs[i], and lets each seeded row use its own generator so
  // its draws do not depend on the rest of the batch.
  auto q = torch::empty_like(probs);  // [num_rows, vocab_size]
  if (any_unseeded) q.exponential_(1.0);
  for (int64_t row = 0; row < num_rows; ++row)
    if (seqs[row]->params().seed) q.select(0, row).exponential_(1.0, generator_for(*seqs[row], device));
  // q == 0 would turn a zero-probability token into 0 / 0 = NaN, which argmax picks.
  q.clamp_min_(std::numeric_limits<float>::min());
  return probs.div_(q).argmax(1);
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
