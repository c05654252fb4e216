// Sampler: greedy, truncation (top-k, top-p, min-p), penalties, min_tokens,
// seeded generators, sampling frequencies, logprobs and bad input.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "runner/sampler.h"

// c10's logging defines a one-argument CHECK that aborts; Catch's must win,
// so Catch comes last.
#undef CHECK
#include <catch2/catch.hpp>

using namespace modelbench;

namespace {

const float kNegInfinity = -std::numeric_limits<float>::infinity();

SamplingParams greedy() {
  SamplingParams params;
  params.temperature = 0.0f;
  return params;
}

Sequence make_seq(const std::string& request_id, const SamplingParams& params,
                  std::vector<int32_t> prompt_ids = {0}, const std::vector<int32_t>& output_ids = {}) {
  Sequence seq(request_id, std::move(prompt_ids), params, 0, 0);
  for (int32_t id : output_ids) seq.append_token(id);
  return seq;
}

std::vector<const Sequence*> rows_of(const std::vector<Sequence>& seqs) {
  std::vector<const Sequence*> rows;
  for (const Sequence& seq : seqs) rows.push_back(&seq);
  return rows;
}

std::vector<int32_t> sample(Sampler& sampler, const torch::Tensor& logits,
                            const std::vector<Sequence>& seqs) {
  return sampler.sample(logits, rows_of(seqs)).token_ids;
}

// The same params for `num_rows` rows.
std::vector<Sequence> copies(const SamplingParams& params, int num_rows) {
  std::vector<Sequence> seqs;
  for (int i = 0; i < num_rows; ++i) seqs.push_back(make_seq("r" + std::to_string(i), params));
  return seqs;
}

std::vector<int32_t> argmax_ids(const torch::Tensor& logits) {
  auto ids = logits.argmax(1).to(torch::kInt);
  return {ids.data_ptr<int32_t>(), ids.data_ptr<int32_t>() + ids.numel()};
}

// One row of logits, [1, n].
torch::Tensor row(const std::vector<float>& values) { return torch::tensor(values).unsqueeze(0); }

// Pearson's statistic of observed token counts against expected
// probabilities; infinite if a token of probability 0 was drawn.
double chi_square(const std::vector<int32_t>& tokens, const torch::Tensor& probs) {
  auto expected_counts = probs.to(torch::kDouble).contiguous() * static_cast<double>(tokens.size());
  const double* expected = expected_counts.data_ptr<double>();
  std::vector<double> observed(probs.numel(), 0.0);
  for (int32_t id : tokens) observed.at(id) += 1.0;
  double statistic = 0.0;
  for (int64_t i = 0; i < probs.numel(); ++i) {
    if (expected[i] > 0) statistic += (observed[i] - expected[i]) * (observed[i] - expected[i]) / expected[i];
    else if (observed[i] > 0) return std::numeric_limits<double>::infinity();
  }
  return statistic;
}

}  // namespace

TEST_CASE("greedy picks the argmax, ties going to the lowest id", "[sampler]") {
  torch::manual_seed(0);
  Sampler sampler;
  auto logits = torch::randn({8, 1000});  // [8, 1000]
  CHECK(sample(sampler, logits, copies(greedy(), 8)) == argmax_ids(logits));
  CHECK(sample(sampler, row({1.0f, 3.0f, 3.0f, 0.0f}), copies(greedy(), 1)) == std::vector<int32_t>{1});
}

TEST_CASE("greedy over a decode batch's logits equals ATen's argmax row by row", "[sampler]") {
  torch::manual_seed(1);
  Sampler sampler;
  auto logits = torch::randn({33, 49152});  // more rows than threads, a real vocabulary
  logits[5].fill_(2.0f);                    // a row of ties: the lowest id
  logits[7].fill_(kNegInfinity);            // nothing finite: id 0, as ATen
  logits[9][49151] = 100.0f;                // the last id wins
  const auto ids = sample(sampler, logits, copies(greedy(), 33));
  CHECK(ids == argmax_ids(logits));
  CHECK(ids[5] == 0);
  CHECK(ids[7] == 0);
  CHECK(ids[9] == 49151);
  // A NaN in one row of many: that row reads it as -inf, the others are untouched.
  logits[3][10] = std::nanf("");
  logits[3][20] = 50.0f;
  const auto with_nan = sample(sampler, logits, copies(greedy(), 33));
  CHECK(with_nan[3] == 20);
  CHECK(with_nan[9] == 49151);
}

