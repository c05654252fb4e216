// TensorModel: load, batch, run, split.
#include "runner/tensor_model.h"

#include <chrono>

namespace modelbench {

TensorModel::TensorModel(const std::string& path, int num_inputs, int num_outputs, const std::string& device,
                         DynamicBatcherConfig batching)
    : device_(device), num_outputs_(num_outputs), num_inputs_(num_inputs) {
  if (num_inputs < 1) throw InvalidArgument("a tensor model has at least one input", "inputs");
  if (num_outputs < 1) throw InvalidArgument("a tensor model has at least one output", "outputs");
  try {
    module_ = torch::jit::load(path, device_);
  } catch (const c10::Error& e) {
    throw InvalidArgument("cannot load the TorchScript file " + path + ": " + e.what_without_backtrace(), "model");
  }
  module_.eval();
  batcher_ = std::make_unique<DynamicBatcher<TensorRequest, std::vector<torch::Tensor>>>(
      std::move(batching), [this](const std::vector<const TensorRequest*>& batch) { return run_batch(batch); });
}

TensorModel::~TensorModel() { shutdown(); }

std::vector<torch::Tensor> TensorModel::run_one(const std::vector<torch::Tensor>& inputs) {
  c10::InferenceMode guard;
  std::vector<c10::IValue> args;
  for (const torch::Tensor& t : inputs) args.emplace_back(t.to(device_));
  const c10::IValue out = module_.forward(args);
  std::vector<torch::Tensor> outputs;
  if (out.isTensor()) {
    outputs.push_back(out.toTensor());
  } else if (out.isTuple()) {
    for (const c10::IValue& v : out.toTupleRef().elements()) outputs.push_back(v.toTensor());
  } else if (out.isTensorList()) {
    for (const torch::Tensor& t : out.toTensorVector()) outputs.push_back(t);
  } else {
    throw std::runtime_error("the module returned " + out.tagKind() + "; a tensor model returns a tensor, "
                             "or a tuple or list of tensors");
  }
  if (static_cast<int>(outputs.size()) != num_outputs_)
    throw std::runtime_error("the module returned " + std::to_string(outputs.size()) + " outputs; its config "
                             "declares " + std::to_string(num_outputs_));
  for (torch::Tensor& t : outputs) t = t.cpu();
  return outputs;
}

std::vector<std::vector<torch::Tensor>> TensorModel::run_batch(const std::vector<const TensorRequest*>& batch) {
  const size_t num_inputs = batch.front()->inputs.size();
  std::vector<int64_t> rows;
  std::vector<torch::Tensor> joined;
  for (const TensorRequest* r : batch) rows.push_back(r->inputs.front().size(0));
  for (size_t i = 0; i < num_inputs; ++i) {
    std::vector<torch::Tensor> parts;
    for (const TensorRequest* r : batch) parts.push_back(r->inputs[i]);
    joined.push_back(parts.size() == 1 ? parts.front() : torch::cat(parts, 0));
  }
  const std::vector<torch::Tensor> outputs = run_one(joined);
  int64_t total = 0;
  for (int64_t n : rows) total += n;
  std::vector<std::vector<torch::Tensor>> split(batch.size());
  for (const torch::Tensor& out : outputs) {
    if (out.dim() == 0 || out.size(0) != total)
      throw std::runtime_error("an output has shape " + c10::str(out.sizes()) + ", not " + std::to_string(total) +
                               " rows: a batched model's outputs keep the batch dimension first");
    int64_t start = 0;
    for (size_t r = 0; r < batch.size(); ++r) {
      split[r].push_back(out.narrow(0, start, rows[r]).clone());
      start += rows[r];
    }
  }
  return split;
}

int64_t TensorModel::submit(std::vector<torch::Tensor> inputs, double timeout_s) {
  if (inputs.empty()) throw InvalidArgument("a request needs at least one input tensor", "inputs");
  const int64_t rows = inputs.front().dim() == 0 ? 0 : inputs.front().size(0);
  for (const torch::Tensor& t : inputs)
    if (t.dim() == 0 || t.size(0) != rows)
      throw InvalidArgument("every input of a request has the same number of rows (its first dimension)", "inputs");
  if (static_cast<int>(inputs.size()) != num_inputs_)
    throw InvalidArgument("this model takes " + std::to_string(num_inputs_) + " inputs, got " +
                              std::to_string(inputs.size()),
                          "inputs");
  int64_t ticket;
  {
    std::lock_guard<std::mutex> lock(results_mutex_);
    ticket = next_ticket_++;
  }
  TensorRequest request{ticket, std::move(inputs)};
  const bool queued = batcher_->submit(std::move(request), static_cast<int>(rows), timeout_s,
                                       [this, ticket](auto outcome) {
                                         TensorResult result;
                                         result.ticket = ticket;
                                         result.error = std::move(outcome.error);
                                         result.timed_out = outcome.timed_out;
                                         if (outcome.output) result.outputs = std::move(*outcome.output);
                                         finish(std::move(result));
                                       });
  return queued ? ticket : -1;
}

void TensorModel::finish(TensorResult result) {
  {
    std::lock_guard<std::mutex> lock(results_mutex_);
    results_.push_back(std::move(result));
  }
  results_cv_.notify_all();
}

std::vector<TensorResult> TensorModel::wait_results(double timeout_s) {
  std::unique_lock<std::mutex> lock(results_mutex_);
  auto ready = [&] { return !results_.empty() || closed_; };
  if (timeout_s < 0) {
    results_cv_.wait(lock, ready);
  } else {
    results_cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), ready);
  }
  std::vector<TensorResult> out(std::make_move_iterator(results_.begin()), std::make_move_iterator(results_.end()));
  results_.clear();
  return out;
}

void TensorModel::shutdown() {
  if (batcher_) batcher_->shutdown();  // fails what waits: those results are queued
  {
    std::lock_guard<std::mutex> lock(results_mutex_);
    closed_ = true;
  }
  results_cv_.notify_all();
}

}  // namespace modelbench
