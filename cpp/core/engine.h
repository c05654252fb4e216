// The engine: owns the scheduler and a model runner; step() runs one
// schedule -> execute -> update cycle; a background loop thread steps
// while work exists and sleeps on a condition variable otherwise.
// add_request and abort are safe from any thread; outputs leave through a
// thread-safe queue (or are returned by step() when driven by hand).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/config.h"
#include "core/model_runner.h"
#include "core/request_output.h"
#include "core/scheduler.h"
#include "core/token_guide.h"

namespace modelbench {

struct EngineStats {
  SchedulerStats scheduler;
  int64_t num_steps = 0;
  int64_t num_prompt_tokens = 0;      // computed by the runner (prefix hits excluded)
  int64_t num_generation_tokens = 0;
  bool is_running = false;            // background loop alive
  // Where the steps' time went, summed over every step (seconds).
  double schedule_seconds = 0;        // Scheduler::schedule
  double execute_seconds = 0;         // ModelRunner::execute_model (inputs, forward, sampling)
  double update_seconds = 0;          // Scheduler::update_from_output and the outputs
};

class Engine {
 public:
  Engine(EngineConfig config, std::shared_ptr<ModelRunner> runner);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request; the next step admits it. Throws
  // InvalidArgument naming the problem (empty prompt, too long, bad params,
  // id in use).
  void add_request(const std::string& request_id, std::vector<int32_t> prompt_token_ids,
                   SamplingParams params, int priority = 0);
  // Ends a request at the next step boundary, freeing its blocks; it
  // reports finish reason "abort" (unless that step finished it first).
  // Returns false, doing nothing, when no unfinished request has this id.
  bool abort(const std::string& request_id);

  // Guided decoding (params.guided): the mask of allowed tokens for output
  // position `position` of a request; bit t % 32 of word t / 32 allows
  // token t. False, doing nothing, when no unfinished guided request has
  // this id.
  bool post_token_mask(const std::string& request_id, int position, TokenMask mask);
  // The request's grammar cannot go on: it ends with "abort" at its next
  // sampling, and error() of its guide says why. False as above.
  bool fail_guide(const std::string& request_id, const std::string& error);
  // What guided requests gained since the last call (see GuideEvent): waits
  // up to timeout_s for at least one (negative: forever), then returns all
  // that are queued; returns early, possibly empty, on shutdown.
  std::vector<GuideEvent> get_guide_events(double timeout_s);

  // One step by hand (not while the loop runs). Returns this step's outputs.
  std::vector<RequestOutput> step();

  void start();     // start the background loop
  void shutdown();  // stop the loop and join it; unfinished requests are aborted
  bool is_running() const { return running_.load(); }

  // Outputs of the background loop: waits up to timeout_s for at least one
  // (negative: forever), then returns all that are queued.
  std::vector<RequestOutput> get_outputs(double timeout_s);
  // Called from the loop thread after outputs are queued (for event-loop bridges).
  void set_output_notifier(std::function<void()> notifier);

  bool has_unfinished_requests() const;
  int num_unfinished_requests() const;
  EngineStats stats() const;
  const EngineConfig& config() const { return config_; }

 private:
  // An add (seq set) or an abort (seq empty) from any thread, applied in order.
  struct Command {
    std::unique_ptr<Sequence> seq;
    std::string abort_request_id;
  };

  std::vector<RequestOutput> step_locked();
  void apply_commands(std::vector<RequestOutput>& outputs);
  void loop();
  void publish(std::vector<RequestOutput> outputs);
  void fail_all(const std::string& error);
  // Queues guide events for the outputs of guided requests; forgets the
  // guides of finished ones. Call with mutex_ held.
  void note_guided_locked(const std::vector<RequestOutput>& outputs);

  EngineConfig config_;
  std::shared_ptr<ModelRunner> runner_;
  Scheduler scheduler_;  // touched only under step_mutex_

  // Commands from any thread, applied at the start of a step.
  mutable std::mutex mutex_;
  std::condition_variable work_cv_;
  std::vector<Command> commands_;
  std::unordered_set<std::string> live_request_ids_;
  std::unordered_map<std::string, std::shared_ptr<TokenGuide>> guides_;  // unfinished guided requests
  uint64_t next_arrival_index_ = 0;
  bool stop_requested_ = false;
  std::string error_;  // set when the loop died of an exception

  std::mutex step_mutex_;

  std::mutex guide_mutex_;
  std::condition_variable guide_cv_;
  std::vector<GuideEvent> guide_events_;
  bool guide_events_closed_ = false;

  std::mutex output_mutex_;
  std::condition_variable output_cv_;
  std::deque<RequestOutput> outputs_;
  std::function<void()> notifier_;

  mutable std::mutex stats_mutex_;
  EngineStats stats_;

  std::atomic<bool> running_{false};
  std::thread thread_;
};

}  // namespace modelbench
