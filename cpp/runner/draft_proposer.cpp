// DraftProposer: catch the draft's K/V up to each sequence's last token,
// then k greedy decode steps of the draft, batched over the sequences.
#include "runner/draft_proposer.h"

#include <algorithm>

#include "kernels/sampling_ops.h"

namespace modelbench {

namespace {
// A flat batch on the host, one attention sequence per `seqs` entry (rows
// query_start[i] .. query_start[i + 1], context_lens[i] keys); the tensors
// of batch() alias these vectors, which must outlive the forward.
struct HostBatch {
  std::vector<int64_t> tokens, positions, slots, query_start{0}, context;
  std::vector<const Sequence*> seqs;
  std::vector<int32_t> tables;

  void add(const Sequence& seq, int64_t token, int64_t position, int block_size) {
    tokens.push_back(token);
    positions.push_back(position);
    slots.push_back(static_cast<int64_t>(seq.block_table.at(position / block_size)) * block_size +
                    position % block_size);
  }
  void end_sequence(const Sequence& seq, int64_t context_len) {
    query_start.push_back(static_cast<int64_t>(tokens.size()));
    context.push_back(context_len);
    seqs.push_back(&seq);
  }
  ForwardBatch batch(const torch::Device& device, int block_size) {
    const auto n = static_cast<int64_t>(seqs.size());
    int64_t max_blocks = 1;
    for (int64_t c : context) max_blocks = std::max<int64_t>(max_blocks, (c + block_size - 1) / block_size);
    tables.assign(n * max_blocks, 0);
    for (int64_t i = 0; i < n; ++i) {
      const auto& table = seqs[i]->block_table;
      const int64_t m = std::min<int64_t>(max_blocks, static_cast<int64_t>(table.size()));
      std::copy(table.begin(), table.begin() + m, tables.begin() + i * max_blocks);
    }
    ForwardBatch b;
    b.input_ids = sampling_ops::to_device(tokens, device);
    b.positions = sampling_ops::to_device(positions, device);
    b.slot_mapping = sampling_ops::to_device(slots, device);
    b.attention.query_start_loc = torch::from_blob(query_start.data(), {n + 1}, torch::kLong);
    b.attention.context_lens = torch::from_blob(context.data(), {n}, torch::kLong);
    b.attention.block_tables = torch::from_blob(tables.data(), {n, max_blocks}, torch::kInt);
    return b;
  }
};
}  // namespace

DraftProposer::DraftProposer(std::unique_ptr<Model> model, KVCacheSpec kv_spec, int num_blocks)
    : model_(std::move(model)), kv_pool_(kv_spec, num_blocks), block_size_(kv_spec.block_size) {}

std::vector<int64_t> DraftProposer::decode(const std::vector<const Sequence*>& seqs,
                                           const std::vector<int64_t>& tokens,
                                           const std::vector<int64_t>& positions) {
  HostBatch host;
  for (size_t i = 0; i < seqs.size(); ++i) {
    host.add(*seqs[i], tokens[i], positions[i], block_size_);
    host.end_sequence(*seqs[i], positions[i] + 1);
  }
  const torch::Tensor hidden = model_->forward(host.batch(kv_pool_.spec().device, block_size_), kv_pool_);
  auto best = sampling_ops::greedy_argmax(model_->compute_logits(hidden)).cpu();
  const int64_t* ids = best.data_ptr<int64_t>();
  return std::vector<int64_t>(ids, ids + static_cast<int64_t>(seqs.size()));
}

std::vector<std::vector<int32_t>> DraftProposer::propose(const SchedulerOutput& scheduler_output) {
  const auto& scheduled = scheduler_output.scheduled;
  for (const std::string& id : scheduler_output.finished_request_ids) drop(id);
  for (const std::string& id : scheduler_output.preempted_request_ids) drop(id);
  std::vector<std::vector<int32_t>> drafts(scheduled.size());
  std::vector<size_t> which;
  for (size_t i = 0; i < scheduled.size(); ++i)
    if (!scheduled[i].draft_token_ids.empty()) which.push_back(i);
  if (which.empty()) return drafts;

  // 1. Catch up: the draft's K/V for every position before each sequence's
  //    last token, one forward over all the sequences' missing positions
  //    (a prompt the first time, the tokens gained since it last proposed).
  {
    HostBatch host;
    for (size_t i : which) {
      const Sequence& seq = *scheduled[i].seq;
      const int last = seq.num_tokens() - 1;
      const int from = std::min(computed_[seq.request_id()], last);
      if (from >= last) continue;
      for (int p = from; p < last; ++p) host.add(seq, seq.token_ids()[p], p, block_size_);
      host.end_sequence(seq, last);
    }
    // Only the K/V it writes are wanted.
    if (!host.seqs.empty()) model_->forward(host.batch(kv_pool_.spec().device, block_size_), kv_pool_);
  }

  // 2. Greedy decode steps: the last token, then each draft, as input.
  std::vector<const Sequence*> seqs;
  std::vector<int64_t> tokens, positions;
  size_t max_k = 0;
  for (size_t i : which) {
    const Sequence& seq = *scheduled[i].seq;
    seqs.push_back(&seq);
    tokens.push_back(seq.last_token_id());
    positions.push_back(seq.num_tokens() - 1);
    max_k = std::max(max_k, scheduled[i].draft_token_ids.size());
  }
  for (size_t step = 0; step < max_k; ++step) {
    std::vector<const Sequence*> step_seqs;
    std::vector<int64_t> step_tokens, step_positions;
    std::vector<size_t> step_rows;
    for (size_t j = 0; j < which.size(); ++j) {
      if (drafts[which[j]].size() >= scheduled[which[j]].draft_token_ids.size()) continue;
      step_seqs.push_back(seqs[j]);
      step_tokens.push_back(tokens[j]);
      step_positions.push_back(positions[j]);
      step_rows.push_back(j);
    }
    if (step_rows.empty()) break;
    const std::vector<int64_t> next = decode(step_seqs, step_tokens, step_positions);
    for (size_t r = 0; r < step_rows.size(); ++r) {
      const size_t j = step_rows[r];
      drafts[which[j]].push_back(static_cast<int32_t>(next[r]));
      tokens[j] = next[r];
      ++positions[j];
    }
  }
  for (size_t i : which) computed_[scheduled[i].seq->request_id()] = scheduled[i].seq->num_tokens() - 1;
  return drafts;
}

void DraftProposer::keep(const std::string& request_id, int num_valid) { computed_[request_id] = num_valid; }

}  // namespace modelbench
