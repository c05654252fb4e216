// Engine: validation of requests, stepping by hand, the background loop
// with submissions from many threads, abort mid-flight, shutdown.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "core/engine.h"
#include "fake_runner.h"

using namespace modelbench;
using modelbench::testing::FakeRunner;
using modelbench::testing::next_token_of;

namespace {
EngineConfig small_config(int num_blocks = 256) {
  EngineConfig c;
  c.cache.num_blocks = num_blocks;
  c.cache.block_size = 16;
  c.scheduler.max_model_len = 512;
  c.scheduler.max_num_batched_tokens = 256;
  c.scheduler.max_num_seqs = 32;
  c.vocab_size = 1000;
  return c;
}
SamplingParams tokens(int n) {
  SamplingParams p;
  p.max_tokens = n;
  return p;
}
std::shared_ptr<FakeRunner> runner_for(const EngineConfig& c) {
  return std::make_shared<FakeRunner>(c.cache.num_blocks, c.cache.block_size, 1000);
}
}  // namespace

TEST_CASE("bad requests get a clear error", "[engine]") {
  auto config = small_config();
  Engine engine(config, runner_for(config));
  REQUIRE_THROWS_WITH(engine.add_request("a", {}, tokens(4)), Catch::Contains("empty prompt"));
  REQUIRE_THROWS_WITH(engine.add_request("a", {1}, tokens(0)), "max_tokens must be >= 1, got 0");
  REQUIRE_THROWS_WITH(engine.add_request("a", std::vector<int32_t>(513, 1), tokens(4)),
                      Catch::Contains("more than max_model_len=512"));
  REQUIRE_THROWS_WITH(engine.add_request("a", {1, 5000}, tokens(4)),
                      Catch::Contains("outside the vocabulary"));
  REQUIRE_THROWS_WITH(engine.add_request("", {1}, tokens(4)), Catch::Contains("request_id"));
  engine.add_request("a", {1}, tokens(4));
  REQUIRE_THROWS_WITH(engine.add_request("a", {1}, tokens(4)), Catch::Contains("already in use"));
  REQUIRE_FALSE(engine.abort("unknown"));  // a no-op that says so
  REQUIRE_THROWS_AS(engine.add_request("a", {}, tokens(4)), std::invalid_argument);
}

namespace {
// The `param` of the InvalidArgument that `call` throws.
template <typename Call>
std::string param_of(Call call) {
  try {
    call();
  } catch (const InvalidArgument& e) {
    return e.param();
  }
  return "(no InvalidArgument)";
}
}  // namespace

TEST_CASE("a bad request's error names the field in param", "[engine]") {
  auto config = small_config();
  Engine engine(config, runner_for(config));
  REQUIRE(param_of([&] { engine.add_request("a", {}, tokens(4)); }) == "prompt");
  REQUIRE(param_of([&] { engine.add_request("a", std::vector<int32_t>(513, 1), tokens(4)); }) == "prompt");
  REQUIRE(param_of([&] { engine.add_request("a", {1, 5000}, tokens(4)); }) == "prompt");
  REQUIRE(param_of([&] { engine.add_request("a", {1}, tokens(0)); }) == "max_tokens");
  REQUIRE(param_of([&] { engine.add_request("", {1}, tokens(4)); }) == "request_id");
}

TEST_CASE("step by hand runs requests to completion", "[engine]") {
  auto config = small_config();
  Engine engine(config, runner_for(config));
  engine.add_request("a", {1, 2, 3}, tokens(5));
  engine.add_request("b", {4, 5}, tokens(3));
  std::map<std::string, std::vector<int32_t>> got;
  std::map<std::string, std::string> reason;
  while (engine.has_unfinished_requests()) {
    for (const auto& out : engine.step()) {
      got[out.request_id].insert(got[out.request_id].end(), out.new_token_ids.begin(), out.new_token_ids.end());
      if (out.finished) reason[out.request_id] = finish_reason_name(out.finish_reason);
    }
  }
  REQUIRE(got["a"].size() == 5);
  REQUIRE(got["b"].size() == 3);
  REQUIRE(reason["a"] == "length");
  std::vector<int32_t> ctx{1, 2, 3};
  REQUIRE(got["a"][0] == next_token_of(ctx, 1000));
  auto stats = engine.stats();
  REQUIRE(stats.num_generation_tokens == 8);
  REQUIRE(stats.num_prompt_tokens == 5);
  REQUIRE(stats.scheduler.kv_cache_usage == 0.0);
}

