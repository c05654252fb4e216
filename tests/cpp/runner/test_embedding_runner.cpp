// EmbeddingRunner and the packed BERT batch: the padded layout the
// attention scatters into, pooling (mean and CLS) of a packed batch equal to
// each input run alone, the output in the inputs' order whatever their
// lengths, and input checks.
#include <torch/torch.h>
#undef CHECK  // torch's CHECK would shadow Catch2's
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "core/config.h"
#include "models/bert.h"
#include "runner/embedding_runner.h"

using namespace modelbench;

namespace {

BertSpec tiny_spec() {
  BertSpec spec;
  spec.vocab_size = 50;
  spec.hidden_size = 16;
  spec.num_layers = 2;
  spec.num_heads = 4;
  spec.intermediate_size = 24;
  spec.max_position_embeddings = 32;
  return spec;
}

WeightMap random_weights(const BertSpec& s, const std::string& root = "") {
  torch::manual_seed(0);
  const int64_t h = s.hidden_size;
  WeightMap w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    w[root + name] = torch::randn(shape) * 0.2;
  };
  add("embeddings.word_embeddings.weight", {s.vocab_size, h});
  add("embeddings.position_embeddings.weight", {s.max_position_embeddings, h});
  add("embeddings.token_type_embeddings.weight", {s.type_vocab_size, h});
  add("embeddings.LayerNorm.weight", {h});
  add("embeddings.LayerNorm.bias", {h});
  for (int i = 0; i < s.num_layers; ++i) {
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    for (const char* part : {"attention.self.query", "attention.self.key", "attention.self.value",
                             "attention.output.dense"}) {
      add(p + part + ".weight", {h, h});
      add(p + part + ".bias", {h});
    }
    add(p + "attention.output.LayerNorm.weight", {h});
    add(p + "attention.output.LayerNorm.bias", {h});
    add(p + "intermediate.dense.weight", {s.intermediate_size, h});
    add(p + "intermediate.dense.bias", {s.intermediate_size});
    add(p + "output.dense.weight", {h, s.intermediate_size});
    add(p + "output.dense.bias", {h});
    add(p + "output.LayerNorm.weight", {h});
    add(p + "output.LayerNorm.bias", {h});
  }
  return w;
}

const std::vector<std::vector<int64_t>> kPrompts = {
    {1, 5, 9, 2}, {1, 7, 2}, {1, 3, 4, 8, 10, 11, 12, 2}, {1, 2}, {1, 40, 41, 42, 2}};

}  // namespace

TEST_CASE("packed sequences are grouped for attention, padded only within a group", "[embedding]") {
  const PackedBatch batch = pack_sequences(kPrompts, 1, 4, torch::kCPU);  // lengths 3, 8, 2
  REQUIRE(batch.seq_lens == std::vector<int64_t>{3, 8, 2});
  REQUIRE(batch.max_len == 8);
  REQUIRE(batch.input_ids.size(0) == 13);
  REQUIRE(batch.positions.slice(0, 3, 11).equal(torch::arange(8, torch::kLong)));
  // Short inputs waste little padded: one group, padded to 8.
  REQUIRE(batch.groups.size() == 1);
  const AttentionGroup& g = batch.groups[0];
  REQUIRE((g.first_token == 0 && g.num_tokens == 13 && g.num_seqs == 3 && g.max_len == 8));
  REQUIRE(g.padded_index[3].item<int64_t>() == 8);    // sequence 1, position 0
  REQUIRE(g.padded_index[12].item<int64_t>() == 17);  // sequence 2, position 1
  REQUIRE(g.key_mask.sizes() == torch::IntArrayRef({3, 1, 1, 8}));
  REQUIRE(g.key_mask.sum().item<int64_t>() == 13);
  REQUIRE_FALSE(g.key_mask[2][0][0][2].item<bool>());

  // Lengths far apart (sorted, as the runner packs them): separate groups;
  // inputs of one length are not padded.
  const std::vector<std::vector<int64_t>> prompts = {std::vector<int64_t>(10, 1), std::vector<int64_t>(10, 1),
                                                     std::vector<int64_t>(12, 1), std::vector<int64_t>(100, 1),
                                                     std::vector<int64_t>(200, 1)};
  const PackedBatch spread = pack_sequences(prompts, 0, prompts.size(), torch::kCPU);
  REQUIRE(spread.groups.size() == 3);
  REQUIRE((spread.groups[0].num_seqs == 3 && spread.groups[0].max_len == 12 && spread.groups[0].num_tokens == 32));
  REQUIRE((spread.groups[1].first_token == 32 && spread.groups[1].num_seqs == 1));
  REQUIRE_FALSE(spread.groups[1].padded_index.defined());
  REQUIRE((spread.groups[2].first_token == 132 && spread.groups[2].max_len == 200));
}

