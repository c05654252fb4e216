// The pybind11 module modelbench._core (_core_<level>): type conversions and docstrings.
// No logic lives here. Blocking calls release the GIL.
#include <cstring>
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include "core/config.h"
#include "models/dtype.h"
#include "core/engine.h"
#include "runner/kv_pool.h"
#include "core/model_runner.h"
#include "core/sequence.h"

namespace py = pybind11;
using namespace modelbench;

namespace {

// Lets Python classes implement ModelRunner (tests use this for doubles).
class PyModelRunner : public ModelRunner {
 public:
  using ModelRunner::ModelRunner;
  RunnerOutput execute_model(const SchedulerOutput& scheduler_output) override {
    PYBIND11_OVERRIDE_PURE(RunnerOutput, ModelRunner, execute_model, scheduler_output);
  }
};


// Engine's destructor joins the loop thread, which may be waiting for the
// GIL inside a Python runner: destroy it with the GIL released.
struct ReleaseGilDelete {
  void operator()(Engine* engine) const {
    if (PyGILState_Check()) {
      py::gil_scoped_release release;
      delete engine;
    } else {
      delete engine;
    }
  }
};
using EngineHolder = std::unique_ptr<Engine, ReleaseGilDelete>;

// modelbench._core.InvalidArgument: a ValueError whose `param` is the
// offending field's name, or None. str(error) is the C++ message.
void register_invalid_argument(py::module_& m) {
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> storage;
  storage.call_once_and_store_result([&] {
    py::object type = py::exception<InvalidArgument>(m, "InvalidArgument", PyExc_ValueError);
    type.attr("__doc__") =
        "A value a user can get wrong. str() is the message, naming the value; `param` names the "
        "offending field (None when no single field is at fault).";
    type.attr("param") = py::none();
    return type;
  });
  py::register_local_exception_translator([](std::exception_ptr raised) {
    try {
      if (raised) std::rethrow_exception(raised);
    } catch (const InvalidArgument& e) {
      const py::object& type = storage.get_stored();
      py::object error = type(e.what());
      if (!e.param().empty()) error.attr("param") = e.param();
      py::set_error(type, error);
    }
  });
}

// A Python object that may be released from a thread without the GIL.
std::shared_ptr<py::object> share_with_threads(py::object object) {
  return std::shared_ptr<py::object>(new py::object(std::move(object)), [](py::object* p) {
    py::gil_scoped_acquire gil;
    delete p;
  });
}


}  // namespace

void bind_model(py::module_& m, py::module_& testing);
void bind_sampler(py::module_& testing);
void bind_quant(py::module_& testing);
void bind_bert(py::module_& m);

