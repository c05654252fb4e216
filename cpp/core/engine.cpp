// Engine: request intake, the step cycle, the loop thread, the output queue.
#include "core/engine.h"

#include <chrono>
#include <stdexcept>

namespace modelbench {

Engine::Engine(EngineConfig config, std::shared_ptr<ModelRunner> runner)
    : config_((config.validate(), std::move(config))),
      runner_(std::move(runner)),
      scheduler_(config_.scheduler, config_.cache, config_.eos_token_id) {
  if (!runner_) throw InvalidArgument("an Engine needs a model runner, got none");
}

Engine::~Engine() { shutdown(); }

void Engine::add_request(const std::string& request_id, std::vector<int32_t> prompt_token_ids,
                         SamplingParams params, int priority) {
  if (request_id.empty()) throw InvalidArgument("request_id must not be empty", "request_id");
  if (prompt_token_ids.empty())
    throw InvalidArgument("prompt must contain at least one token, got an empty prompt", "prompt");
  const int max_model_len = config_.scheduler.max_model_len;
  if (static_cast<int64_t>(prompt_token_ids.size()) > max_model_len)
    throw InvalidArgument("prompt has " + std::to_string(prompt_token_ids.size()) +
                          " tokens, more than max_model_len=" + std::to_string(max_model_len) +
                          ": shorten it or raise max_model_len",
                          "prompt");
  for (size_t i = 0; i < prompt_token_ids.size(); ++i) {
    const int32_t id = prompt_token_ids[i];
    if (id < 0 || (config_.vocab_size > 0 && id >= config_.vocab_size))
      throw InvalidArgument("prompt token " + std::to_string(i) + " is " + std::to_string(id) +
                            ", outside the vocabulary [0, " + std::to_string(config_.vocab_size) + ")",
                            "prompt");
  }
  params.validate();

  std::lock_guard<std::mutex> lock(mutex_);
  if (!error_.empty()) throw std::runtime_error("the engine loop stopped on an error: " + error_);
  if (stop_requested_) throw std::runtime_error("the engine is shut down; it takes no new requests");
  if (!live_request_ids_.insert(request_id).second)
    throw InvalidArgument("request_id '" + request_id + "' is already in use by an unfinished request",
                          "request_id");
  const bool guided = params.guided;
  auto seq = std::make_unique<Sequence>(request_id, std::move(prompt_token_ids), std::move(params),
                                        priority, next_arrival_index_++);
  if (guided) {
    seq->guide = std::make_shared<TokenGuide>();
    guides_[request_id] = seq->guide;
  }
  commands_.push_back(Command{std::move(seq), {}});
  work_cv_.notify_one();
}

bool Engine::abort(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (live_request_ids_.count(request_id) == 0) return false;
  // A sampler waiting for this request's mask must not wait for a matcher
  // that has stopped: the step goes on, and the abort applies after it.
  if (auto it = guides_.find(request_id); it != guides_.end()) it->second->cancel();
  commands_.push_back(Command{nullptr, request_id});
  work_cv_.notify_one();
  return true;
}

void Engine::apply_commands(std::vector<RequestOutput>& outputs) {
  std::vector<Command> commands;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    commands.swap(commands_);
  }
  for (Command& command : commands) {
    if (command.seq) {
      scheduler_.add_request(std::move(command.seq));
    } else if (auto out = scheduler_.abort_request(command.abort_request_id)) {
      // (Unknown here means it finished in the meantime: nothing to do.)
      outputs.push_back(std::move(*out));
    }
  }
}

std::vector<RequestOutput> Engine::step() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_.empty()) throw std::runtime_error("the engine loop stopped on an error: " + error_);
  }
  if (running_.load())
    throw std::logic_error("step() cannot be called while the background loop runs; call shutdown() first");
  std::lock_guard<std::mutex> step_lock(step_mutex_);
  return step_locked();
}

std::vector<RequestOutput> Engine::step_locked() {
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  std::vector<RequestOutput> outputs;
  Clock::time_point started = Clock::now();
  apply_commands(outputs);
  SchedulerOutput scheduled = scheduler_.schedule();
  const double schedule_s = seconds_since(started);
  double execute_s = 0, update_s = 0;
  int64_t num_prompt = 0;
  if (!scheduled.empty()) {
    started = Clock::now();
    RunnerOutput result = runner_->execute_model(scheduled);
    execute_s = seconds_since(started);
    started = Clock::now();
    for (const ScheduledSequence& s : scheduled.scheduled)
      if (s.seq->is_prefill()) num_prompt += s.num_scheduled_tokens;
    std::vector<RequestOutput> produced = scheduler_.update_from_output(scheduled, result);
    outputs.insert(outputs.end(), std::make_move_iterator(produced.begin()),
                   std::make_move_iterator(produced.end()));
    update_s = seconds_since(started);
  }
  int64_t num_generated = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const RequestOutput& out : outputs) {
      num_generated += static_cast<int64_t>(out.new_token_ids.size());
      if (out.finished) live_request_ids_.erase(out.request_id);
    }
    note_guided_locked(outputs);
  }
  {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    stats_.scheduler = scheduler_.stats();
    if (!scheduled.empty()) ++stats_.num_steps;
    stats_.num_prompt_tokens += num_prompt;
    stats_.num_generation_tokens += num_generated;
    stats_.schedule_seconds += schedule_s;
    stats_.execute_seconds += execute_s;
    stats_.update_seconds += update_s;
  }
  return outputs;
}

