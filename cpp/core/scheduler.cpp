// Scheduler: the policy of one step, and the bookkeeping after it.
#include "core/scheduler.h"

#include <algorithm>
#include <stdexcept>

namespace modelbench {

namespace {
bool runs_before(const Sequence* a, const Sequence* b) {
  if (a->priority() != b->priority()) return a->priority() < b->priority();
  return a->arrival_index() < b->arrival_index();
}

double seconds_since(Clock::time_point start, const std::optional<Clock::time_point>& end) {
  if (!end) return -1.0;
  return std::chrono::duration<double>(*end - start).count();
}
}  // namespace

Scheduler::Scheduler(const SchedulerConfig& config, const CacheConfig& cache_config,
                     int eos_token_id)
    : config_((config.validate(), config)),
      eos_token_id_(eos_token_id),
      kv_cache_manager_(cache_config) {}

void Scheduler::add_request(std::unique_ptr<Sequence> seq) {
  Sequence* raw = seq.get();
  if (!requests_.emplace(seq->request_id(), std::move(seq)).second)
    throw InvalidArgument("request_id '" + raw->request_id() + "' is already in use", "request_id");
  insert_waiting(raw);
}

void Scheduler::insert_waiting(Sequence* seq) {
  seq->status = SequenceStatus::kWaiting;
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), seq, runs_before), seq);
}

void Scheduler::insert_running(Sequence* seq) {
  seq->status = SequenceStatus::kRunning;
  running_.insert(std::upper_bound(running_.begin(), running_.end(), seq, runs_before), seq);
}

void Scheduler::preempt(Sequence* seq) {
  // Recompute, not swap: the blocks go back to the pool (full ones stay
  // cached, so the recompute often hits them) and the sequence waits again.
  kv_cache_manager_.free(*seq);
  ++seq->num_preemptions;
  ++num_preemptions_;
  preempted_since_last_step_.push_back(seq->request_id());
  insert_waiting(seq);
}

void Scheduler::retire(const std::string& request_id) {
  auto it = requests_.find(request_id);
  retired_.push_back(std::move(it->second));
  requests_.erase(it);
}

void Scheduler::make_room_for_priority(int token_budget) {
  while (!waiting_.empty() && !running_.empty()) {
    Sequence* seq = waiting_.front();
    Sequence* victim = running_.back();
    if (seq->priority() >= victim->priority()) return;
    const bool slot_free = static_cast<int>(running_.size()) < config_.max_num_seqs;
    const ComputedBlocks computed = seq->params().prompt_logprobs >= 0
                                        ? ComputedBlocks{}
                                        : kv_cache_manager_.get_computed_blocks(*seq);
    const int num_new =
        std::min(seq->num_tokens() - computed.num_computed_tokens, std::max(token_budget, 1));
    if (slot_free && kv_cache_manager_.can_allocate(*seq, computed, num_new)) return;
    running_.pop_back();
    preempt(victim);
  }
}

