// A test double for ModelRunner that simulates a paged KV cache. It writes
// each computed token into its slot, then reads the sequence's whole
// context back through the block table and checks it against the
// sequence's tokens, so a block handed to two sequences, a wrong prefix hit
// or a stale slot fails the test. The next token is a deterministic
// function of the context it read.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/model_runner.h"

namespace modelbench::testing {

inline int32_t next_token_of(const std::vector<int32_t>& context, int vocab_size) {
  uint64_t h = 1469598103934665603ULL;
  for (int32_t t : context) h = (h ^ static_cast<uint32_t>(t)) * 1099511628211ULL;
  return static_cast<int32_t>(h % static_cast<uint64_t>(vocab_size));
}

class FakeRunner : public ModelRunner {
 public:
  FakeRunner(int num_blocks, int block_size, int vocab_size = 1000)
      : block_size_(block_size), vocab_size_(vocab_size),
        slots_(static_cast<size_t>(num_blocks) * block_size, -1) {}

  RunnerOutput execute_model(const SchedulerOutput& out) override {
    RunnerOutput result;
    ++num_steps;
    for (const ScheduledSequence& s : out.scheduled) {
      const Sequence& seq = *s.seq;
      const auto& table = seq.block_table;
      const int known = seq.num_tokens();
      const int end = s.num_computed_tokens + s.num_scheduled_tokens;
      if (end > known + static_cast<int>(s.draft_token_ids.size()))
        throw std::logic_error("scheduled past the known tokens and drafts");
      if (static_cast<int>(table.size()) * block_size_ < end)
        throw std::logic_error("block table too short for " + seq.request_id());
      // The step's input at a position: a known token, or a draft after them.
      auto input = [&](int pos) { return pos < known ? seq.token_ids()[pos] : s.draft_token_ids[pos - known]; };
      // Write the new tokens' "K/V" into their slots.
      for (int pos = s.num_computed_tokens; pos < end; ++pos) slots_.at(slot(table, pos)) = input(pos);
      max_tokens_in_step = std::max(max_tokens_in_step, out.num_batched_tokens);
      if (!s.needs_sample) {
        result.sampled_token_ids.push_back(-1);
        continue;
      }
      // "Attention": read the whole context back from the cache.
      std::vector<int32_t> context(end);
      for (int pos = 0; pos < end; ++pos) {
        context[pos] = slots_.at(slot(table, pos));
        if (context[pos] != input(pos))
          throw std::logic_error("KV slot of " + seq.request_id() + " position " +
                                 std::to_string(pos) + " holds the wrong token");
      }
      context.resize(known);
      const int32_t first = next(context);
      result.sampled_token_ids.push_back(first);
      if (s.draft_token_ids.empty()) continue;
      // Greedy verification: each draft stands while it is what would come next.
      result.spec_token_ids.resize(out.scheduled.size());
      std::vector<int32_t>& more = result.spec_token_ids[result.sampled_token_ids.size() - 1];
      int32_t expected = first;
      for (int32_t draft : s.draft_token_ids) {
        if (draft != expected) break;
        context.push_back(draft);
        expected = next(context);
        more.push_back(expected);
      }
    }
    return result;
  }

  // The "model": the next token of a context. By default a hash of it;
  // tests of speculation set one that repeats itself.
  int32_t next(const std::vector<int32_t>& context) const {
    return next_fn ? next_fn(context) : next_token_of(context, vocab_size_);
  }
  std::function<int32_t(const std::vector<int32_t>&)> next_fn;

  int num_steps = 0;
  int max_tokens_in_step = 0;

 private:
  size_t slot(const std::vector<int>& table, int pos) const {
    return static_cast<size_t>(table.at(pos / block_size_)) * block_size_ + pos % block_size_;
  }
  int block_size_;
  int vocab_size_;
  std::vector<int32_t> slots_;
};

}  // namespace modelbench::testing