TEST_CASE("the loop serves submissions from many threads, with aborts mid-flight", "[engine]") {
  auto config = small_config(128);
  Engine engine(config, runner_for(config));
  engine.start();
  constexpr int kThreads = 8, kPerThread = 125;
  std::atomic<int> aborted_ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = std::to_string(t) + "-" + std::to_string(i);
        engine.add_request(id, {t + 1, i + 1, 7}, tokens(1 + (i % 20)), i % 3);
        if (i % 10 == 0 && engine.abort(id)) ++aborted_ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::string> finished;
  int num_abort = 0;
  while (static_cast<int>(finished.size()) < kThreads * kPerThread) {
    auto outs = engine.get_outputs(10.0);
    REQUIRE(!outs.empty());
    for (const auto& out : outs) {
      if (!out.finished) continue;
      REQUIRE(finished.insert(out.request_id).second);  // finishes exactly once
      if (out.finish_reason == FinishReason::kAbort) ++num_abort;
    }
  }
  // An abort that races with the request's last step may find it finished.
  REQUIRE(num_abort <= aborted_ok.load());
  REQUIRE(num_abort > 0);
  REQUIRE_FALSE(engine.has_unfinished_requests());
  engine.shutdown();
  REQUIRE_FALSE(engine.is_running());
  REQUIRE(engine.stats().scheduler.num_free_blocks == 128);
  REQUIRE_THROWS_WITH(engine.add_request("late", {1}, tokens(1)), Catch::Contains("shut down"));
}

TEST_CASE("shutdown joins cleanly and aborts what is left", "[engine]") {
  auto config = small_config();
  Engine engine(config, runner_for(config));
  engine.start();
  REQUIRE_THROWS_WITH(engine.step(), Catch::Contains("background loop"));
  for (int i = 0; i < 20; ++i) engine.add_request("r" + std::to_string(i), {1, 2}, tokens(400));
  engine.shutdown();
  REQUIRE_FALSE(engine.has_unfinished_requests());
  int aborted = 0;
  for (const auto& out : engine.get_outputs(0.0))
    if (out.finished && out.finish_reason == FinishReason::kAbort) ++aborted;
  REQUIRE(aborted > 0);
}

TEST_CASE("an idle loop sleeps and wakes on new work", "[engine]") {
  auto config = small_config();
  auto runner = runner_for(config);
  Engine engine(config, runner);
  engine.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(runner->num_steps == 0);  // no busy stepping without work
  engine.add_request("a", {1}, tokens(3));
  std::vector<int32_t> got;
  while (true) {
    bool done = false;
    for (const auto& out : engine.get_outputs(5.0)) {
      got.insert(got.end(), out.new_token_ids.begin(), out.new_token_ids.end());
      done |= out.finished;
    }
    if (done) break;
  }
  REQUIRE(got.size() == 3);
}

namespace {
struct ThrowingRunner : ModelRunner {
  RunnerOutput execute_model(const SchedulerOutput&) override { throw std::runtime_error("device lost"); }
};
}  // namespace

TEST_CASE("a runner failure ends every request instead of hanging", "[engine]") {
  auto config = small_config();
  Engine engine(config, std::make_shared<ThrowingRunner>());
  engine.start();
  engine.add_request("a", {1}, tokens(3));
  std::vector<RequestOutput> outs;
  for (int i = 0; i < 100 && outs.empty(); ++i) outs = engine.get_outputs(1.0);
  REQUIRE(outs.size() == 1);
  REQUIRE(outs[0].finished);
  REQUIRE(outs[0].finish_reason == FinishReason::kAbort);
  REQUIRE_THROWS_WITH(engine.add_request("b", {1}, tokens(3)), Catch::Contains("device lost"));
}

namespace {
// Samples as the real sampler does for guided rows: waits for the guide's
// mask of the position and takes its lowest allowed token; the FakeRunner's
// token otherwise. A mask that never comes marks the row guide_failed.
struct GuidedRunner : ModelRunner {
  explicit GuidedRunner(const EngineConfig& c) : inner(c.cache.num_blocks, c.cache.block_size, 1000) {}
  RunnerOutput execute_model(const SchedulerOutput& out) override {
    RunnerOutput result = inner.execute_model(out);
    for (size_t i = 0; i < out.scheduled.size(); ++i) {
      const ScheduledSequence& s = out.scheduled[i];
      if (!s.needs_sample || !s.seq->guide) continue;
      std::shared_ptr<const TokenMask> mask;
      auto got = s.seq->guide->wait(s.seq->num_output_tokens(), 10.0, &mask);
      if (got != TokenGuide::Wait::kReady) {
        result.guide_failed.resize(out.scheduled.size(), 0);
        result.guide_failed[i] = 1;
        continue;
      }
      for (int32_t t = 0; t < static_cast<int32_t>(mask->size()) * 32; ++t)
        if (((*mask)[t >> 5] >> (t & 31)) & 1u) {
          result.sampled_token_ids[i] = t;
          break;
        }
    }
    return result;
  }
  FakeRunner inner;
};

TokenMask only(int32_t token) {
  TokenMask mask(1000 / 32 + 1, 0);
  mask[token >> 5] |= 1u << (token & 31);
  return mask;
}

SamplingParams guided(int n) {
  SamplingParams p = tokens(n);
  p.guided = true;
  return p;
}
}  // namespace

