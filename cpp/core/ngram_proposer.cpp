// propose_ngram: a backwards scan for the sequence's last n tokens.
#include "core/ngram_proposer.h"

#include <algorithm>

namespace modelbench {

std::vector<int32_t> propose_ngram(const std::vector<int32_t>& tokens, int min_n, int max_n, int k) {
  const int len = static_cast<int>(tokens.size());
  if (k < 1) return {};
  for (int n = std::min(max_n, len - 1); n >= min_n; --n) {
    const int32_t* suffix = tokens.data() + len - n;
    // Latest match first: the most recent context predicts best. A match
    // ends at `end` (exclusive), before the suffix itself.
    for (int end = len - 1; end >= n; --end) {
      if (tokens[end - 1] != suffix[n - 1]) continue;
      if (!std::equal(suffix, suffix + n, tokens.data() + end - n)) continue;
      const int take = std::min(k, len - end);
      return std::vector<int32_t>(tokens.begin() + end, tokens.begin() + end + take);
    }
  }
  return {};
}

}  // namespace modelbench