TEST_CASE("grouped attention matches each input alone, in and across groups", "[embedding]") {
  // max_batch_tokens 200: one forward; lengths 3..9 and 30..32 make separate groups
  const EmbeddingRunner runner(tiny_spec(), random_weights(tiny_spec(), "bert."), "float32", "cpu", "mean", false,
                               32, 200);
  std::vector<std::vector<int64_t>> prompts;
  for (const int64_t len : {3, 3, 5, 9, 30, 31, 32, 32}) {
    std::vector<int64_t> p(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i) p[static_cast<size_t>(i)] = 1 + (i * 7 + len) % 45;
    prompts.push_back(p);
  }
  const torch::Tensor all = runner.embed(prompts);
  for (size_t i = 0; i < prompts.size(); ++i)
    REQUIRE(torch::allclose(all[static_cast<int64_t>(i)], runner.embed({prompts[i]})[0], 1e-4, 1e-5));
}

TEST_CASE("a packed batch pools as each input alone, in the inputs' order", "[embedding]") {
  for (const std::string pooling : {"mean", "cls"}) {
    for (const bool normalize : {true, false}) {
      const EmbeddingRunner runner(tiny_spec(), random_weights(tiny_spec(), "bert."), "float32", "cpu", pooling,
                                   normalize, 16);
      const torch::Tensor all = runner.embed(kPrompts);
      REQUIRE(all.sizes() == torch::IntArrayRef({5, 16}));
      for (size_t i = 0; i < kPrompts.size(); ++i) {
        const torch::Tensor alone = runner.embed({kPrompts[i]});
        REQUIRE(torch::allclose(all[static_cast<int64_t>(i)], alone[0], 1e-4, 1e-5));
      }
      if (normalize) REQUIRE(torch::allclose(all.norm(2, 1), torch::ones({5}), 1e-5, 1e-5));
    }
  }
}

TEST_CASE("forwards capped by max_batch_tokens give the same vectors", "[embedding]") {
  const EmbeddingRunner one_forward(tiny_spec(), random_weights(tiny_spec()), "float32", "cpu", "mean", true, 16);
  const EmbeddingRunner small_forwards(tiny_spec(), random_weights(tiny_spec()), "float32", "cpu", "mean", true, 16,
                                       5);
  REQUIRE(torch::allclose(one_forward.embed(kPrompts), small_forwards.embed(kPrompts), 1e-4, 1e-5));
}

TEST_CASE("bad inputs and settings are InvalidArgument naming them", "[embedding]") {
  const EmbeddingRunner runner(tiny_spec(), random_weights(tiny_spec()), "float32", "cpu", "mean", true, 6);
  REQUIRE_THROWS_WITH(runner.embed({}), Catch::Contains("at least one prompt"));
  REQUIRE_THROWS_WITH(runner.embed({{1, 2}, {}}), Catch::Contains("prompt 1 is empty"));
  REQUIRE_THROWS_WITH(runner.embed({{1, 50}}), Catch::Contains("token id 50, outside the vocabulary [0, 50)"));
  REQUIRE_THROWS_WITH(runner.embed({{1, 2, 3, 4, 5, 6, 7}}), Catch::Contains("7 tokens; the model takes at most 6"));
  REQUIRE_THROWS_AS(EmbeddingRunner(tiny_spec(), random_weights(tiny_spec()), "float32", "cpu", "max", true, 6),
                    InvalidArgument);
  REQUIRE_THROWS_WITH(EmbeddingRunner(tiny_spec(), random_weights(tiny_spec()), "float32", "cpu", "mean", true, 33),
                      Catch::Contains("max_position_embeddings (32)"));
  WeightMap missing = random_weights(tiny_spec());
  missing.erase("encoder.layer.1.intermediate.dense.weight");
  REQUIRE_THROWS_WITH(EmbeddingRunner(tiny_spec(), missing, "float32", "cpu", "mean", true, 6),
                      Catch::Contains("encoder.layer.1.intermediate.dense.weight"));
  BertSpec odd = tiny_spec();
  odd.num_heads = 5;
  REQUIRE_THROWS_WITH(odd.validate(), Catch::Contains("multiple of num_heads"));
}
