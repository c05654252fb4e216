// TokenGuide: the hand-over of one guided request's masks between the
// matcher thread (post, fail) and the sampler (wait).
#include "core/token_guide.h"

#include <chrono>

namespace modelbench {

void TokenGuide::post(int position, TokenMask mask) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (position < position_) return;
    position_ = position;
    mask_ = std::make_shared<const TokenMask>(std::move(mask));
  }
  cv_.notify_all();
}

void TokenGuide::fail(const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (failed_) return;
    failed_ = true;
    error_ = error;
  }
  cv_.notify_all();
}

void TokenGuide::cancel() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled_ = true;
  }
  cv_.notify_all();
}

TokenGuide::Wait TokenGuide::wait(int position, double timeout_s, std::shared_ptr<const TokenMask>* mask) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto settled = [&] { return failed_ || cancelled_ || position_ >= position; };
  if (!cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), settled)) return Wait::kTimedOut;
  if (failed_) return Wait::kFailed;
  if (cancelled_) return Wait::kCancelled;
  if (position_ != position) {
    // A mask for a later position arrived: the matcher is ahead of the engine,
    // which cannot happen unless positions were posted out of turn.
    failed_ = true;
    error_ = "the matcher posted a mask for output position " + std::to_string(position_) +
             " while the sampler needed position " + std::to_string(position);
    return Wait::kFailed;
  }
  *mask = mask_;
  return Wait::kReady;
}

std::string TokenGuide::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

}  // namespace modelbench
