#include <catch2/catch.hpp>

#include "core/config.h"
#include "core/sequence.h"

using namespace modelbench;

TEST_CASE("engine config rejects a cache smaller than one max-length sequence", "[config]") {
  EngineConfig config;
  config.cache.num_blocks = 4;
  config.cache.block_size = 16;
  config.scheduler.max_model_len = 65;
  REQUIRE_THROWS_WITH(config.validate(), Catch::Contains("fewer than max_model_len=65"));
  config.scheduler.max_model_len = 64;
  REQUIRE_NOTHROW(config.validate());
}

TEST_CASE("config values out of range name the field", "[config]") {
  CacheConfig cache;
  cache.num_blocks = 0;
  REQUIRE_THROWS_WITH(cache.validate(), Catch::Contains("num_blocks must be >= 1, got 0"));
  SchedulerConfig sched;
  sched.max_num_seqs = 0;
  REQUIRE_THROWS_WITH(sched.validate(), Catch::Contains("max_num_seqs"));
  sched.max_num_seqs = 4;
  sched.enable_chunked_prefill = false;
  sched.max_num_batched_tokens = 16;
  sched.max_model_len = 32;
  REQUIRE_THROWS_WITH(sched.validate(), Catch::Contains("without chunked prefill"));
}

namespace {
// The `param` of the InvalidArgument that `call` throws.
template <typename Call>
std::string param_of(Call call) {
  try {
    call();
  } catch (const InvalidArgument& e) {
    return e.param();
  }
  return "(no InvalidArgument)";
}
}  // namespace

TEST_CASE("InvalidArgument names the offending field in param", "[config]") {
  SamplingParams p;
  p.max_tokens = 0;
  REQUIRE(param_of([&] { p.validate(); }) == "max_tokens");
  p = SamplingParams();
  p.temperature = -1.0f;
  REQUIRE(param_of([&] { p.validate(); }) == "temperature");
  p = SamplingParams();
  p.min_tokens = 20;
  p.max_tokens = 10;
  REQUIRE(param_of([&] { p.validate(); }) == "min_tokens");
  CacheConfig cache;
  cache.block_size = 0;
  REQUIRE(param_of([&] { cache.validate(); }) == "block_size");
  SchedulerConfig sched;
  sched.max_num_seqs = 0;
  REQUIRE(param_of([&] { sched.validate(); }) == "max_num_seqs");
  // The message is unchanged: it still names the field and the value.
  REQUIRE_THROWS_WITH(sched.validate(), "max_num_seqs must be >= 1, got 0");
}

TEST_CASE("sampling params are validated field by field", "[config]") {
  SamplingParams p;
  REQUIRE_NOTHROW(p.validate());
  p.max_tokens = 0;
  REQUIRE_THROWS_WITH(p.validate(), "max_tokens must be >= 1, got 0");
  p = SamplingParams();
  p.top_p = 0.0f;
  REQUIRE_THROWS_WITH(p.validate(), Catch::Contains("top_p must be in (0, 1]"));
  p = SamplingParams();
  p.temperature = -0.5f;
  REQUIRE_THROWS_WITH(p.validate(), Catch::Contains("temperature"));
  p = SamplingParams();
  p.min_p = 1.5f;
  REQUIRE_THROWS_WITH(p.validate(), Catch::Contains("min_p"));
  p = SamplingParams();
  p.stop_token_ids = {3, -1};
  REQUIRE_THROWS_WITH(p.validate(), Catch::Contains("stop_token_ids"));
  p = SamplingParams();
  p.min_tokens = 20;
  p.max_tokens = 10;
  REQUIRE_THROWS_WITH(p.validate(), Catch::Contains("min_tokens"));
}
