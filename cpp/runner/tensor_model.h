// Tensor models: a TorchScript module (torch.jit.save's file) served
// through the DynamicBatcher. Requests carry one tensor per declared input,
// each [rows, ...]; a batch concatenates them along dim 0, runs the module
// once (in InferenceMode, on the batcher's thread: never the GIL), and
// splits each output back by rows. Results wait in a queue of their own
// (wait_results) for the caller's thread to take.
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/dynamic_batcher.h"

namespace modelbench {

struct TensorRequest {
  int64_t ticket = 0;
  std::vector<torch::Tensor> inputs;  // in the module's argument order, each [rows, ...]
};

struct TensorResult {
  int64_t ticket = 0;
  std::vector<torch::Tensor> outputs;  // each [rows, ...]
  std::string error;                   // empty on success
  bool timed_out = false;
};

class TensorModel {
 public:
  // path: a TorchScript file. num_outputs: what forward returns (a tensor,
  // or a tuple or list of this many). Throws InvalidArgument naming the
  // file when it cannot be loaded.
  TensorModel(const std::string& path, int num_inputs, int num_outputs, const std::string& device,
              DynamicBatcherConfig batching);
  ~TensorModel();

  // Queues a request; its ticket comes back from wait_results. Returns -1
  // when the queue is full (the caller answers 429). Throws InvalidArgument
  // for inputs of different row counts or a wrong number of inputs.
  int64_t submit(std::vector<torch::Tensor> inputs, double timeout_s);
  // Waits up to timeout_s (negative: forever) for at least one result and
  // returns all that are ready (empty after shutdown).
  std::vector<TensorResult> wait_results(double timeout_s);
  // Runs inputs straight through the module, unbatched (parity checks).
  std::vector<torch::Tensor> run_one(const std::vector<torch::Tensor>& inputs);

  void shutdown();
  DynamicBatcherStats stats() const { return batcher_->stats(); }
  const DynamicBatcherConfig& batching() const { return batcher_->config(); }

 private:
  std::vector<std::vector<torch::Tensor>> run_batch(const std::vector<const TensorRequest*>& batch);
  void finish(TensorResult result);

  torch::jit::Module module_;
  torch::Device device_;
  int num_outputs_;
  int num_inputs_;
  std::mutex results_mutex_;
  std::condition_variable results_cv_;
  std::deque<TensorResult> results_;
  bool closed_ = false;
  int64_t next_ticket_ = 1;
  std::unique_ptr<DynamicBatcher<TensorRequest, std::vector<torch::Tensor>>> batcher_;  // last
};

}  // namespace modelbench
