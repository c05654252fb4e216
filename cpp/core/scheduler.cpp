// Scheduler: the policy of one step, and the bookkeeping after it.
#include "core/scheduler.h"

#include <algorithm>
#include <stdexcept>

#include "core/ngram_proposer.h"

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
      kv_cache_manager_(cache_config),
      num_spec_accepted_tokens_per_pos_(config.speculative.num_speculative_tokens, 0) {}

std::vector<int32_t> Scheduler::draft_for(Sequence* seq, int token_budget) {
  const SpeculativeConfig& spec = config_.speculative;
  if (!spec.enabled() || seq->num_computed_tokens != seq->num_tokens() - 1) return {};
  if (spec.disable_by_batch_size > 0 && static_cast<int>(running_.size()) > spec.disable_by_batch_size) return {};
  const SamplingParams& p = seq->params();
  // Outputs whose every token needs something the verification does not
  // give: logprobs, a grammar's mask, penalties over the tokens before it.
  if (p.logprobs >= 0 || seq->guide || p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f ||
      p.frequency_penalty != 0.0f || seq->num_output_tokens() < p.min_tokens)
    return {};
  if (seq->spec_backoff > 0) {
    --seq->spec_backoff;
    return {};
  }
  // The last token accepted is the model's own, after the drafts: it must
  // still fit in max_tokens and max_model_len.
  const int room = std::min({spec.num_speculative_tokens, token_budget - 1,
                             p.max_tokens - seq->num_output_tokens() - 1,
                             config_.max_model_len - seq->num_tokens() - 1});
  if (room < 1) return {};
  if (spec.draft_model) return std::vector<int32_t>(room, -1);  // the runner's draft model fills them
  return propose_ngram(seq->token_ids(), spec.prompt_lookup_min, spec.prompt_lookup_max, room);
}

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
    std::vector<int32_t> drafts = draft_for(seq, token_budget);
    int num_new = std::min(seq->num_tokens() - seq->num_computed_tokens, token_budget) +
                  static_cast<int>(drafts.size());
    bool scheduled = false;
    while (true) {
      if (kv_cache_manager_.allocate_slots(*seq, num_new)) {
        scheduled = true;
        break;
      }
      if (!drafts.empty()) {  // no room for the proposal: the plain decode first
        num_new -= static_cast<int>(drafts.size());
        drafts.clear();
        continue;
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
    const int known_end = seq->num_computed_tokens + num_new - static_cast<int>(drafts.size());
    out.scheduled.push_back(
        {seq, seq->num_computed_tokens, num_new, known_end == seq->num_tokens(), std::move(drafts)});
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
    const auto num_drafts = static_cast<int>(scheduled[i].draft_token_ids.size());
    seq->num_computed_tokens += scheduled[i].num_scheduled_tokens - num_drafts;
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
    std::vector<int32_t> gained{token};
    if (num_drafts > 0 && i < runner_output.spec_token_ids.size()) {
      const auto& more = runner_output.spec_token_ids[i];
      if (static_cast<int>(more.size()) > num_drafts)
        throw std::logic_error("runner accepted more tokens than " + seq->request_id() + " proposed");
      gained.insert(gained.end(), more.begin(), more.end());
    }
    if (num_drafts > 0) {
      // Every token gained but the last is an accepted draft, whose K/V the
      // step computed; the last one's is computed by the next step.
      const int accepted = static_cast<int>(gained.size()) - 1;
      seq->num_computed_tokens += accepted;
      ++num_spec_drafts_;
      num_spec_draft_tokens_ += num_drafts;
      num_spec_accepted_tokens_ += accepted;
      for (int pos = 0; pos < accepted; ++pos) ++num_spec_accepted_tokens_per_pos_[pos];
      if (accepted == 0) {  // a wasted proposal: pause, longer each time in a row
        seq->spec_backoff = seq->spec_backoff_next;
        seq->spec_backoff_next = std::min(seq->spec_backoff_next * 2, 64);
      } else {
        seq->spec_backoff_next = 1;
      }
    }
    std::vector<int32_t> appended;
    for (int32_t t : gained) {
      seq->append_token(t);
      appended.push_back(t);
      if (auto reason = check_stop(*seq)) {  // a stop inside the gained tokens drops the rest
        finish(seq, *reason);
        finished.push_back(seq);
        break;
      }
    }
    if (!seq->first_token_time) seq->first_token_time = Clock::now();
    outputs.push_back(make_output(*seq, std::move(appended)));
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
  s.num_spec_drafts = num_spec_drafts_;
  s.num_spec_draft_tokens = num_spec_draft_tokens_;
  s.num_spec_accepted_tokens = num_spec_accepted_tokens_;
  s.num_spec_accepted_tokens_per_pos = num_spec_accepted_tokens_per_pos_;
  return s;
}

}  // namespace modelbench