TEST_CASE("top_k=1, a tiny top_p and min_p=1 reduce to greedy at any temperature", "[sampler]") {
  torch::manual_seed(1);
  Sampler sampler;
  for (float temperature : {0.3f, 1.0f, 5.0f}) {
    SamplingParams top_k, top_p, min_p;
    top_k.top_k = 1;
    top_p.top_p = 1e-6f;
    min_p.min_p = 1.0f;
    for (SamplingParams* params : {&top_k, &top_p, &min_p}) {
      params->temperature = temperature;
      for (int trial = 0; trial < 5; ++trial) {
        auto logits = torch::randn({8, 500});  // [8, 500]
        CHECK(sample(sampler, logits, copies(*params, 8)) == argmax_ids(logits));
      }
    }
  }
}

TEST_CASE("top_k, top_p and min_p keep exactly the expected tokens", "[sampler]") {
  torch::manual_seed(2);
  Sampler sampler;
  // probabilities 0.5, 0.3, 0.15, 0.05
  auto logits = torch::log(torch::tensor({0.5f, 0.3f, 0.15f, 0.05f})).unsqueeze(0).repeat({2000, 1});
  auto seen = [&](const SamplingParams& params) {
    auto tokens = sample(sampler, logits, copies(params, 2000));
    return std::set<int32_t>(tokens.begin(), tokens.end());
  };
  SamplingParams params;
  params.top_k = 2;
  CHECK(seen(params) == std::set<int32_t>({0, 1}));
  params = {};
  params.top_p = 0.75f;  // 0.5 < 0.75 <= 0.8
  CHECK(seen(params) == std::set<int32_t>({0, 1}));
  params.top_p = 0.85f;
  CHECK(seen(params) == std::set<int32_t>({0, 1, 2}));
  params = {};
  params.min_p = 0.25f;  // threshold 0.125
  CHECK(seen(params) == std::set<int32_t>({0, 1, 2}));
  params.top_k = 2;  // the intersection
  CHECK(seen(params) == std::set<int32_t>({0, 1}));
  params = {};
  CHECK(seen(params) == std::set<int32_t>({0, 1, 2, 3}));
}

TEST_CASE("top-p sets wider than the first candidates are found exactly", "[sampler]") {
  // Decaying distributions whose top_p = 0.5 sets (~69 tokens of 8192, ~645
  // of 3000) lie past the sampler's first 64 candidates, so it searches the
  // whole row for them.
  for (auto [vocab_size, slope, num_rows] :
       {std::tuple{8192, 0.01f, 2000}, std::tuple{3000, 0.001f, 4000}}) {
    CAPTURE(vocab_size);
    auto logits = torch::arange(vocab_size, torch::kFloat).mul_(-slope).unsqueeze(0);  // [1, vocab]
    auto cumulative = logits[0].to(torch::kDouble).softmax(0).cumsum(0);
    const int64_t num_kept = 1 + (cumulative.slice(0, 0, vocab_size - 1) < 0.5).sum().item<int64_t>();
    REQUIRE(num_kept > 64);
    SamplingParams params;
    params.top_p = 0.5f;
    torch::manual_seed(9);
    Sampler sampler;
    auto tokens = sample(sampler, logits.repeat({num_rows, 1}), copies(params, num_rows));
    const int32_t last = *std::max_element(tokens.begin(), tokens.end());
    CHECK(last < num_kept);                 // never past the boundary
    CHECK(last >= num_kept - num_kept / 20);  // and right up to it

    // The same row, seeded, takes the same draws whether the sampler searches
    // it by selection (alone) or takes the topk of the whole vocabulary
    // (which a neighbour's top_k = vocab - 1 asks for).
    params.seed = 5;
    SamplingParams wide;
    wide.top_k = vocab_size - 1;
    wide.top_p = 0.9f;
    Sampler alone, beside;
    for (int step = 0; step < 30; ++step) {
      auto by_itself = sample(alone, logits, {make_seq("s", params)});
      auto in_pair = sample(beside, logits.repeat({2, 1}), {make_seq("s", params), make_seq("w", wide)});
      REQUIRE(by_itself[0] == in_pair[0]);
    }
  }
}

