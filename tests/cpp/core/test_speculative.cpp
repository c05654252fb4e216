// Speculative decoding in the core: the n-gram proposer, and an engine that
// speculates producing exactly the tokens of one that does not (greedy),
// through preemption and prefix reuse, with K/V slots checked by the
// FakeRunner at every step; back-off on wasted proposals; the counters.
#include <catch2/catch.hpp>

#include <map>

#include "core/engine.h"
#include "core/ngram_proposer.h"
#include "fake_runner.h"

using namespace modelbench;
using modelbench::testing::FakeRunner;

TEST_CASE("the n-gram proposer continues the latest earlier match of the longest suffix", "[speculative]") {
  // ... 1 2 3 [4 5 6 7] ... 1 2 3 -> 4 5 6 7 (k=4)
  CHECK(propose_ngram({1, 2, 3, 4, 5, 6, 7, 9, 1, 2, 3}, 1, 3, 4) == std::vector<int32_t>{4, 5, 6, 7});
  CHECK(propose_ngram({1, 2, 3, 4, 5, 6, 7, 9, 1, 2, 3}, 1, 3, 2) == std::vector<int32_t>{4, 5});
  // The latest match wins: 2 3 8 follows the later "2 3".
  CHECK(propose_ngram({2, 3, 4, 2, 3, 8, 2, 3}, 2, 2, 1) == std::vector<int32_t>{8});
  // A longer n-gram is tried first: "5 2 3" matches before "2 3" alone.
  CHECK(propose_ngram({5, 2, 3, 7, 2, 3, 8, 5, 2, 3}, 1, 3, 1) == std::vector<int32_t>{7});
  // Never past the end of the tokens; nothing when no n-gram recurs, or too short.
  CHECK(propose_ngram({1, 2, 1, 2}, 2, 2, 5) == std::vector<int32_t>{1, 2});  // up to the end, no further
  CHECK(propose_ngram({1, 2, 3, 1, 2}, 2, 2, 5) == std::vector<int32_t>{3, 1, 2});
  CHECK(propose_ngram({1, 2, 3, 4}, 1, 3, 4).empty());
  CHECK(propose_ngram({7}, 1, 3, 4).empty());
  CHECK(propose_ngram({1, 2, 1}, 1, 1, 0).empty());
}

namespace {
EngineConfig config_with(int num_blocks, int k) {
  EngineConfig c;
  c.cache.num_blocks = num_blocks;
  c.cache.block_size = 4;
  c.scheduler.max_model_len = 128;
  c.scheduler.max_num_batched_tokens = 64;
  c.scheduler.max_num_seqs = 8;
  c.scheduler.speculative.num_speculative_tokens = k;
  c.vocab_size = 1000;
  return c;
}

// A "model" that mostly repeats itself with period 7, so n-gram proposals
// are often right, and sometimes breaks the pattern, so some are wrong.
int32_t periodic(const std::vector<int32_t>& context) {
  const size_t n = context.size();
  if (n < 7) return static_cast<int32_t>(n + 100);
  if (n % 23 == 0) return static_cast<int32_t>(500 + n % 11);  // a break in the pattern
  return context[n - 7];
}

std::map<std::string, std::vector<int32_t>> run(Engine& engine, const std::map<std::string, std::vector<int32_t>>& prompts,
                                                int max_tokens) {
  SamplingParams p;
  p.max_tokens = max_tokens;
  p.temperature = 0.0f;
  for (const auto& [id, prompt] : prompts) engine.add_request(id, prompt, p);
  std::map<std::string, std::vector<int32_t>> got;
  while (engine.has_unfinished_requests())
    for (const RequestOutput& out : engine.step())
      got[out.request_id].insert(got[out.request_id].end(), out.new_token_ids.begin(), out.new_token_ids.end());
  return got;
}
}  // namespace