SchedulerOutput Scheduler::schedule() {
  retired_.clear();  // the last step's outputs no longer point at them
  SchedulerOutput out;
  int token_budget = config_.max_num_batched_tokens;
  bool preempted = false;

  // 0. A waiting sequence that runs before the lowest-priority running one
  //    takes its place when there is no room for it (no sequence slot, or
  //    too few free blocks): that one is preempted, as vLLM's priority
  //    policy does, so a flood of low-priority work delays a high-priority
  //    request by at most one step.
  make_room_for_priority(token_budget);

  // 1. Running sequences first, highest priority first: their decodes and
  //    the remaining chunks of prompts admitted earlier.
  for (size_t i = 0; i < running_.size() && token_budget > 0;) {
    Sequence* seq = running_[i];
    const int num_new = std::min(seq->num_tokens() - seq->num_computed_tokens, token_budget);
    bool scheduled = false;
    while (true) {
      if (kv_cache_manager_.allocate_slots(*seq, num_new)) {
        scheduled = true;
        break;
      }
      // Out of blocks: the lowest-priority, latest-arrived running sequence
      // gives its blocks back. It has not been scheduled yet this step,
      // because running_ is visited in priority order.
      Sequence* victim = running_.back();
      running_.pop_back();
      preempt(victim);
      preempted = true;
      if (victim == seq) break;
    }
    if (!scheduled) break;
    out.scheduled.push_back({seq, seq->num_computed_tokens, num_new,
                             seq->num_computed_tokens + num_new == seq->num_tokens()});
    token_budget -= num_new;
    ++i;
  }

  // 2. Then prompts from the waiting queue, in priority order, while the
  //    budget, the sequence limit and the free blocks (above the watermark)
  //    allow. After a preemption nothing new is admitted this step.
  while (!preempted && !waiting_.empty() && token_budget > 0 &&
         static_cast<int>(running_.size()) < config_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    // Prompt logprobs need logits at every prompt position, so such a
    // request computes its whole prompt instead of reusing cached blocks.
    const ComputedBlocks computed = seq->params().prompt_logprobs >= 0
                                        ? ComputedBlocks{}
                                        : kv_cache_manager_.get_computed_blocks(*seq);
    int num_new = seq->num_tokens() - computed.num_computed_tokens;
    if (num_new > token_budget) {
      if (!config_.enable_chunked_prefill) break;
      num_new = token_budget;  // a chunk now, the rest in later steps
    }
    // The watermark keeps room for running sequences to grow; with none
    // running it would only stop a large prompt from ever starting.
    if (!running_.empty() && !kv_cache_manager_.can_allocate(*seq, computed, num_new)) break;
    if (!kv_cache_manager_.allocate_slots(*seq, num_new, &computed)) break;
    waiting_.pop_front();
    seq->num_cached_tokens = computed.num_computed_tokens;
    num_prefix_query_tokens_ += seq->num_tokens();
    num_prefix_hit_tokens_ += computed.num_computed_tokens;
    if (!seq->first_scheduled_time) seq->first_scheduled_time = Clock::now();
    insert_running(seq);
    out.scheduled.push_back({seq, seq->num_computed_tokens, num_new,
                             seq->num_computed_tokens + num_new == seq->num_tokens()});
    token_budget -= num_new;
  }

  out.num_batched_tokens = config_.max_num_batched_tokens - token_budget;
  // The runner sees only steps that schedule something: an abort that leaves
  // nothing to run keeps its id for the next such step, or the runner would
  // never drop the request's state (a seeded request's generator).
  if (!out.empty()) {
    out.finished_request_ids = std::move(finished_since_last_step_);
    out.preempted_request_ids = std::move(preempted_since_last_step_);
    finished_since_last_step_.clear();
    preempted_since_last_step_.clear();
  }
  return out;
}

std::optional<FinishReason> Scheduler::check_stop(const Sequence& seq) const {
  const SamplingParams& params = seq.params();
  const int32_t last = seq.last_token_id();
  if (seq.num_output_tokens() >= params.min_tokens) {
    if (!params.ignore_eos && eos_token_id_ >= 0 && last == eos_token_id_) return FinishReason::kStop;
    if (std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), last) !=
        params.stop_token_ids.end())
      return FinishReason::kStop;
  }
  if (seq.num_output_tokens() >= params.max_tokens) return FinishReason::kLength;
  if (seq.num_tokens() >= config_.max_model_len) return FinishReason::kLength;
  return std::nullopt;
}

RequestOutput Scheduler::make_output(const Sequence& seq, std::vector<int32_t> new_token_ids) const {
  RequestOutput out;
  out.request_id = seq.request_id();
  out.new_token_ids = std::move(new_token_ids);
  out.finished = seq.is_finished();
  out.finish_reason = seq.finish_reason;
  out.num_prompt_tokens = seq.num_prompt_tokens();
  out.num_output_tokens = seq.num_output_tokens();
  out.num_cached_tokens = seq.num_cached_tokens;
  out.num_preemptions = seq.num_preemptions;
  out.queue_time_s = seconds_since(seq.arrival_time, seq.first_scheduled_time);
  out.first_token_time_s = seconds_since(seq.arrival_time, seq.first_token_time);
  return out;
}