TEST_CASE("top-k keeps every token tied with the k-th, also past the candidates", "[sampler]") {
  // Tokens 0..9 are distinct and likely; 10..199 tie; the rest are unlikely.
  // top_k = 20 ends inside the tie, so all 200 stay; top_p = 0.95 ends inside
  // it too, and the whole tie stays with it.
  std::vector<float> values(1000, -20.0f);
  for (int i = 0; i < 200; ++i) values[i] = i < 10 ? 1.0f - 0.05f * i : 0.0f;
  auto logits = row(values).repeat({5000, 1});  // [5000, 1000]
  SamplingParams params;
  params.top_k = 20;
  params.top_p = 0.95f;
  torch::manual_seed(10);
  Sampler sampler;
  auto tokens = sample(sampler, logits, copies(params, 5000));
  std::set<int32_t> expected;
  for (int i = 0; i < 200; ++i) expected.insert(i);
  CHECK(std::set<int32_t>(tokens.begin(), tokens.end()) == expected);

  // Now the head holds ~46% of what top-k keeps and top_p = 0.28 ends inside
  // it: the cut needs the tie's full mass, not just the part among the first
  // candidates (that would cut two tokens early).
  for (int i = 0; i < 10; ++i) values[i] = 3.0f - 0.05f * i;
  auto kept = torch::tensor(values).slice(0, 0, 200).to(torch::kDouble).softmax(0).cumsum(0);
  const int64_t num_kept = 1 + (kept.slice(0, 0, 199) < 0.28).sum().item<int64_t>();
  REQUIRE(num_kept == 6);
  params.top_p = 0.28f;
  tokens = sample(sampler, row(values).repeat({2000, 1}), copies(params, 2000));
  expected.clear();
  for (int i = 0; i < num_kept; ++i) expected.insert(i);
  CHECK(std::set<int32_t>(tokens.begin(), tokens.end()) == expected);
}

TEST_CASE("repetition penalty divides positive and multiplies negative logits of seen tokens", "[sampler]") {
  Sampler sampler;
  SamplingParams params = greedy();
  params.repetition_penalty = 2.0f;
  auto logits = row({0.0f, 2.0f, 1.5f, -1.0f});
  // 1 is in the prompt: 2.0 -> 1.0 < 1.5.
  CHECK(sample(sampler, logits, {make_seq("a", params, {1})}) == std::vector<int32_t>{2});
  // 2 is in the output too: 1.5 -> 0.75 < 1.0.
  CHECK(sample(sampler, logits, {make_seq("a", params, {1}, {2})}) == std::vector<int32_t>{1});
  // Negative logits get more negative: -1.0 -> -2.0 < -1.5.
  params.repetition_penalty = 1.5f;
  CHECK(sample(sampler, row({-1.0f, -1.2f, -5.0f}), {make_seq("a", params, {0})}) == std::vector<int32_t>{1});
  // A penalty below 1 rewards repetition: 1.5 -> 3.0.
  params.repetition_penalty = 0.5f;
  CHECK(sample(sampler, row({2.0f, 1.5f}), {make_seq("a", params, {1})}) == std::vector<int32_t>{1});
}

TEST_CASE("frequency and presence penalties count output tokens only", "[sampler]") {
  Sampler sampler;
  auto logits = row({3.0f, 2.5f, 0.0f});
  SamplingParams params = greedy();
  params.frequency_penalty = 0.2f;  // 3.0 - 3 * 0.2 = 2.4 < 2.5
  CHECK(sample(sampler, logits, {make_seq("a", params, {2}, {0, 0, 0})}) == std::vector<int32_t>{1});
  params.frequency_penalty = 0.1f;  // 2.7 > 2.5
  CHECK(sample(sampler, logits, {make_seq("a", params, {2}, {0, 0, 0})}) == std::vector<int32_t>{0});
  params = greedy();
  params.presence_penalty = 1.0f;  // 3.0 - 1.0 = 2.0 < 2.5, however often 0 appeared
  CHECK(sample(sampler, logits, {make_seq("a", params, {2}, {0})}) == std::vector<int32_t>{1});
  params.presence_penalty = -1.0f;  // a negative penalty rewards: 2.5 + 1.0 > 3.0
  CHECK(sample(sampler, logits, {make_seq("a", params, {2}, {1})}) == std::vector<int32_t>{1});
  params.presence_penalty = 2.0f;
  params.frequency_penalty = 2.0f;  // prompt tokens do not count
  CHECK(sample(sampler, logits, {make_seq("a", params, {0, 0, 0})}) == std::vector<int32_t>{0});
}

