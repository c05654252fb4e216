// Log-probabilities reported for sampled tokens and prompt tokens.
#pragma once

#include <cstdint>
#include <vector>

namespace modelbench {

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
  int rank = 0;  // 1 = the most likely token at this position
};

// One position: the token that is there (sampled, or the next prompt
// token) and the `top` most likely alternatives, most likely first.
struct PositionLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;
};

}  // namespace modelbench