void Scheduler::finish(Sequence* seq, FinishReason reason) {
  seq->status = SequenceStatus::kFinished;
  seq->finish_reason = reason;
  kv_cache_manager_.free(*seq);
  finished_since_last_step_.push_back(seq->request_id());
}

std::vector<RequestOutput> Scheduler::update_from_output(const SchedulerOutput& scheduler_output,
                                                         const RunnerOutput& runner_output) {
  const auto& scheduled = scheduler_output.scheduled;
  if (runner_output.sampled_token_ids.size() != scheduled.size())
    throw std::logic_error("runner returned " + std::to_string(runner_output.sampled_token_ids.size()) +
                           " tokens for " + std::to_string(scheduled.size()) + " scheduled sequences");
  std::vector<RequestOutput> outputs;
  std::vector<Sequence*> finished;
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Sequence* seq = const_cast<Sequence*>(scheduled[i].seq);
    std::vector<PositionLogprobs> prompt_logprobs;
    if (i < runner_output.prompt_logprobs.size()) {
      // Entries cover positions starting at num_computed_tokens; drop any
      // that an earlier computation of this prompt already delivered.
      const auto& entries = runner_output.prompt_logprobs[i];
      const int first = scheduled[i].num_computed_tokens;
      const int skip = std::clamp(seq->num_prompt_logprobs_sent - first, 0, static_cast<int>(entries.size()));
      prompt_logprobs.assign(entries.begin() + skip, entries.end());
      seq->num_prompt_logprobs_sent =
          std::max(seq->num_prompt_logprobs_sent, first + static_cast<int>(entries.size()));
    }
    seq->num_computed_tokens += scheduled[i].num_scheduled_tokens;
    if (!scheduled[i].needs_sample) {
      if (!prompt_logprobs.empty()) {
        outputs.push_back(make_output(*seq, {}));
        outputs.back().prompt_logprobs = std::move(prompt_logprobs);
      }
      continue;
    }
    if (i < runner_output.guide_failed.size() && runner_output.guide_failed[i]) {
      finish(seq, FinishReason::kAbort);
      finished.push_back(seq);
      outputs.push_back(make_output(*seq, {}));
      outputs.back().prompt_logprobs = std::move(prompt_logprobs);
      continue;
    }
    const int32_t token = runner_output.sampled_token_ids[i];
    if (token < 0)
      throw std::logic_error("runner gave no token for " + seq->request_id() + ", which needed one");
    seq->append_token(token);
    if (!seq->first_token_time) seq->first_token_time = Clock::now();
    if (auto reason = check_stop(*seq)) {
      finish(seq, *reason);
      finished.push_back(seq);
    }
    outputs.push_back(make_output(*seq, {token}));
    if (i < runner_output.logprobs.size()) outputs.back().logprobs = runner_output.logprobs[i];
    outputs.back().prompt_logprobs = std::move(prompt_logprobs);
  }
  if (!finished.empty()) {
    running_.erase(std::remove_if(running_.begin(), running_.end(),
                                  [](const Sequence* s) { return s->is_finished(); }),
                   running_.end());
    for (Sequence* seq : finished) retire(seq->request_id());
  }
  return outputs;
}

std::optional<RequestOutput> Scheduler::abort_request(const std::string& request_id) {
  auto it = requests_.find(request_id);
  if (it == requests_.end()) return std::nullopt;
  Sequence* seq = it->second.get();
  if (seq->status == SequenceStatus::kRunning) {
    running_.erase(std::find(running_.begin(), running_.end(), seq));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), seq));
  }
  finish(seq, FinishReason::kAbort);
  RequestOutput out = make_output(*seq, {});
  retire(request_id);
  return out;
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.num_running = num_running();
  s.num_waiting = num_waiting();
  s.kv_cache_usage = kv_cache_manager_.usage();
  s.num_free_blocks = kv_cache_manager_.num_free_blocks();
  s.num_total_blocks = kv_cache_manager_.pool().num_blocks();
  s.num_preemptions = num_preemptions_;
  s.num_prefix_query_tokens = num_prefix_query_tokens_;
  s.num_prefix_hit_tokens = num_prefix_hit_tokens_;
  return s;
}

}  // namespace modelbench