TEST_CASE("min_tokens holds back EOS and stop ids, even with ignore_eos", "[sampler]") {
  Sampler sampler(/*eos_token_id=*/3);
  auto logits = row({0.0f, 1.0f, 2.0f, 5.0f, 4.0f});
  SamplingParams params = greedy();
  params.stop_token_ids = {4};
  params.min_tokens = 2;
  CHECK(sample(sampler, logits, {make_seq("a", params)}) == std::vector<int32_t>{2});
  CHECK(sample(sampler, logits, {make_seq("a", params, {0}, {1})}) == std::vector<int32_t>{2});
  CHECK(sample(sampler, logits, {make_seq("a", params, {0}, {1, 1})}) == std::vector<int32_t>{3});
  params.ignore_eos = true;
  CHECK(sample(sampler, logits, {make_seq("a", params)}) == std::vector<int32_t>{2});
  params.min_tokens = 0;
  CHECK(sample(sampler, logits, {make_seq("a", params)}) == std::vector<int32_t>{3});
}

TEST_CASE("a seeded request draws the same tokens whatever else is in the batch", "[sampler]") {
  constexpr int kVocab = 1003, kSteps = 20;
  torch::manual_seed(3);
  auto logits = torch::randn({1, kVocab});  // [1, vocab]
  SamplingParams seeded;
  seeded.seed = 42;
  seeded.top_k = 500;

  auto run_alone = [&](Sampler& sampler) {
    std::vector<int32_t> tokens;
    for (int step = 0; step < kSteps; ++step)
      tokens.push_back(sample(sampler, logits, {make_seq("s", seeded)})[0]);
    return tokens;
  };
  Sampler first, second;
  const auto alone = run_alone(first);
  CHECK(run_alone(second) == alone);

  // Row 3 of a batch of 8 whose other rows mix greedy, unseeded, other seeds,
  // top-p (which changes how many candidates every row gets) and penalties.
  Sampler batched;
  std::vector<int32_t> in_batch;
  for (int step = 0; step < kSteps; ++step) {
    std::vector<Sequence> seqs;
    for (int i = 0; i < 8; ++i) {
      SamplingParams other;
      if (i % 4 == 0) other = greedy();
      if (i % 4 == 1) other.seed = 1000 + i;
      if (i % 4 == 2) other.top_p = 0.9f;
      other.repetition_penalty = 1.2f;
      seqs.push_back(i == 3 ? make_seq("s", seeded) : make_seq("o" + std::to_string(i), other, {1, 2}));
    }
    auto batch = torch::randn({8, kVocab});  // [8, vocab]
    batch[3].copy_(logits[0]);
    in_batch.push_back(sample(batched, batch, seqs)[3]);
  }
  CHECK(in_batch == alone);

  // Dropping the request forgets its generator: the stream starts over.
  first.drop_request("s");
  CHECK(run_alone(first) == alone);

  seeded.seed = 43;
  Sampler other_seed;
  CHECK(run_alone(other_seed) != alone);
}

