// DynamicBatcher with a fake model: batch formation (full batches, whole
// requests in order, preferred sizes at once, the delay otherwise), the
// queue bound, timeouts that never run, a failing batch failing only its
// own requests, shutdown failing what waits. Times are generous: the
// machines are shared.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <algorithm>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "core/dynamic_batcher.h"

using namespace modelbench;
using namespace std::chrono_literals;

namespace {
using Batcher = DynamicBatcher<int, int>;

// The "model": doubles each input; records each batch; input -1 throws;
// may be held (a gate) to let the queue fill.
struct FakeModel {
  std::mutex mutex;
  std::condition_variable cv;
  bool open = true;
  std::vector<std::vector<int>> batches;

  std::vector<int> operator()(const std::vector<const int*>& inputs) {
    std::unique_lock<std::mutex> lock(mutex);
    cv.wait(lock, [&] { return open; });
    std::vector<int> batch, out;
    for (const int* x : inputs) {
      if (*x == -1) throw std::runtime_error("bad input");
      batch.push_back(*x);
      out.push_back(*x * 2);
    }
    batches.push_back(batch);
    return out;
  }
  void hold() {
    std::lock_guard<std::mutex> lock(mutex);
    open = false;
  }
  void release() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      open = true;
    }
    cv.notify_all();
  }
};

Batcher::Executor executor_of(FakeModel& model) {
  return [&model](const std::vector<const int*>& inputs) { return model(inputs); };
}

struct Results {
  std::mutex mutex;
  std::condition_variable cv;
  std::map<int, Batcher::Outcome> by_input;
  Batcher::Callback for_input(int x) {
    return [this, x](Batcher::Outcome o) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        by_input[x] = std::move(o);
      }
      cv.notify_all();
    };
  }
  bool wait_for(size_t n, std::chrono::seconds limit = 10s) {
    std::unique_lock<std::mutex> lock(mutex);
    return cv.wait_for(lock, limit, [&] { return by_input.size() >= n; });
  }
};
}  // namespace

