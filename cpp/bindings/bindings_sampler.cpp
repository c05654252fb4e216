// Bindings of the sampler, in modelbench._core.testing: conversions only.
// The engine hands the sampler Sequences; from Python (tests) a request is
// a tuple that becomes a temporary Sequence here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "runner/sampler.h"

namespace py = pybind11;
using namespace modelbench;

namespace {

// (request_id, prompt_ids, output_ids, params)
using SampleRequest =
    std::tuple<std::string, std::vector<int32_t>, std::vector<int32_t>, SamplingParams>;

std::pair<std::vector<int32_t>, std::vector<std::vector<PositionLogprobs>>> sample(
    Sampler& sampler, const torch::Tensor& logits, const std::vector<SampleRequest>& requests) {
  std::vector<Sequence> seqs;
  seqs.reserve(requests.size());
  for (const auto& [request_id, prompt_ids, output_ids, params] : requests) {
    params.validate();
    Sequence& seq = seqs.emplace_back(request_id, prompt_ids, params, 0, seqs.size());
    for (int32_t id : output_ids) seq.append_token(id);
  }
  std::vector<const Sequence*> rows;
  for (const Sequence& seq : seqs) rows.push_back(&seq);
  SamplerOutput out = sampler.sample(logits, rows);
  return {std::move(out.token_ids), std::move(out.logprobs)};
}

}  // namespace

void bind_sampler(py::module_& testing) {
  py::class_<Sampler>(testing, "Sampler",
                      "Next-token sampling with penalties, temperature, top-k/p, min-p, seeds, logprobs.")
      .def(py::init<int>(), py::arg("eos_token_id") = -1,
           "eos_token_id < 0: the model has none. EOS is held back before min_tokens.")
      .def("sample", &sample, py::arg("logits"), py::arg("requests"),
           "logits: [num_rows, vocab_size]; requests: one (request_id, prompt_ids, output_ids, "
           "SamplingParams) per row. Returns (token_ids, logprobs), logprobs[i] holding one "
           "PositionLogprobs when params.logprobs >= 0, else none.")
      .def_static("compute_logprobs", &Sampler::compute_logprobs, py::arg("logits"),
                  py::arg("target_ids"), py::arg("num_top"),
                  "logits: [n, vocab_size]; target_ids: [n]. Logprob and rank of each target "
                  "under log_softmax(logits), plus the top num_top.")
      .def("drop_request", &Sampler::drop_request, py::arg("request_id"),
           "Forget a finished request's seeded generator.");
}