TEST_CASE("temperature sampling follows softmax(logits / temperature)", "[sampler]") {
  // Chi-square with 4 degrees of freedom: 20.5 is exceeded with probability
  // 4e-4; the draws are seeded, so the outcome is fixed, not flaky.
  auto logits = torch::tensor({1.0f, 0.5f, 0.0f, -0.5f, -1.0f});  // [5]
  const float temperature = 0.7f;
  auto probs = (logits / temperature).softmax(0);
  SamplingParams params;
  params.temperature = temperature;

  SECTION("unseeded rows, batched") {
    torch::manual_seed(4);
    Sampler sampler;
    auto tokens = sample(sampler, logits.unsqueeze(0).repeat({20000, 1}), copies(params, 20000));
    CHECK(chi_square(tokens, probs) < 20.5);
  }
  SECTION("one seeded row over many steps") {
    params.seed = 7;
    Sampler sampler;
    std::vector<int32_t> tokens;
    for (int step = 0; step < 3000; ++step)
      tokens.push_back(sample(sampler, logits.unsqueeze(0), {make_seq("s", params)})[0]);
    CHECK(chi_square(tokens, probs) < 20.5);
  }
  SECTION("tokens spread over the sampler's blocks, their edges and the tail") {
    const std::vector<int64_t> ids = {5, 1023, 1024, 2047, 2048, 2599};
    auto wide = torch::full({2600}, kNegInfinity);  // [2600]
    for (size_t i = 0; i < ids.size(); ++i) wide[ids[i]] = 0.4f * static_cast<float>(i) - 1.0f;
    auto expected = (wide / temperature).softmax(0);  // [2600]
    torch::manual_seed(11);
    Sampler sampler;
    auto tokens = sample(sampler, wide.unsqueeze(0).repeat({20000, 1}), copies(params, 20000));
    CHECK(chi_square(tokens, expected) < 25.7);  // 5 degrees of freedom, p = 1e-4
  }
  SECTION("top-k renormalizes over the kept tokens") {
    torch::manual_seed(5);
    params.top_k = 3;
    Sampler sampler;
    auto tokens = sample(sampler, logits.unsqueeze(0).repeat({20000, 1}), copies(params, 20000));
    auto kept = probs.clone();
    kept.slice(0, 3).zero_();
    CHECK(chi_square(tokens, kept / kept.sum()) < 20.5);
  }
}

TEST_CASE("logprobs are the raw log_softmax with ranks and the top n", "[sampler]") {
  torch::manual_seed(6);
  Sampler sampler;
  auto logits = torch::randn({3, 50});  // [3, 50]
  auto expected = logits.log_softmax(1);
  SamplingParams with_top;
  with_top.logprobs = 5;
  with_top.temperature = 0.8f;          // neither temperature nor penalties
  with_top.repetition_penalty = 1.3f;   // change the reported logprobs
  SamplingParams chosen_only = greedy();
  chosen_only.logprobs = 0;
  SamplingParams none;
  std::vector<Sequence> seqs = {make_seq("a", with_top, {1, 2, 3}), make_seq("b", chosen_only),
                                make_seq("c", none)};
  auto out = sampler.sample(logits, rows_of(seqs));
  REQUIRE(out.logprobs.size() == 3);
  REQUIRE(out.logprobs[0].size() == 1);
  REQUIRE(out.logprobs[1].size() == 1);
  CHECK(out.logprobs[2].empty());

  for (int r : {0, 1}) {
    const TokenLogprob& chosen = out.logprobs[r][0].chosen;
    CHECK(chosen.token_id == out.token_ids[r]);
    CHECK(chosen.logprob == Approx(expected[r][chosen.token_id].item<float>()).margin(1e-5));
    CHECK(chosen.rank == 1 + (expected[r] > expected[r][chosen.token_id]).sum().item<int>());
  }
  CHECK(out.logprobs[1][0].chosen.rank == 1);  // greedy
  CHECK(out.logprobs[1][0].top.empty());

  const auto& top = out.logprobs[0][0].top;
  REQUIRE(top.size() == 5);
  auto [values, ids] = expected[0].topk(5);
  for (int j = 0; j < 5; ++j) {
    CHECK(top[j].token_id == ids[j].item<int64_t>());
    CHECK(top[j].logprob == Approx(values[j].item<float>()).margin(1e-5));
    CHECK(top[j].rank == j + 1);
  }
}