TEST_CASE("full batches go at once, whole requests in order, and every request gets its own output",
          "[batcher]") {
  FakeModel model;
  model.hold();
  DynamicBatcherConfig config;
  config.max_batch_size = 4;
  config.max_queue_delay_us = 10'000'000;  // only full batches leave before shutdown
  Batcher batcher(config, executor_of(model));
  Results results;
  for (int i = 1; i <= 8; ++i) REQUIRE(batcher.submit(i, 1, 0, results.for_input(i)));
  model.release();
  REQUIRE(results.wait_for(8));
  for (int i = 1; i <= 8; ++i) CHECK(results.by_input[i].output == i * 2);
  // The first batch may have left before the others came; all are in order, none past 4.
  std::vector<int> seen;
  for (const auto& b : model.batches) {
    CHECK(b.size() <= 4);
    seen.insert(seen.end(), b.begin(), b.end());
  }
  CHECK(seen == std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(model.batches.back().size() == 4);
  CHECK(batcher.stats().num_batched_rows == 8);
}

TEST_CASE("a request that cannot fill a batch waits for max_queue_delay_us, a preferred size does not",
          "[batcher]") {
  FakeModel model;
  DynamicBatcherConfig config;
  config.max_batch_size = 8;
  config.max_queue_delay_us = 300'000;
  SECTION("the delay") {
    Batcher batcher(config, executor_of(model));
    Results results;
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(batcher.submit(1, 1, 0, results.for_input(1)));
    REQUIRE(results.wait_for(1));
    CHECK(std::chrono::steady_clock::now() - start >= 250ms);
  }
  SECTION("a preferred size") {
    config.preferred_batch_sizes = {2};
    config.max_queue_delay_us = 5'000'000;
    Batcher batcher(config, executor_of(model));
    Results results;
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(batcher.submit(1, 1, 0, results.for_input(1)));
    REQUIRE(batcher.submit(2, 1, 0, results.for_input(2)));
    REQUIRE(results.wait_for(2));
    CHECK(std::chrono::steady_clock::now() - start < 4s);
    REQUIRE(model.batches.size() == 1);
    CHECK(model.batches[0] == std::vector<int>{1, 2});
  }
  SECTION("rows count, not requests") {
    config.preferred_batch_sizes = {4};
    config.max_queue_delay_us = 5'000'000;
    Batcher batcher(config, executor_of(model));
    Results results;
    REQUIRE(batcher.submit(1, 3, 0, results.for_input(1)));
    REQUIRE(batcher.submit(2, 1, 0, results.for_input(2)));  // 3 + 1 rows: the preferred 4
    REQUIRE(results.wait_for(2, 4s));
    CHECK_THROWS_WITH(batcher.submit(3, 9, 0, results.for_input(3)), Catch::Contains("max_batch_size"));
  }
}

TEST_CASE("the queue is bounded", "[batcher]") {
  FakeModel model;
  model.hold();
  DynamicBatcherConfig config;
  config.max_batch_size = 1;
  config.max_queue_size = 2;
  config.max_queue_delay_us = 0;
  Batcher batcher(config, executor_of(model));
  Results results;
  REQUIRE(batcher.submit(1, 1, 0, results.for_input(1)));  // taken by the thread, held in the model
  std::this_thread::sleep_for(100ms);
  REQUIRE(batcher.submit(2, 1, 0, results.for_input(2)));
  REQUIRE(batcher.submit(3, 1, 0, results.for_input(3)));
  CHECK_FALSE(batcher.submit(4, 1, 0, results.for_input(4)));  // full: the caller answers 429
  CHECK(batcher.stats().num_rejected == 1);
  model.release();
  REQUIRE(results.wait_for(3));
  CHECK(results.by_input.count(4) == 0);
}

TEST_CASE("a request that times out waiting never runs", "[batcher]") {
  FakeModel model;
  model.hold();
  DynamicBatcherConfig config;
  config.max_batch_size = 1;
  config.max_queue_delay_us = 0;
  Batcher batcher(config, executor_of(model));
  Results results;
  REQUIRE(batcher.submit(1, 1, 0, results.for_input(1)));  // holds the model
  std::this_thread::sleep_for(100ms);
  REQUIRE(batcher.submit(2, 1, 0.05, results.for_input(2)));
  std::this_thread::sleep_for(300ms);
  model.release();
  REQUIRE(results.wait_for(2));
  CHECK(results.by_input[1].output == 2);
  CHECK(results.by_input[2].timed_out);
  CHECK_FALSE(results.by_input[2].output.has_value());
  for (const auto& b : model.batches) CHECK(std::find(b.begin(), b.end(), 2) == b.end());
  CHECK(batcher.stats().num_timed_out == 1);
}

TEST_CASE("a failing batch fails only its own requests", "[batcher]") {
  FakeModel model;
  model.hold();
  DynamicBatcherConfig config;
  config.max_batch_size = 2;
  config.max_queue_delay_us = 10'000'000;
  Batcher batcher(config, executor_of(model));
  Results results;
  for (int x : {5, -1, 7, 8}) REQUIRE(batcher.submit(x, 1, 0, results.for_input(x)));
  model.release();
  REQUIRE(results.wait_for(4));
  CHECK_THAT(results.by_input[-1].error, Catch::Contains("bad input"));
  CHECK_THAT(results.by_input[5].error, Catch::Contains("bad input"));  // its batch-mate
  CHECK(results.by_input[7].output == 14);
  CHECK(results.by_input[8].output == 16);
  CHECK(batcher.stats().num_failed == 2);
}

TEST_CASE("shutdown fails what waits and refuses what comes", "[batcher]") {
  FakeModel model;
  DynamicBatcherConfig config;
  config.max_queue_delay_us = 10'000'000;
  Results results;
  {
    Batcher batcher(config, executor_of(model));
    REQUIRE(batcher.submit(1, 1, 0, results.for_input(1)));
    batcher.shutdown();
    CHECK_FALSE(batcher.submit(2, 1, 0, results.for_input(2)));
  }
  REQUIRE(results.wait_for(1));
  CHECK_THAT(results.by_input[1].error, Catch::Contains("shutting down"));
  CHECK(model.batches.empty());
}

TEST_CASE("batcher settings are checked", "[batcher]") {
  DynamicBatcherConfig c;
  c.max_batch_size = 0;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("max_batch_size"));
  c.max_batch_size = 4;
  c.preferred_batch_sizes = {5};
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("preferred_batch_sizes"));
  c.preferred_batch_sizes = {};
  c.max_queue_size = 0;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("max_queue_size"));
}

TEST_CASE("with batching off each request runs alone", "[batcher]") {
  FakeModel model;
  model.hold();
  DynamicBatcherConfig config;
  config.max_batch_size = 4;
  config.enabled = false;
  Batcher batcher(config, executor_of(model));
  Results results;
  for (int i = 1; i <= 3; ++i) REQUIRE(batcher.submit(i, i, 0, results.for_input(i)));
  model.release();
  REQUIRE(results.wait_for(3));
  CHECK(model.batches == std::vector<std::vector<int>>{{1}, {2}, {3}});
}
