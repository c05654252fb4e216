// The dynamic batcher of tensor models, as Triton's: requests for one model
// version wait in a bounded FIFO queue; a thread of its own gathers them
// into batches of up to max_batch_size rows (dispatching at once when the
// queue can fill a preferred batch size, else when the oldest request has
// waited max_queue_delay_us), runs each batch through the executor, and
// hands every request its own result. A request whose timeout passes while
// it waits fails without running; a batch whose execution throws fails its
// own requests only. Torch-free: inputs and outputs are the caller's types,
// and the executor (the model) is a function; the thread never touches
// Python (the bindings give it the GIL-free executor).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"

namespace modelbench {

struct DynamicBatcherConfig {
  int max_batch_size = 8;                 // rows in one batch
  std::vector<int> preferred_batch_sizes; // each in [1, max_batch_size]; dispatched without waiting
  int64_t max_queue_delay_us = 100;       // how long the oldest request waits for company
  int max_queue_size = 1024;              // requests waiting; past it submit refuses
  bool enabled = true;                    // false: each request runs alone, at once (batching off)

  // Throws InvalidArgument naming the offending field.
  void validate() const;
};

struct DynamicBatcherStats {
  int64_t num_requests = 0;   // accepted
  int64_t num_rejected = 0;   // refused: the queue was full
  int64_t num_timed_out = 0;  // failed waiting
  int64_t num_failed = 0;     // in a batch whose execution threw
  int64_t num_batches = 0;
  int64_t num_batched_rows = 0;
  int queue_size = 0;
};

template <typename Input, typename Output>
class DynamicBatcher {
 public:
  using Clock = std::chrono::steady_clock;
  // What a request ends with: its output, or why it has none.
  struct Outcome {
    std::optional<Output> output;
    std::string error;          // empty on success
    bool timed_out = false;
  };
  using Callback = std::function<void(Outcome)>;
  // Runs one batch: inputs in queue order (their rows add up to at most
  // max_batch_size); returns one output per input. Throwing fails the batch.
  using Executor = std::function<std::vector<Output>(const std::vector<const Input*>&)>;