TEST_CASE("compute_logprobs matches log_softmax for given targets", "[sampler]") {
  torch::manual_seed(7);
  auto logits = torch::randn({6, 40});                                 // [6, 40]
  auto targets = torch::randint(40, {6}, torch::kLong);                // [6]
  auto expected = logits.log_softmax(1);
  auto entries = Sampler::compute_logprobs(logits, targets, 3);
  REQUIRE(entries.size() == 6);
  for (int i = 0; i < 6; ++i) {
    const int64_t target = targets[i].item<int64_t>();
    CHECK(entries[i].chosen.token_id == target);
    CHECK(entries[i].chosen.logprob == Approx(expected[i][target].item<float>()).margin(1e-5));
    CHECK(entries[i].chosen.rank == 1 + (expected[i] > expected[i][target]).sum().item<int>());
    REQUIRE(entries[i].top.size() == 3);
    CHECK(entries[i].top[0].token_id == expected[i].argmax().item<int64_t>());
  }
  CHECK(Sampler::compute_logprobs(logits, targets, 0)[0].top.empty());
  CHECK_THROWS_AS(Sampler::compute_logprobs(logits, targets + 40, 1), c10::Error);
}

TEST_CASE("NaN logits read as -inf and do not crash", "[sampler]") {
  torch::manual_seed(8);
  Sampler sampler;
  const float nan = std::nanf("");
  auto logits = row({nan, 1.0f, nan, 0.5f, nan});
  SamplingParams params;
  params.logprobs = 2;
  CHECK(sample(sampler, logits, copies(greedy(), 1)) == std::vector<int32_t>{1});
  auto tokens = sample(sampler, logits.repeat({1000, 1}), copies(params, 1000));
  CHECK(std::set<int32_t>(tokens.begin(), tokens.end()) == std::set<int32_t>({1, 3}));

  // A row with nothing finite still yields some token id in range.
  auto broken = torch::full({2, 4}, nan);
  for (const SamplingParams& p : {greedy(), params}) {
    auto out = sampler.sample(broken, rows_of(copies(p, 2)));
    for (int32_t id : out.token_ids) CHECK((id >= 0 && id < 4));
  }
}

TEST_CASE("logits of the wrong shape are rejected", "[sampler]") {
  Sampler sampler;
  auto seqs = copies(greedy(), 2);
  CHECK_THROWS_AS(sampler.sample(torch::zeros({10}), rows_of(seqs)), c10::Error);
  CHECK_THROWS_AS(sampler.sample(torch::zeros({3, 10}), rows_of(seqs)), c10::Error);
  std::vector<const Sequence*> no_rows;
  CHECK(sampler.sample(torch::zeros({0, 10}), no_rows).token_ids.empty());
}

namespace {
// A guided sequence whose guide already holds `allowed` for its next position.
Sequence guided_seq(const std::string& id, SamplingParams params, const std::vector<int32_t>& allowed,
                    int vocab_size, const std::vector<int32_t>& output_ids = {}) {
  params.guided = true;
  Sequence seq = make_seq(id, params, {0}, output_ids);
  seq.guide = std::make_shared<TokenGuide>();
  TokenMask mask((vocab_size + 31) / 32, 0);
  for (int32_t t : allowed) mask[t >> 5] |= 1u << (t & 31);
  seq.guide->post(seq.num_output_tokens(), std::move(mask));
  return seq;
}
}  // namespace

TEST_CASE("a guided row samples only tokens its mask allows, beside unguided rows", "[sampler][guided]") {
  constexpr int kVocab = 100;
  torch::manual_seed(5);
  auto logits = torch::randn({3, kVocab});
  logits[0][7] = 50.0f;  // every row's favourite is 7
  logits[1][7] = 50.0f;
  logits[2][7] = 50.0f;
  Sampler sampler;
  SamplingParams random;
  random.temperature = 1.0f;
  random.seed = 1;
  std::vector<Sequence> seqs;
  seqs.push_back(guided_seq("g", greedy(), {40, 41, 90}, kVocab, {5}));
  seqs.push_back(make_seq("u", greedy()));
  seqs.push_back(guided_seq("r", random, {3, 64, 65}, kVocab));
  auto out = sampler.sample(logits, rows_of(seqs));
  int64_t best = logits[0].index_select(0, torch::tensor({40, 41, 90})).argmax().item<int64_t>();
  CHECK(out.token_ids[0] == std::vector<int32_t>{40, 41, 90}[best]);  // the best allowed, not 7
  CHECK(out.token_ids[1] == 7);
  CHECK(std::set<int32_t>{3, 64, 65}.count(out.token_ids[2]) == 1);
  CHECK(out.guide_failed == std::vector<uint8_t>{0, 0, 0});
  // Drawn many times, a guided random row never leaves its set.
  for (int i = 0; i < 50; ++i) {
    std::vector<Sequence> one;
    SamplingParams unseeded;
    one.push_back(guided_seq("x" + std::to_string(i), unseeded, {1, 2}, kVocab));
    auto drawn = sampler.sample(torch::randn({1, kVocab}), rows_of(one)).token_ids[0];
    CHECK((drawn == 1 || drawn == 2));
  }
}

