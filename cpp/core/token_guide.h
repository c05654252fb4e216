// Guided decoding (structured outputs) as the engine sees it: a request
// whose tokens must follow a grammar carries a TokenGuide. The grammar
// itself lives off the engine thread (the matcher in Python): after each
// step the engine queues the guided requests' new tokens as GuideEvents;
// the matcher thread takes them, advances, and posts the allowed-token
// bitmask for the next output position. The sampler waits for that mask
// only when it samples, so computing it overlaps the model's forward pass.
// Torch-free; every method is thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace modelbench {

// Bit t % 32 of word t / 32 set: token t is allowed. Tokens past the
// mask's end are not.
using TokenMask = std::vector<uint32_t>;

class TokenGuide {
 public:
  enum class Wait { kReady, kCancelled, kFailed, kTimedOut };

  // The mask for output position `position` (0: the first generated token).
  // A newer position replaces older ones; an older post is ignored.
  void post(int position, TokenMask mask);
  // The matcher cannot go on (a grammar error, the matcher thread gone):
  // waiters wake with kFailed and the request ends with "abort".
  void fail(const std::string& error);
  // The request ended (abort, shutdown): waiters wake with kCancelled.
  void cancel();

  // Blocks until the mask for `position` is posted, the guide fails or is
  // cancelled, or timeout_s passes. On kReady, *mask points at the mask
  // (kept until a later position is posted, so a recompute after
  // preemption finds it again).
  Wait wait(int position, double timeout_s, std::shared_ptr<const TokenMask>* mask);

  std::string error() const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  int position_ = -1;
  std::shared_ptr<const TokenMask> mask_;
  bool cancelled_ = false;
  bool failed_ = false;
  std::string error_;
};

// What the matcher thread learns after a step: request `request_id` gained
// `new_token_ids`, the first at output position `first_position`; when
// `finished`, its guide is gone and the matcher can be dropped.
struct GuideEvent {
  std::string request_id;
  int first_position = 0;
  std::vector<int32_t> new_token_ids;
  bool finished = false;
};

}  // namespace modelbench
