// Continuous batching: the waiting and running queues, the per-step token
// budget and sequence limit, chunked prefill, preemption by recompute when
// blocks run out, priorities and abort. Decides who runs and how many
// tokens; the KV cache manager owns blocks; the runner builds tensors.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "core/kv_cache_manager.h"
#include "core/request_output.h"
#include "core/scheduler_output.h"
#include "core/sequence.h"

namespace modelbench {

struct SchedulerStats {
  int num_running = 0;
  int num_waiting = 0;
  double kv_cache_usage = 0.0;       // fraction of blocks held
  int num_free_blocks = 0;
  int num_total_blocks = 0;
  int64_t num_preemptions = 0;       // since start
  int64_t num_prefix_query_tokens = 0;
  int64_t num_prefix_hit_tokens = 0;
  // Speculative decoding, since start (vLLM's spec_decode counters): steps
  // that verified a proposal, tokens proposed, tokens accepted, and
  // accepted tokens by position in the proposal.
  int64_t num_spec_drafts = 0;
  int64_t num_spec_draft_tokens = 0;
  int64_t num_spec_accepted_tokens = 0;
  std::vector<int64_t> num_spec_accepted_tokens_per_pos;
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, const CacheConfig& cache_config, int eos_token_id);

  // Takes ownership. The caller has validated the request (Engine::add_request).
  void add_request(std::unique_ptr<Sequence> seq);
  // Frees everything the request holds; std::nullopt when the id is unknown.
  std::optional<RequestOutput> abort_request(const std::string& request_id);
  bool contains(const std::string& request_id) const { return requests_.count(request_id) > 0; }

  SchedulerOutput schedule();
  std::vector<RequestOutput> update_from_output(const SchedulerOutput& scheduler_output,
                                                const RunnerOutput& runner_output);

  bool has_unfinished_requests() const { return !requests_.empty(); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  SchedulerStats stats() const;
  const KVCacheManager& kv_cache_manager() const { return kv_cache_manager_; }
  void reset_prefix_cache() { kv_cache_manager_.reset_prefix_cache(); }

 private:
  void preempt(Sequence* seq);
  // Preempt lower-priority running sequences while the first waiting one
  // outranks them and has no room (see schedule(), step 0).
  void make_room_for_priority(int token_budget);
  // Speculative decoding: the tokens to propose after seq's last one this
  // step (none when it is off, the sequence cannot take them, or backs off).
  std::vector<int32_t> draft_for(Sequence* seq, int token_budget);
  void insert_waiting(Sequence* seq);
  void insert_running(Sequence* seq);
  std::optional<FinishReason> check_stop(const Sequence& seq) const;
  RequestOutput make_output(const Sequence& seq, std::vector<int32_t> new_token_ids) const;
  void finish(Sequence* seq, FinishReason reason);
  // Forget a finished request, keeping its Sequence alive until the next
  // schedule() so that the last SchedulerOutput stays valid.
  void retire(const std::string& request_id);

  SchedulerConfig config_;
  int eos_token_id_;
  KVCacheManager kv_cache_manager_;
  std::unordered_map<std::string, std::unique_ptr<Sequence>> requests_;
  std::vector<std::unique_ptr<Sequence>> retired_;
  // Both ordered by (priority, arrival_index): the back of running_ is the
  // preemption victim, the front of waiting_ is admitted next.
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;
  std::vector<std::string> finished_since_last_step_;
  std::vector<std::string> preempted_since_last_step_;
  int64_t num_preemptions_ = 0;
  int64_t num_prefix_query_tokens_ = 0;
  int64_t num_prefix_hit_tokens_ = 0;
  int64_t num_spec_drafts_ = 0;
  int64_t num_spec_draft_tokens_ = 0;
  int64_t num_spec_accepted_tokens_ = 0;
  std::vector<int64_t> num_spec_accepted_tokens_per_pos_;
};

}  // namespace modelbench