TEST_CASE("a guided row whose mask allows nothing, or whose guide is cancelled, is marked failed",
          "[sampler][guided]") {
  constexpr int kVocab = 64;
  Sampler sampler;
  std::vector<Sequence> seqs;
  seqs.push_back(guided_seq("empty", greedy(), {}, kVocab));
  seqs.push_back(guided_seq("cancelled", greedy(), {1}, kVocab, {1}));
  seqs[1].guide = std::make_shared<TokenGuide>();  // nothing posted for its position
  seqs[1].guide->cancel();
  seqs.push_back(guided_seq("fine", greedy(), {9}, kVocab));
  auto out = sampler.sample(torch::zeros({3, kVocab}), rows_of(seqs));
  CHECK(out.guide_failed == std::vector<uint8_t>{1, 1, 0});
  CHECK(out.token_ids[2] == 9);
  CHECK_THAT(seqs[0].guide->error(), Catch::Contains("allows no token"));
}

TEST_CASE("verifying drafts keeps greedy tokens and sampling's distribution", "[sampler][speculative]") {
  constexpr int kVocab = 6;
  Sampler sampler;
  SECTION("greedy: drafts stand while they are the argmax, then the argmax follows") {
    // Rows: after the last token, after draft 0, after draft 1.
    auto logits = torch::tensor({{0.f, 5.f, 1.f, 0.f, 0.f, 0.f},
                                 {0.f, 0.f, 0.f, 7.f, 0.f, 0.f},
                                 {2.f, 0.f, 0.f, 0.f, 0.f, 0.f}});
    Sequence seq = make_seq("g", greedy());
    CHECK(sampler.verify(logits, seq, {1, 3}) == std::vector<int32_t>{1, 3, 0});  // both stand, then 0
    CHECK(sampler.verify(logits, seq, {1, 4}) == std::vector<int32_t>{1, 3});     // the second is replaced
    CHECK(sampler.verify(logits, seq, {2, 3}) == std::vector<int32_t>{1});        // the first is replaced
  }
  SECTION("sampled: the first token is distributed as plain sampling's, whatever the draft") {
    torch::manual_seed(11);
    auto logits = torch::tensor({{1.0f, 2.0f, 0.5f, -1.0f, 0.0f, 1.5f}, {0.f, 0.f, 0.f, 0.f, 0.f, 0.f}});
    auto p = torch::softmax(logits[0], 0);
    SamplingParams params;
    params.temperature = 1.0f;
    Sequence seq = make_seq("s", params);
    constexpr int kTrials = 20000;
    for (int32_t draft : {1, 3}) {  // a likely and an unlikely draft
      std::vector<int> counts(kVocab, 0);
      for (int i = 0; i < kTrials; ++i) ++counts[sampler.verify(logits, seq, {draft})[0]];
      for (int t = 0; t < kVocab; ++t) {
        const double expected = p[t].item<double>();
        const double sd = std::sqrt(expected * (1 - expected) / kTrials);
        CHECK(std::abs(counts[t] / double(kTrials) - expected) < 5 * sd + 1e-3);
      }
    }
  }
  SECTION("sampled with top-k: a draft outside the kept set never stands") {
    auto logits = torch::tensor({{3.0f, 2.0f, 0.0f, 0.0f, 0.0f, 0.0f}, {0.f, 0.f, 0.f, 0.f, 0.f, 0.f}});
    SamplingParams params;
    params.top_k = 2;
    Sequence seq = make_seq("k", params);
    for (int i = 0; i < 200; ++i) {
      auto tokens = sampler.verify(logits, seq, {4});
      REQUIRE(tokens.size() == 1);
      CHECK((tokens[0] == 0 || tokens[0] == 1));
    }
  }
}