// One module per x86-64 level, _core_avx512, _core_avx2, _core_generic
// (cpp/CMakeLists.txt names it); python/modelbench/_core.py imports one.
#ifndef MODELBENCH_MODULE_NAME
#error "MODELBENCH_MODULE_NAME (the module's name, _core_<level>) comes from cpp/CMakeLists.txt"
#endif
PYBIND11_MODULE(MODELBENCH_MODULE_NAME, m) {
  m.doc() = "modelbench's C++ engine core: paged KV cache, continuous-batching scheduler, engine loop.";
  // What only tests and benchmarks call: the kernels on their own, the
  // sampler and KV pool outside a runner, the runner's logit recording.
  py::module_ testing = m.def_submodule(
      "testing", "Kernels and internals for tests and benchmarks; not part of modelbench's API.");
  register_invalid_argument(m);

  py::class_<CacheConfig>(m, "CacheConfig", "KV block pool configuration.")
      .def(py::init<>())
      .def_readwrite("block_size", &CacheConfig::block_size, "Tokens per KV block.")
      .def_readwrite("num_blocks", &CacheConfig::num_blocks, "Blocks in the pool.")
      .def_readwrite("enable_prefix_caching", &CacheConfig::enable_prefix_caching)
      .def_readwrite("watermark", &CacheConfig::watermark,
                     "Fraction of blocks kept free when admitting new prompts.")
      .def("validate", &CacheConfig::validate);

  py::class_<SpeculativeConfig>(m, "SpeculativeConfig", "Speculative decoding by n-gram (prompt lookup).")
      .def(py::init<>())
      .def_readwrite("num_speculative_tokens", &SpeculativeConfig::num_speculative_tokens)
      .def_readwrite("prompt_lookup_max", &SpeculativeConfig::prompt_lookup_max)
      .def_readwrite("prompt_lookup_min", &SpeculativeConfig::prompt_lookup_min)
      .def_readwrite("disable_by_batch_size", &SpeculativeConfig::disable_by_batch_size)
      .def_readwrite("draft_model", &SpeculativeConfig::draft_model,
                     "The runner's draft model proposes (TransformerRunner.set_draft_model).")
      .def("validate", &SpeculativeConfig::validate);

  py::class_<SchedulerConfig>(m, "SchedulerConfig", "Per-step limits of the scheduler.")
      .def(py::init<>())
      .def_readwrite("max_num_batched_tokens", &SchedulerConfig::max_num_batched_tokens)
      .def_readwrite("max_num_seqs", &SchedulerConfig::max_num_seqs)
      .def_readwrite("max_model_len", &SchedulerConfig::max_model_len)
      .def_readwrite("enable_chunked_prefill", &SchedulerConfig::enable_chunked_prefill)
      .def_readwrite("speculative", &SchedulerConfig::speculative)
      .def("validate", &SchedulerConfig::validate);

  py::class_<EngineConfig>(m, "EngineConfig", "Cache and scheduler configuration plus model facts.")
      .def(py::init<>())
      .def_readwrite("cache", &EngineConfig::cache)
      .def_readwrite("scheduler", &EngineConfig::scheduler)
      .def_readwrite("eos_token_id", &EngineConfig::eos_token_id)
      .def_readwrite("vocab_size", &EngineConfig::vocab_size)
      .def("validate", &EngineConfig::validate);

  py::class_<SamplingParams>(m, "SamplingParams", "Per-request sampling and stopping parameters.")
      .def(py::init<>())
      .def_readwrite("max_tokens", &SamplingParams::max_tokens)
      .def_readwrite("min_tokens", &SamplingParams::min_tokens)
      .def_readwrite("temperature", &SamplingParams::temperature)
      .def_readwrite("top_k", &SamplingParams::top_k)
      .def_readwrite("top_p", &SamplingParams::top_p)
      .def_readwrite("min_p", &SamplingParams::min_p)
      .def_readwrite("repetition_penalty", &SamplingParams::repetition_penalty)
      .def_readwrite("presence_penalty", &SamplingParams::presence_penalty)
      .def_readwrite("frequency_penalty", &SamplingParams::frequency_penalty)
      .def_readwrite("seed", &SamplingParams::seed)
      .def_readwrite("stop_token_ids", &SamplingParams::stop_token_ids)
      .def_readwrite("ignore_eos", &SamplingParams::ignore_eos)
      .def_readwrite("logprobs", &SamplingParams::logprobs)
      .def_readwrite("prompt_logprobs", &SamplingParams::prompt_logprobs)
      .def_readwrite("guided", &SamplingParams::guided,
                     "Each token comes from the allowed set posted with Engine.post_token_mask.")
      .def("validate", &SamplingParams::validate,
           "Raise InvalidArgument (a ValueError) naming the first invalid field; its `param` is the field.");

  py::class_<ScheduledSequence>(m, "ScheduledSequence", "One sequence's share of a step.")
      .def_property_readonly("request_id", [](const ScheduledSequence& s) { return s.seq->request_id(); })
      .def_property_readonly("token_ids", [](const ScheduledSequence& s) { return s.seq->token_ids(); })
      .def_property_readonly("num_prompt_tokens", [](const ScheduledSequence& s) { return s.seq->num_prompt_tokens(); })
      .def_property_readonly("block_table", [](const ScheduledSequence& s) { return s.seq->block_table; })
      .def_property_readonly("params", [](const ScheduledSequence& s) { return s.seq->params(); })
      .def_readonly("num_computed_tokens", &ScheduledSequence::num_computed_tokens)
      .def_readonly("num_scheduled_tokens", &ScheduledSequence::num_scheduled_tokens)
      .def_readonly("needs_sample", &ScheduledSequence::needs_sample)
      .def_readonly("draft_token_ids", &ScheduledSequence::draft_token_ids);

  py::class_<SchedulerOutput>(m, "SchedulerOutput", "What one step computes.")
      .def_readonly("scheduled", &SchedulerOutput::scheduled)
      .def_readonly("num_batched_tokens", &SchedulerOutput::num_batched_tokens)
      .def_readonly("finished_request_ids", &SchedulerOutput::finished_request_ids)
      .def_readonly("preempted_request_ids", &SchedulerOutput::preempted_request_ids);

  py::class_<RunnerOutput>(m, "RunnerOutput", "Sampled token per scheduled sequence (-1: none).")
      .def(py::init<>())
      .def(py::init([](std::vector<int32_t> ids) { return RunnerOutput{std::move(ids)}; }),
           py::arg("sampled_token_ids"))
      .def_readwrite("sampled_token_ids", &RunnerOutput::sampled_token_ids)
      .def_readwrite("guide_failed", &RunnerOutput::guide_failed)
      .def_readwrite("spec_token_ids", &RunnerOutput::spec_token_ids);

  py::class_<GuideEvent>(m, "GuideEvent", "Tokens a guided request gained in a step (or that it finished).")
      .def_readonly("request_id", &GuideEvent::request_id)
      .def_readonly("first_position", &GuideEvent::first_position)
      .def_readonly("new_token_ids", &GuideEvent::new_token_ids)
      .def_readonly("finished", &GuideEvent::finished);

  py::class_<ModelRunner, PyModelRunner, std::shared_ptr<ModelRunner>>(
      m, "ModelRunner", "Computes a step: subclass and implement execute_model(scheduler_output).")
      .def(py::init<>())
      .def("execute_model", &ModelRunner::execute_model, py::arg("scheduler_output"));

  py::class_<TokenLogprob>(m, "TokenLogprob")
      .def_readonly("token_id", &TokenLogprob::token_id)
      .def_readonly("logprob", &TokenLogprob::logprob)
      .def_readonly("rank", &TokenLogprob::rank);
  py::class_<PositionLogprobs>(m, "PositionLogprobs", "The token at a position and the top alternatives.")
      .def_readonly("chosen", &PositionLogprobs::chosen)
      .def_readonly("top", &PositionLogprobs::top);

  py::class_<RequestOutput>(m, "RequestOutput", "A request's progress after one step.")
      .def_readonly("request_id", &RequestOutput::request_id)
      .def_readonly("new_token_ids", &RequestOutput::new_token_ids)
      .def_readonly("logprobs", &RequestOutput::logprobs)
      .def_readonly("prompt_logprobs", &RequestOutput::prompt_logprobs)
      .def_readonly("finished", &RequestOutput::finished)
      .def_property_readonly("finish_reason", [](const RequestOutput& o) -> py::object {
        if (o.finish_reason == FinishReason::kNone) return py::none();
        return py::str(finish_reason_name(o.finish_reason));
      })
      .def_readonly("num_prompt_tokens", &RequestOutput::num_prompt_tokens)
      .def_readonly("num_output_tokens", &RequestOutput::num_output_tokens)
      .def_readonly("num_cached_tokens", &RequestOutput::num_cached_tokens)
      .def_readonly("num_preemptions", &RequestOutput::num_preemptions)
      .def_readonly("queue_time_s", &RequestOutput::queue_time_s)
      .def_readonly("first_token_time_s", &RequestOutput::first_token_time_s)
      .def("__repr__", [](const RequestOutput& o) {
        return "RequestOutput(request_id='" + o.request_id + "', new_token_ids=" +
               std::to_string(o.new_token_ids.size()) + " tokens, finished=" +
               (o.finished ? "True" : "False") + ")";
      });

  py::class_<SchedulerStats>(m, "SchedulerStats")
      .def_readonly("num_running", &SchedulerStats::num_running)
      .def_readonly("num_waiting", &SchedulerStats::num_waiting)
      .def_readonly("kv_cache_usage", &SchedulerStats::kv_cache_usage)
      .def_readonly("num_free_blocks", &SchedulerStats::num_free_blocks)
      .def_readonly("num_total_blocks", &SchedulerStats::num_total_blocks)
      .def_readonly("num_preemptions", &SchedulerStats::num_preemptions)
      .def_readonly("num_prefix_query_tokens", &SchedulerStats::num_prefix_query_tokens)
      .def_readonly("num_prefix_hit_tokens", &SchedulerStats::num_prefix_hit_tokens)
      .def_readonly("num_spec_drafts", &SchedulerStats::num_spec_drafts,
                    "Steps that verified a speculative proposal, since start.")
      .def_readonly("num_spec_draft_tokens", &SchedulerStats::num_spec_draft_tokens)
      .def_readonly("num_spec_accepted_tokens", &SchedulerStats::num_spec_accepted_tokens)
      .def_readonly("num_spec_accepted_tokens_per_pos", &SchedulerStats::num_spec_accepted_tokens_per_pos);

  py::class_<EngineStats>(m, "EngineStats")
      .def_readonly("scheduler", &EngineStats::scheduler)
      .def_readonly("num_steps", &EngineStats::num_steps)
      .def_readonly("num_prompt_tokens", &EngineStats::num_prompt_tokens)
      .def_readonly("num_generation_tokens", &EngineStats::num_generation_tokens)
      .def_readonly("is_running", &EngineStats::is_running)
      .def_readonly("schedule_seconds", &EngineStats::schedule_seconds, "Time in Scheduler::schedule, all steps.")
      .def_readonly("execute_seconds", &EngineStats::execute_seconds,
                    "Time in the runner (inputs, forward, sampling), all steps.")
      .def_readonly("update_seconds", &EngineStats::update_seconds,
                    "Time in update_from_output and building outputs, all steps.");

  py::class_<Engine, EngineHolder>(m, "Engine", "Scheduler + runner; step by hand or run the background loop.")
      .def(py::init<EngineConfig, std::shared_ptr<ModelRunner>>(), py::arg("config"), py::arg("runner"),
           py::keep_alive<1, 3>())
      .def("add_request", &Engine::add_request, py::arg("request_id"), py::arg("prompt_token_ids"),
           py::arg("params"), py::arg("priority") = 0,
           "Queue a request; raises InvalidArgument (a ValueError) naming what is wrong with it, "
           "`param` the field.")
      .def("abort", &Engine::abort, py::arg("request_id"),
           "End a request at the next step; False (a no-op) when the id is unknown.")
      .def("step", &Engine::step, py::call_guard<py::gil_scoped_release>(),
           "Run one step by hand and return its outputs.")
      .def("start", &Engine::start, "Start the background loop thread.")
      .def("shutdown", &Engine::shutdown, py::call_guard<py::gil_scoped_release>(),
           "Stop and join the loop; unfinished requests end with 'abort'.")
      .def("get_outputs", &Engine::get_outputs, py::arg("timeout_s") = -1.0,
           py::call_guard<py::gil_scoped_release>(),
           "Wait up to timeout_s (negative: forever) for outputs of the loop and return them all.")
      .def("post_token_mask",
           [](Engine& engine, const std::string& request_id, int position, const py::bytes& mask) {
             std::string_view bytes(mask);
             if (bytes.size() % 4 != 0)
               throw InvalidArgument("a token mask is whole 32-bit words; got " + std::to_string(bytes.size()) +
                                     " bytes", "mask");
             TokenMask words(bytes.size() / 4);
             std::memcpy(words.data(), bytes.data(), bytes.size());
             return engine.post_token_mask(request_id, position, std::move(words));
           },
           py::arg("request_id"), py::arg("position"), py::arg("mask"),
           "The allowed tokens of a guided request's output position (bit t of the little-endian "
           "32-bit words allows token t); False when no unfinished guided request has the id.")
      .def("fail_guide", &Engine::fail_guide, py::arg("request_id"), py::arg("error"),
           "End a guided request with 'abort' at its next sampling; False when unknown.")
      .def("get_guide_events", &Engine::get_guide_events, py::arg("timeout_s") = -1.0,
           py::call_guard<py::gil_scoped_release>(),
           "Wait up to timeout_s for guided requests' new tokens and return them all "
           "(early and possibly empty after shutdown).")
      .def("set_output_notifier",
           [](Engine& engine, py::object callback) {
             if (callback.is_none()) {
               engine.set_output_notifier(nullptr);
               return;
             }
             auto holder = share_with_threads(std::move(callback));
             engine.set_output_notifier([holder] {
               py::gil_scoped_acquire gil;
               (*holder)();
             });
           },
           py::arg("callback"), "Call `callback()` from the loop thread whenever outputs are queued.")
      .def_property_readonly("is_running", &Engine::is_running)
      .def("has_unfinished_requests", &Engine::has_unfinished_requests)
      .def("num_unfinished_requests", &Engine::num_unfinished_requests)
      .def("stats", &Engine::stats)
      .def_property_readonly("config", &Engine::config);

  py::class_<KVCacheSpec>(m, "KVCacheSpec", "Shape and dtype of the per-layer KV pools.")
      .def(py::init([](int num_layers, int num_kv_heads, int head_dim, int block_size,
                       const std::string& dtype, const std::string& device) {
             KVCacheSpec spec;
             spec.num_layers = num_layers;
             spec.num_kv_heads = num_kv_heads;
             spec.head_dim = head_dim;
             spec.block_size = block_size;
             spec.dtype = dtype == "int8" ? torch::kChar : dtype_from_name(dtype);  // int8: rows with scales
             spec.device = torch::Device(device);
             spec.validate();
             return spec;
           }),
           py::arg("num_layers"), py::arg("num_kv_heads"), py::arg("head_dim"),
           py::arg("block_size") = 16, py::arg("dtype") = "float32", py::arg("device") = "cpu")
      .def_property_readonly("dtype", [](const KVCacheSpec& s) { return dtype_name(s.dtype); })
      .def("bytes_per_block", &KVCacheSpec::bytes_per_block);

  m.def("num_blocks_for_memory", &num_blocks_for_memory, py::arg("spec"), py::arg("bytes"),
        "KV blocks that fit in a memory budget of `bytes`.");
  m.def("available_host_memory_bytes", &available_host_memory_bytes,
        "Memory the OS reports as available (MemAvailable).");

  py::class_<KVPool>(testing, "KVPool", "Preallocated K and V pools, one pair per layer.")
      .def(py::init<const KVCacheSpec&, int>(), py::arg("spec"), py::arg("num_blocks"))
      .def_property_readonly("num_blocks", &KVPool::num_blocks)
      .def_property_readonly("num_bytes", &KVPool::num_bytes)
      .def("key", &KVPool::key, py::arg("layer"), "[num_blocks, num_kv_heads, block_size, head_dim]")
      .def("value", &KVPool::value, py::arg("layer"))
      .def(
          "row_scales",
          [](const KVPool& pool, int layer) -> py::object {
            const KVRowScales scales = pool.row_scales(layer);
            if (!scales.defined()) return py::none();
            return py::make_tuple(scales.key, scales.value);
          },
          py::arg("layer"), "An int8 pool's (key, value) row scales [num_blocks, num_kv_heads, block_size]; None otherwise.")
      .def("write", &KVPool::write, py::arg("layer"), py::arg("slot_mapping"), py::arg("key"),
           py::arg("value"), "Write [num_tokens, num_kv_heads, head_dim] rows into their slots.");

  // Parts bound in their own files, after the types they build on.
  bind_sampler(testing);
  bind_quant(testing);
  bind_model(m, testing);
  bind_bert(m);
}
