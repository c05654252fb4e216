// The interface between the engine and whatever computes next tokens. The
// real runner (model forward over the paged KV pools, then the sampler)
// implements it; tests implement it with doubles.
#pragma once

#include "core/scheduler_output.h"

namespace modelbench {

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  // Compute K/V for every scheduled token and sample where needs_sample is
  // set. Called from the engine's thread only, one step at a time.
  virtual RunnerOutput execute_model(const SchedulerOutput& scheduler_output) = 0;
};

}  // namespace modelbench
