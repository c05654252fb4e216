// The n-gram proposer of speculative decoding (prompt lookup): what a
// sequence's own history says comes next. Torch-free.
#pragma once

#include <cstdint>
#include <vector>

namespace modelbench {

// Up to `k` tokens proposed to follow `tokens`: for n from max_n down to
// min_n, the latest earlier place where the last n tokens occur, and the
// tokens that followed it there (at most k, and never past the end of
// `tokens`). Empty when no such n-gram recurs.
std::vector<int32_t> propose_ngram(const std::vector<int32_t>& tokens, int min_n, int max_n, int k);

}  // namespace modelbench