TEST_CASE("speculating engines give exactly the tokens of plain decoding", "[speculative]") {
  std::map<std::string, std::vector<int32_t>> prompts{
      {"a", {1, 2, 3, 4, 5, 6, 7, 1, 2, 3}},
      {"b", {9, 8, 7, 6, 5}},
      {"c", {1, 2, 3, 4, 5, 6, 7, 1, 2, 3}},  // the same prompt as a: prefix reuse
      {"d", {4, 4, 4, 4, 4, 4, 4, 4, 4}},
  };
  for (int num_blocks : {200, 40}) {  // 40 blocks of 4 tokens: preemptions
    DYNAMIC_SECTION("num_blocks " << num_blocks) {
      auto plain_config = config_with(num_blocks, 0);
      auto plain_runner = std::make_shared<FakeRunner>(num_blocks, 4, 1000);
      plain_runner->next_fn = periodic;
      Engine plain(plain_config, plain_runner);
      const auto expected = run(plain, prompts, 60);

      auto spec_config = config_with(num_blocks, 4);
      auto spec_runner = std::make_shared<FakeRunner>(num_blocks, 4, 1000);
      spec_runner->next_fn = periodic;
      Engine spec(spec_config, spec_runner);
      const auto got = run(spec, prompts, 60);
      CHECK(got == expected);
      for (const auto& [id, tokens] : got) CHECK(tokens.size() == 60);
      const SchedulerStats s = spec.stats().scheduler;
      CHECK(s.num_spec_drafts > 0);
      CHECK(s.num_spec_accepted_tokens > 0);
      CHECK(s.num_spec_accepted_tokens < s.num_spec_draft_tokens);  // the breaks reject some
      REQUIRE(s.num_spec_accepted_tokens_per_pos.size() == 4);
      int64_t by_pos = 0;
      for (int64_t n : s.num_spec_accepted_tokens_per_pos) by_pos += n;
      CHECK(by_pos == s.num_spec_accepted_tokens);
      CHECK(spec.stats().num_steps < plain.stats().num_steps);  // fewer steps for the same tokens
      if (num_blocks == 40) CHECK(s.num_preemptions > 0);
    }
  }
}

TEST_CASE("wasted proposals back off, and requests that cannot be verified never speculate", "[speculative]") {
  SECTION("a model the n-grams never predict") {
    auto config = config_with(200, 4);
    auto runner = std::make_shared<FakeRunner>(200, 4, 5);  // a hash over 5 tokens: n-grams recur, rarely right
    Engine engine(config, runner);
    run(engine, {{"a", {1, 2, 3}}}, 200);
    const SchedulerStats s = engine.stats().scheduler;
    // Without back-off nearly every step would verify a proposal.
    CHECK(s.num_spec_drafts < engine.stats().num_steps / 3);
  }
  SECTION("logprobs, penalties and guides") {
    auto config = config_with(200, 4);
    auto runner = std::make_shared<FakeRunner>(200, 4, 1000);
    runner->next_fn = periodic;
    Engine engine(config, runner);
    SamplingParams p;
    p.max_tokens = 40;
    p.logprobs = 1;
    engine.add_request("logprobs", {1, 2, 3, 4, 5, 6, 7, 1, 2}, p);
    p.logprobs = -1;
    p.repetition_penalty = 1.2f;
    engine.add_request("penalty", {1, 2, 3, 4, 5, 6, 7, 1, 2}, p);
    while (engine.has_unfinished_requests()) engine.step();
    CHECK(engine.stats().scheduler.num_spec_drafts == 0);
  }
}

TEST_CASE("speculative settings are checked", "[speculative]") {
  SpeculativeConfig c;
  c.num_speculative_tokens = -1;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("num_speculative_tokens"));
  c.num_speculative_tokens = 3;
  c.prompt_lookup_min = 4;
  c.prompt_lookup_max = 2;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("prompt_lookup_max"));
  c.prompt_lookup_min = 0;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("prompt_lookup_min"));
}
