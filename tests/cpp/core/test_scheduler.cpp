// Scheduler invariants under randomized workloads, chunked prefill,
// preemption by recompute, priorities and abort.
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <random>

#include "fake_runner.h"
#include "core/scheduler.h"

using namespace modelbench;
using modelbench::testing::FakeRunner;
using modelbench::testing::next_token_of;

namespace {

constexpr int kVocab = 1000;

struct Setup {
  int num_blocks = 64;
  int block_size = 16;
  int max_num_batched_tokens = 256;
  int max_num_seqs = 16;
  int max_model_len = 1024;
  bool prefix_caching = true;
  int eos = -1;
};

// What the fake model generates for this prompt, computed without any cache.
std::vector<int32_t> expected_output(std::vector<int32_t> tokens, int max_tokens, int eos,
                                     int max_model_len) {
  std::vector<int32_t> out;
  while (static_cast<int>(out.size()) < max_tokens && static_cast<int>(tokens.size()) < max_model_len) {
    const int32_t t = next_token_of(tokens, kVocab);
    tokens.push_back(t);
    out.push_back(t);
    if (t == eos) break;
  }
  return out;
}

struct Driver {
  explicit Driver(const Setup& s)
      : setup(s),
        sched(make_sched_config(s), make_cache_config(s), s.eos),
        runner(s.num_blocks, s.block_size, kVocab) {}

  static SchedulerConfig make_sched_config(const Setup& s) {
    SchedulerConfig c;
    c.max_num_batched_tokens = s.max_num_batched_tokens;
    c.max_num_seqs = s.max_num_seqs;
    c.max_model_len = s.max_model_len;
    return c;
  }
  static CacheConfig make_cache_config(const Setup& s) {
    CacheConfig c;
    c.num_blocks = s.num_blocks;
    c.block_size = s.block_size;
    c.enable_prefix_caching = s.prefix_caching;
    return c;
  }

  void add(const std::string& id, std::vector<int32_t> prompt, int max_tokens, int priority = 0) {
    SamplingParams p;
    p.max_tokens = max_tokens;
    prompts[id] = prompt;
    max_tokens_of[id] = max_tokens;
    sched.add_request(std::make_unique<Sequence>(id, std::move(prompt), p, priority, next_arrival++));
  }