  DynamicBatcher(DynamicBatcherConfig config, Executor executor)
      : config_((config.validate(), std::move(config))), executor_(std::move(executor)) {
    if (!executor_) throw InvalidArgument("a DynamicBatcher needs an executor, got none");
    thread_ = std::thread([this] { loop(); });
  }
  ~DynamicBatcher() { shutdown(); }
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // Queues a request of `rows` rows (1 <= rows <= max_batch_size). `done`
  // is called once, from the batcher's thread (or from here on refusal).
  // timeout_s <= 0: no timeout. Returns false, without calling `done`,
  // when the queue is full (the caller answers 429) or the batcher is shut down.
  bool submit(Input input, int rows, double timeout_s, Callback done) {
    if (rows < 1 || rows > config_.max_batch_size)
      throw InvalidArgument("a request has " + std::to_string(rows) + " rows; this model takes 1 to " +
                                std::to_string(config_.max_batch_size) + " (max_batch_size)",
                            "inputs");
    const Clock::time_point now = Clock::now();
    Pending pending{std::move(input), rows, now, std::nullopt, std::move(done)};
    if (timeout_s > 0)
      pending.deadline = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_ || static_cast<int>(queue_.size()) >= config_.max_queue_size) {
        ++stats_.num_rejected;
        return false;
      }
      queue_.push_back(std::move(pending));
      ++stats_.num_requests;
    }
    cv_.notify_one();
    return true;
  }

  // Stops the thread; requests still waiting fail ("shutting down").
  void shutdown() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_ && !thread_.joinable()) return;
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  DynamicBatcherStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    DynamicBatcherStats s = stats_;
    s.queue_size = static_cast<int>(queue_.size());
    return s;
  }
  const DynamicBatcherConfig& config() const { return config_; }

 private:
  struct Pending {
    Input input;
    int rows;
    Clock::time_point arrival;
    std::optional<Clock::time_point> deadline;
    Callback done;
  };

  // With mutex_ held: requests past their deadline leave the queue.
  void expire_locked(Clock::time_point now, std::vector<Pending>& expired) {
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->deadline && *it->deadline <= now) {
        expired.push_back(std::move(*it));
        it = queue_.erase(it);
        ++stats_.num_timed_out;
      } else {
        ++it;
      }
    }
  }

  // With mutex_ held: how many requests from the front make the batch to
  // run now, or 0 to keep waiting. Whole requests, in order, up to
  // max_batch_size rows; a preferred size that the queue fills exactly is
  // taken at once (the largest such), so is a full batch; otherwise the
  // oldest request's delay decides.
  size_t batch_to_run_locked(Clock::time_point now) const {
    if (!config_.enabled) return queue_.empty() ? 0 : 1;
    int rows = 0;
    size_t count = 0, preferred_count = 0;
    for (const Pending& p : queue_) {
      if (rows + p.rows > config_.max_batch_size) break;
      rows += p.rows;
      ++count;
      for (int size : config_.preferred_batch_sizes)
        if (rows == size) preferred_count = count;
    }
    if (count == 0) return 0;
    const bool full = rows == config_.max_batch_size || count < queue_.size();
    const bool waited = now - queue_.front().arrival >= std::chrono::microseconds(config_.max_queue_delay_us);
    if (full || waited) return count;
    return preferred_count;
  }

  void loop() {
    while (true) {
      std::vector<Pending> expired, batch;
      bool stop = false;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        while (true) {
          const Clock::time_point now = Clock::now();
          expire_locked(now, expired);
          if (!expired.empty()) break;  // their callbacks run outside the lock
          if (stopping_) {
            stop = true;
            break;
          }
          if (const size_t n = batch_to_run_locked(now)) {
            for (size_t i = 0; i < n; ++i) {
              batch.push_back(std::move(queue_.front()));
              queue_.pop_front();
            }
            break;
          }
          if (queue_.empty()) {
            cv_.wait(lock);
            continue;
          }
          // Wake for the oldest request's delay or the nearest deadline.
          Clock::time_point wake = queue_.front().arrival + std::chrono::microseconds(config_.max_queue_delay_us);
          for (const Pending& p : queue_)
            if (p.deadline && *p.deadline < wake) wake = *p.deadline;
          cv_.wait_until(lock, wake);
        }
        if (stop) {
          for (Pending& p : queue_) expired.push_back(std::move(p));
          queue_.clear();
        }
      }
      for (Pending& p : expired) {
        Outcome outcome;
        outcome.timed_out = !stop;
        outcome.error = stop ? "the model is shutting down; the request did not run"
                             : "the request timed out waiting in the model's queue";
        p.done(std::move(outcome));
      }
      if (stop) return;
      if (!batch.empty()) run(batch);
    }
  }

  void run(std::vector<Pending>& batch) {
    std::vector<const Input*> inputs;
    int rows = 0;
    for (const Pending& p : batch) {
      inputs.push_back(&p.input);
      rows += p.rows;
    }
    std::vector<Output> outputs;
    std::string error;
    try {
      outputs = executor_(inputs);
      if (outputs.size() != batch.size())
        error = "the model returned " + std::to_string(outputs.size()) + " outputs for " +
                std::to_string(batch.size()) + " requests";
    } catch (const std::exception& e) {
      error = e.what();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.num_batches;
      stats_.num_batched_rows += rows;
      if (!error.empty()) stats_.num_failed += static_cast<int64_t>(batch.size());
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      Outcome outcome;
      if (error.empty()) {
        outcome.output = std::move(outputs[i]);
      } else {
        outcome.error = error;
      }
      batch[i].done(std::move(outcome));
    }
  }

  const DynamicBatcherConfig config_;
  Executor executor_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stopping_ = false;
  DynamicBatcherStats stats_;
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace modelbench