void Engine::note_guided_locked(const std::vector<RequestOutput>& outputs) {
  if (guides_.empty()) return;
  std::vector<GuideEvent> events;
  for (const RequestOutput& out : outputs) {
    auto it = guides_.find(out.request_id);
    if (it == guides_.end() || (out.new_token_ids.empty() && !out.finished)) continue;
    const int first = out.num_output_tokens - static_cast<int>(out.new_token_ids.size());
    events.push_back(GuideEvent{out.request_id, first, out.new_token_ids, out.finished});
    if (out.finished) {
      it->second->cancel();
      guides_.erase(it);
    }
  }
  if (events.empty()) return;
  {
    std::lock_guard<std::mutex> lock(guide_mutex_);
    for (GuideEvent& event : events) guide_events_.push_back(std::move(event));
  }
  guide_cv_.notify_all();
}

bool Engine::post_token_mask(const std::string& request_id, int position, TokenMask mask) {
  std::shared_ptr<TokenGuide> guide;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = guides_.find(request_id);
    if (it == guides_.end()) return false;
    guide = it->second;
  }
  guide->post(position, std::move(mask));
  return true;
}

bool Engine::fail_guide(const std::string& request_id, const std::string& error) {
  std::shared_ptr<TokenGuide> guide;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = guides_.find(request_id);
    if (it == guides_.end()) return false;
    guide = it->second;
  }
  guide->fail(error);
  return true;
}

std::vector<GuideEvent> Engine::get_guide_events(double timeout_s) {
  std::unique_lock<std::mutex> lock(guide_mutex_);
  auto ready = [&] { return !guide_events_.empty() || guide_events_closed_; };
  if (timeout_s < 0) {
    guide_cv_.wait(lock, ready);
  } else {
    guide_cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), ready);
  }
  std::vector<GuideEvent> events;
  events.swap(guide_events_);
  return events;
}

void Engine::publish(std::vector<RequestOutput> outputs) {
  if (outputs.empty()) return;
  std::function<void()> notifier;
  {
    std::lock_guard<std::mutex> lock(output_mutex_);
    for (RequestOutput& out : outputs) outputs_.push_back(std::move(out));
    notifier = notifier_;
  }
  output_cv_.notify_all();
  if (notifier) {
    // A waiter that went away must not take the engine down with it.
    try {
      notifier();
    } catch (const std::exception&) {
    }
  }
}

void Engine::loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_cv_.wait(lock, [&] {
        return stop_requested_ || !commands_.empty() || !live_request_ids_.empty();
      });
      if (stop_requested_) break;
    }
    try {
      std::lock_guard<std::mutex> step_lock(step_mutex_);
      publish(step_locked());
    } catch (const std::exception& e) {
      fail_all(e.what());
      running_.store(false);
      output_cv_.notify_all();
      break;
    }
  }
}

void Engine::fail_all(const std::string& error) {
  // The runner threw: no request can make progress. Record why, and end
  // every request with "abort" so that no caller waits forever.
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = error;
    ids.assign(live_request_ids_.begin(), live_request_ids_.end());
    live_request_ids_.clear();
    commands_.clear();
  }
  std::vector<RequestOutput> outputs;
  for (const std::string& id : ids) {
    RequestOutput out;
    if (auto aborted = scheduler_.abort_request(id)) out = std::move(*aborted);
    out.request_id = id;
    out.finished = true;
    out.finish_reason = FinishReason::kAbort;
    outputs.push_back(std::move(out));
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    note_guided_locked(outputs);
  }
  publish(std::move(outputs));
  std::lock_guard<std::mutex> lock(output_mutex_);
  output_cv_.notify_all();
}

void Engine::start() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (running_.load()) return;
  if (stop_requested_) throw std::runtime_error("the engine is shut down; create a new one");
  running_.store(true);
  thread_ = std::thread([this] { loop(); });
}

void Engine::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_requested_ = true;
    for (auto& [id, guide] : guides_) guide->cancel();  // a step waiting for a mask ends now
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  running_.store(false);
  // Whatever is left is aborted, so that waiters get a final output.
  std::vector<RequestOutput> outputs;
  {
    std::lock_guard<std::mutex> step_lock(step_mutex_);
    std::vector<std::string> ids;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ids.assign(live_request_ids_.begin(), live_request_ids_.end());
      for (const std::string& id : ids) commands_.push_back(Command{nullptr, id});
    }
    if (!ids.empty()) {
      apply_commands(outputs);
      std::lock_guard<std::mutex> lock(mutex_);
      for (const RequestOutput& out : outputs) live_request_ids_.erase(out.request_id);
      note_guided_locked(outputs);
    }
  }
  publish(std::move(outputs));
  output_cv_.notify_all();
  {
    std::lock_guard<std::mutex> lock(guide_mutex_);
    guide_events_closed_ = true;
  }
  guide_cv_.notify_all();
}

std::vector<RequestOutput> Engine::get_outputs(double timeout_s) {
  std::unique_lock<std::mutex> lock(output_mutex_);
  auto ready = [&] { return !outputs_.empty() || !running_.load(); };
  if (timeout_s < 0) {
    output_cv_.wait(lock, ready);
  } else {
    output_cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), ready);
  }
  std::vector<RequestOutput> result(std::make_move_iterator(outputs_.begin()),
                                    std::make_move_iterator(outputs_.end()));
  outputs_.clear();
  return result;
}

void Engine::set_output_notifier(std::function<void()> notifier) {
  std::lock_guard<std::mutex> lock(output_mutex_);
  notifier_ = std::move(notifier);
}

bool Engine::has_unfinished_requests() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !live_request_ids_.empty();
}

int Engine::num_unfinished_requests() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(live_request_ids_.size());
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  EngineStats s = stats_;
  s.is_running = running_.load();
  return s;
}

}  // namespace modelbench