TEST_CASE("a guided request takes each token from the mask posted for its position", "[engine][guided]") {
  auto config = small_config();
  Engine engine(config, std::make_shared<GuidedRunner>(config));
  REQUIRE_FALSE(engine.post_token_mask("g", 0, only(1)));  // not a guided request (yet)
  engine.start();
  engine.add_request("u", {1, 2, 3}, tokens(4));
  engine.add_request("g", {1, 2, 3}, guided(4));
  REQUIRE_FALSE(engine.post_token_mask("u", 0, only(1)));  // unguided: no guide to post to
  // The matcher: token 100 + position at each position, posted as events come.
  std::vector<GuideEvent> seen;
  std::thread matcher([&] {
    engine.post_token_mask("g", 0, only(100));
    while (true) {
      auto events = engine.get_guide_events(5.0);
      if (events.empty()) return;
      for (const GuideEvent& e : events) {
        seen.push_back(e);
        if (e.finished) return;
        const int next = e.first_position + static_cast<int>(e.new_token_ids.size());
        engine.post_token_mask(e.request_id, next, only(100 + next));
      }
    }
  });
  std::map<std::string, std::vector<int32_t>> got;
  std::set<std::string> done;
  while (done.size() < 2) {
    for (const RequestOutput& out : engine.get_outputs(5.0)) {
      got[out.request_id].insert(got[out.request_id].end(), out.new_token_ids.begin(), out.new_token_ids.end());
      if (out.finished) done.insert(out.request_id);
    }
  }
  matcher.join();
  CHECK(got["g"] == std::vector<int32_t>{100, 101, 102, 103});
  CHECK(got["u"].size() == 4);  // the unguided request in the same batch is not held back
  REQUIRE(!seen.empty());
  CHECK(seen.back().finished);
  for (const GuideEvent& e : seen) CHECK(e.request_id == "g");  // no events for unguided requests
  REQUIRE_FALSE(engine.post_token_mask("g", 4, only(1)));  // finished: its guide is gone
  engine.shutdown();
}

TEST_CASE("a guided request whose mask never comes ends by abort, fail or shutdown, never hangs",
          "[engine][guided]") {
  auto config = small_config();
  SECTION("abort wakes the waiting sampler") {
    Engine engine(config, std::make_shared<GuidedRunner>(config));
    engine.start();
    engine.add_request("g", {1, 2}, guided(3));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the step waits for position 0
    REQUIRE(engine.abort("g"));
    auto outs = engine.get_outputs(5.0);
    REQUIRE(outs.size() == 1);
    CHECK(outs[0].finished);
    CHECK(outs[0].finish_reason == FinishReason::kAbort);
    CHECK(outs[0].new_token_ids.empty());
    auto events = engine.get_guide_events(1.0);
    REQUIRE(events.size() == 1);
    CHECK(events[0].finished);
    engine.shutdown();
  }
  SECTION("fail_guide ends the request with abort") {
    Engine engine(config, std::make_shared<GuidedRunner>(config));
    engine.start();
    engine.add_request("g", {1, 2}, guided(3));
    REQUIRE(engine.fail_guide("g", "grammar error"));
    auto outs = engine.get_outputs(5.0);
    REQUIRE(outs.size() == 1);
    CHECK(outs[0].finish_reason == FinishReason::kAbort);
    CHECK_FALSE(engine.fail_guide("g", "again"));  // finished
    engine.shutdown();
  }
  SECTION("shutdown while the sampler waits") {
    Engine engine(config, std::make_shared<GuidedRunner>(config));
    engine.start();
    engine.add_request("g", {1, 2}, guided(3));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    engine.shutdown();  // returns: the guide is cancelled
    CHECK_FALSE(engine.has_unfinished_requests());
    CHECK(engine.get_guide_events(0.0).size() <= 1);
    CHECK(engine.get_guide_events(-1).empty());  // closed: returns at once
  }
}

TEST_CASE("a guided request refuses min_tokens and ignore_eos", "[engine][guided]") {
  auto config = small_config();
  Engine engine(config, runner_for(config));
  SamplingParams p = guided(4);
  p.min_tokens = 2;
  REQUIRE_THROWS_WITH(engine.add_request("a", {1}, p), Catch::Contains("min_tokens"));
  p = guided(4);
  p.ignore_eos = true;
  REQUIRE_THROWS_WITH(engine.add_request("a", {1}, p), Catch::Contains("ignore_eos"));
}