  // One step with every invariant checked.
  SchedulerOutput step() {
    SchedulerOutput out = sched.schedule();
    REQUIRE(out.num_batched_tokens <= setup.max_num_batched_tokens);
    REQUIRE(static_cast<int>(out.scheduled.size()) <= setup.max_num_seqs);
    int total = 0;
    for (const auto& s : out.scheduled) {
      REQUIRE(s.num_scheduled_tokens >= 1);
      total += s.num_scheduled_tokens;
    }
    REQUIRE(total == out.num_batched_tokens);
    max_preemptions = std::max<int64_t>(max_preemptions, sched.stats().num_preemptions);
    RunnerOutput result = runner.execute_model(out);  // throws if the cache is inconsistent
    for (const RequestOutput& o : sched.update_from_output(out, result)) {
      auto& tokens = outputs[o.request_id];
      tokens.insert(tokens.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      if (o.finished) finish_reason[o.request_id] = o.finish_reason;
    }
    ++num_steps;
    return out;
  }

  void run_to_completion(int max_steps = 100000) {
    while (sched.has_unfinished_requests()) {
      step();
      REQUIRE(num_steps < max_steps);
    }
  }

  Setup setup;
  Scheduler sched;
  FakeRunner runner;
  uint64_t next_arrival = 0;
  int num_steps = 0;
  int64_t max_preemptions = 0;
  std::map<std::string, std::vector<int32_t>> prompts;
  std::map<std::string, int> max_tokens_of;
  std::map<std::string, std::vector<int32_t>> outputs;
  std::map<std::string, FinishReason> finish_reason;
};

std::vector<int32_t> random_prompt(std::mt19937& rng, int len, const std::vector<int32_t>& prefix = {}) {
  std::vector<int32_t> p(prefix.begin(), prefix.begin() + std::min<size_t>(prefix.size(), len));
  while (static_cast<int>(p.size()) < len) p.push_back(static_cast<int32_t>(rng() % kVocab));
  return p;
}

}  // namespace

TEST_CASE("randomized workloads keep every invariant and finish every request", "[scheduler]") {
  int64_t total_preemptions = 0;
  int total_aborted = 0;
  int total_steps = 0;
  for (uint32_t seed = 1; seed <= 12; ++seed) {
    std::mt19937 rng(seed);
    Setup s;
    s.num_blocks = 24 + static_cast<int>(rng() % 60);   // small pools force preemption
    s.block_size = (seed % 3 == 0) ? 4 : 16;
    s.max_model_len = std::min(s.num_blocks * s.block_size, 512);
    s.max_num_batched_tokens = 16 + static_cast<int>(rng() % 256);
    s.max_num_seqs = 1 + static_cast<int>(rng() % 12);
    s.prefix_caching = seed % 4 != 0;
    s.eos = (seed % 2 == 0) ? 7 : -1;
    Driver d(s);
    const std::vector<int32_t> shared = random_prompt(rng, 200);
    int num_requests = 0;
    int aborted = 0;
    std::map<std::string, bool> was_aborted;
    for (int step = 0; step < 3000 && (num_requests < 60 || d.sched.has_unfinished_requests()); ++step) {
      if (num_requests < 60 && rng() % 3 == 0) {
        const int len = 1 + static_cast<int>(rng() % (s.max_model_len - 1));
        const bool use_prefix = rng() % 2 == 0;
        const std::string id = "r" + std::to_string(num_requests++);
        d.add(id, random_prompt(rng, len, use_prefix ? shared : std::vector<int32_t>{}),
              1 + static_cast<int>(rng() % 40), static_cast<int>(rng() % 3));
      }
      if (num_requests > 0 && rng() % 40 == 0) {
        const std::string id = "r" + std::to_string(rng() % num_requests);
        if (auto out = d.sched.abort_request(id)) {
          REQUIRE(out->finished);
          REQUIRE(out->finish_reason == FinishReason::kAbort);
          d.finish_reason[id] = FinishReason::kAbort;
          was_aborted[id] = true;
          ++aborted;
        }
      }
      if (d.sched.has_unfinished_requests()) d.step();
    }
    d.run_to_completion();
    INFO("seed " << seed);
    // Every request ended, and every block is back in the pool.
    REQUIRE(static_cast<int>(d.finish_reason.size()) == num_requests);
    REQUIRE(d.sched.kv_cache_manager().num_free_blocks() == s.num_blocks);
    REQUIRE(d.sched.kv_cache_manager().usage() == 0.0);
    // Finished requests produced exactly what the model produces without any cache.
    for (const auto& [id, prompt] : d.prompts) {
      if (was_aborted[id]) continue;
      INFO("request " << id);
      REQUIRE(d.outputs[id] == expected_output(prompt, d.max_tokens_of[id], s.eos, s.max_model_len));
    }
    total_preemptions += d.sched.stats().num_preemptions;
    total_aborted += aborted;
    total_steps += d.num_steps;
  }
  // The workloads did exercise what they are meant to.
  CHECK(total_preemptions > 0);
  CHECK(total_aborted > 0);
  CHECK(total_steps > 2000);
}

TEST_CASE("preempted sequences resume and produce the same tokens", "[scheduler]") {
  std::mt19937 rng(42);
  Setup tight;
  tight.num_blocks = 20;  // 320 tokens for 8 requests that want ~600
  tight.max_model_len = 320;
  tight.max_num_seqs = 8;
  Setup roomy = tight;
  roomy.num_blocks = 400;
  Driver a(tight), b(roomy);
  for (int i = 0; i < 8; ++i) {
    auto prompt = random_prompt(rng, 20 + static_cast<int>(rng() % 40));
    a.add("r" + std::to_string(i), prompt, 40);
    b.add("r" + std::to_string(i), prompt, 40);
  }
  a.run_to_completion();
  b.run_to_completion();
  REQUIRE(a.sched.stats().num_preemptions > 0);
  REQUIRE(b.sched.stats().num_preemptions == 0);
  REQUIRE(a.outputs == b.outputs);
  for (const auto& [id, prompt] : a.prompts) REQUIRE(a.outputs[id] == expected_output(prompt, 40, -1, 320));
}

TEST_CASE("a 5,000-token prompt with a 512-token budget is prefilled in chunks", "[scheduler]") {
  Setup s;
  s.num_blocks = 400;
  s.max_model_len = 6000;
  s.max_num_batched_tokens = 512;
  Driver d(s);
  std::mt19937 rng(3);
  auto prompt = random_prompt(rng, 5000);
  d.add("long", prompt, 4);
  std::vector<int> chunks;
  while (d.sched.has_unfinished_requests()) {
    auto out = d.step();
    REQUIRE(out.scheduled.size() == 1);
    const auto& s0 = out.scheduled[0];
    if (s0.seq->num_computed_tokens <= 5000 && chunks.size() < 10) {
      chunks.push_back(s0.num_scheduled_tokens);
      REQUIRE(s0.needs_sample == (chunks.size() == 10));
    }
  }
  REQUIRE(chunks == std::vector<int>{512, 512, 512, 512, 512, 512, 512, 512, 512, 392});
  REQUIRE(d.outputs["long"] == expected_output(prompt, 4, -1, 6000));
}

TEST_CASE("decodes run before new prefills, which fill the rest of the budget", "[scheduler]") {
  Setup s;
  s.max_num_batched_tokens = 100;
  Driver d(s);
  d.add("a", std::vector<int32_t>(30, 5), 10);
  d.step();  // prefill a
  d.add("b", std::vector<int32_t>(300, 6), 10);
  auto out = d.step();
  REQUIRE(out.scheduled.size() == 2);
  REQUIRE(out.scheduled[0].seq->request_id() == "a");
  REQUIRE(out.scheduled[0].num_scheduled_tokens == 1);
  REQUIRE(out.scheduled[1].seq->request_id() == "b");
  REQUIRE(out.scheduled[1].num_scheduled_tokens == 99);
  REQUIRE_FALSE(out.scheduled[1].needs_sample);
}

TEST_CASE("max_num_seqs bounds the running set", "[scheduler]") {
  Setup s;
  s.max_num_seqs = 3;
  Driver d(s);
  for (int i = 0; i < 10; ++i) d.add("r" + std::to_string(i), {1, 2, 3}, 5);
  auto out = d.step();
  REQUIRE(out.scheduled.size() == 3);
  REQUIRE(d.sched.num_running() == 3);
  REQUIRE(d.sched.num_waiting() == 7);
  d.run_to_completion();
}

TEST_CASE("priorities: lower number first, FIFO within a level", "[scheduler]") {
  Setup s;
  s.max_num_seqs = 1;
  Driver d(s);
  d.add("low-1", {1}, 1, 5);
  d.add("high-1", {2}, 1, 0);
  d.add("low-2", {3}, 1, 5);
  d.add("high-2", {4}, 1, 0);
  std::vector<std::string> order;
  while (d.sched.has_unfinished_requests()) {
    auto out = d.step();
    for (const auto& sc : out.scheduled) order.push_back(sc.seq->request_id());
  }
  REQUIRE(order == std::vector<std::string>{"high-1", "high-2", "low-1", "low-2"});
}

TEST_CASE("preemption takes the lowest-priority, most recently admitted sequence", "[scheduler]") {
  Setup s;
  s.num_blocks = 6;  // 6 blocks of 4 tokens
  s.block_size = 4;
  s.max_model_len = 24;
  Driver d(s);
  d.add("a", {1, 2, 3, 4}, 18, 0);   // 1 block, grows
  d.add("b", {5, 6, 7, 8}, 18, 1);
  d.add("c", {9, 10, 11, 12}, 18, 1);
  std::vector<std::string> preempted;
  while (d.sched.has_unfinished_requests()) {
    auto out = d.step();
    for (const auto& id : out.preempted_request_ids) preempted.push_back(id);
  }
  REQUIRE(!preempted.empty());
  REQUIRE(preempted.front() == "c");
  for (const auto& id : preempted) REQUIRE(id != "a");
  for (const auto& [id, prompt] : d.prompts) REQUIRE(d.outputs[id] == expected_output(prompt, 18, -1, 24));
}

TEST_CASE("abort frees everything the request held, at any moment", "[scheduler]") {
  Setup s;
  s.max_num_batched_tokens = 32;
  Driver d(s);
  d.add("a", std::vector<int32_t>(100, 3), 50);  // mid chunked prefill when aborted
  d.add("b", std::vector<int32_t>(10, 4), 50);   // still waiting when aborted
  d.step();
  auto out = d.sched.abort_request("a");
  REQUIRE(out);
  REQUIRE(out->finish_reason == FinishReason::kAbort);
  REQUIRE(d.sched.abort_request("b"));
  REQUIRE_FALSE(d.sched.abort_request("a"));  // already gone
  REQUIRE_FALSE(d.sched.abort_request("nope"));
  REQUIRE_FALSE(d.sched.has_unfinished_requests());
  REQUIRE(d.sched.kv_cache_manager().num_free_blocks() == s.num_blocks);
}

TEST_CASE("a request aborted when nothing else runs reaches the runner with the next step it runs",
          "[scheduler]") {
  Setup s;
  Driver d(s);
  d.add("a", std::vector<int32_t>(10, 3), 50);
  d.step();
  REQUIRE(d.sched.abort_request("a"));
  const SchedulerOutput idle = d.sched.schedule();  // nothing to run: the runner is not called
  REQUIRE(idle.empty());
  REQUIRE(idle.finished_request_ids.empty());
  d.add("b", std::vector<int32_t>(10, 4), 50);
  const SchedulerOutput next = d.sched.schedule();
  REQUIRE_FALSE(next.empty());
  REQUIRE(next.finished_request_ids == std::vector<std::string>{"a"});  // so it drops a's state
}

TEST_CASE("EOS and stop ids finish with 'stop', max_tokens and max_model_len with 'length'", "[scheduler]") {
  Setup s;
  std::mt19937 rng(9);
  auto prompt = random_prompt(rng, 10);
  const auto free_run = expected_output(prompt, 20, -1, 1024);
  s.eos = free_run[3];  // the 4th generated token is "EOS"
  Driver d(s);
  d.add("eos", prompt, 20);
  d.add("len", random_prompt(rng, 10), 2);
  d.run_to_completion();
  REQUIRE(d.finish_reason["eos"] == FinishReason::kStop);
  REQUIRE(d.outputs["eos"].size() == 4);
  REQUIRE(d.finish_reason["len"] == FinishReason::kLength);
  REQUIRE(d.outputs["len"].size() == 2);

  Setup small;
  small.max_model_len = 12;
  small.num_blocks = 4;
  Driver e(small);
  e.add("cap", random_prompt(rng, 10), 50);
  e.run_to_completion();
  REQUIRE(e.finish_reason["cap"] == FinishReason::kLength);
  REQUIRE(e.outputs["cap"].size() == 2);  // 10 + 2 = max_model_len
}

TEST_CASE("prefix hits are counted and skip computation", "[scheduler]") {
  Setup s;
  Driver d(s);
  std::vector<int32_t> prompt(64, 0);
  for (int i = 0; i < 64; ++i) prompt[i] = i;
  d.add("first", prompt, 1);
  d.run_to_completion();
  d.add("second", prompt, 1);
  auto out = d.step();
  REQUIRE(out.scheduled[0].num_computed_tokens == 48);  // 3 full blocks; the 4th holds the last token
  REQUIRE(out.scheduled[0].num_scheduled_tokens == 16);
  REQUIRE(d.sched.stats().num_prefix_hit_tokens == 48);
  REQUIRE(d.outputs["first"] == d.outputs["second"]);
}

TEST_CASE("a high-priority request waits at most one step behind a full low-priority flood",
          "[scheduler][priority]") {
  Setup s;
  s.max_num_seqs = 4;
  Driver d(s);
  for (int i = 0; i < 20; ++i) d.add("low-" + std::to_string(i), {1, 2, 3, static_cast<int32_t>(i)}, 50, 10);
  d.step();  // four low-priority sequences run; sixteen wait
  REQUIRE(d.sched.num_running() == 4);
  d.add("high", {7, 8, 9}, 3, 0);
  auto out = d.step();
  bool scheduled = false;
  for (const auto& sc : out.scheduled) scheduled |= sc.seq->request_id() == "high";
  REQUIRE(scheduled);  // in the very next step, in place of a preempted low-priority one
  REQUIRE(out.preempted_request_ids.size() == 1);
  REQUIRE(out.preempted_request_ids.front() == "low-3");  // the latest admitted of the lowest level
  REQUIRE(d.sched.num_running() == 4);
  d.run_to_completion();
  // Preempted work is recomputed, not lost: every request ends with its full output.
  for (const auto& [id, prompt] : d.prompts)
    REQUIRE(d.outputs[id] == expected_output(prompt, d.max_tokens_of[id], -1, s.max_model_len));
}

TEST_CASE("a high-priority request out of blocks preempts lower-priority ones for them",
          "[scheduler][priority]") {
  Setup s;
  s.num_blocks = 8;  // 8 blocks of 4 tokens
  s.block_size = 4;
  s.max_model_len = 32;
  Driver d(s);
  d.add("low-a", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 8, 5);  // 3 blocks each
  d.add("low-b", {13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24}, 8, 5);
  d.step();
  d.add("high", {30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45}, 4, 0);  // 4 blocks
  auto out = d.step();
  bool scheduled = false;
  for (const auto& sc : out.scheduled) scheduled |= sc.seq->request_id() == "high";
  REQUIRE(scheduled);
  REQUIRE(!out.preempted_request_ids.empty());
  d.run_to_completion();
  for (const auto& [id, prompt] : d.prompts)
    REQUIRE(d.outputs[id] == expected_output(prompt, d.max_tokens_of[id], -1, s.max_model_len));
}

TEST_CASE("equal priorities never preempt each other for room", "[scheduler][priority]") {
  Setup s;
  s.max_num_seqs = 2;
  Driver d(s);
  d.add("a", {1, 2}, 5, 1);
  d.add("b", {3, 4}, 5, 1);
  d.step();
  d.add("c", {5, 6}, 5, 1);
  auto out = d.step();
  REQUIRE(out.preempted_request_ids.empty());
  for (const auto& sc : out.scheduled) REQUIRE(sc.seq->request_id() != "c");
  d.run_to_completion();
}
