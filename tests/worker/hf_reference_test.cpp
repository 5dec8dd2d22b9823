// Real checkpoints against transformers: each tiny model of tests/data/hf/ (one per supported
// architecture, made by tools/make_hf_fixtures.py with save_pretrained; the *-hd64 ones at the
// CUDA kernels' head size with bf16 safetensors, their reference computed in fp32 from those
// bf16 weights; tests/gpu/cuda_model_test.cpp runs them on the CUDA backend) is loaded from its
// directory as the service loads it (config.json, generation_config.json, model.safetensors)
// and run on the CPU backend. Checked: the config as read (architecture, biases, rope scaling,
// tied embeddings, eos list, sampling defaults), the last-position logits of each reference
// prompt (TP 1, and TP 2 with ranks in threads), and 32 greedy tokens after each prompt
// (prefill, then one decode step at a time over the paged cache).
//
// Tolerance: |logit - reference| <= 1e-4 + 1e-4 * |reference| (fp32 both sides, different
// summation orders and RoPE angle precision); greedy tokens exactly (the fixture script keeps
// the best and second-best logit at least 2e-3 apart along every greedy path: its
// min_margin).
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/model_config.h"
#include "hf_fixtures.h"
#include "kernels/cpu_backend.h"
#include "test_communicators.h"
#include "worker/model.h"
#include "worker/single_rank_communicator.h"

namespace podserve {
namespace {

constexpr std::int32_t kPageSize = 16;
constexpr std::int32_t kNumPages = 16;
constexpr int kGreedySteps = 32;

using testing_support::hf_fixture_dir;
using testing_support::read_hf_reference;

struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<Backend> backend;
  SingleRankCommunicator comm;
  std::unique_ptr<LlamaModel> model;
};

std::unique_ptr<LoadedModel> load(const std::string& name) {
  auto loaded = std::make_unique<LoadedModel>();
  auto config = model_config_from_hf_json(hf_fixture_dir(name) + "/config.json");
  EXPECT_TRUE(config.ok()) << config.status().to_string();
  if (!config.ok()) return nullptr;
  loaded->config = *config;
  auto weights = open_weight_source(hf_fixture_dir(name), 0);
  EXPECT_TRUE(weights.ok()) << weights.status().to_string();
  if (!weights.ok()) return nullptr;
  loaded->backend = make_cpu_backend();
  ModelOptions options;
  options.num_pages = kNumPages;
  options.page_size = kPageSize;
  auto model =
      LlamaModel::create(loaded->config, **weights, *loaded->backend, loaded->comm, options);
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  if (!model.ok()) return nullptr;
  loaded->model = std::move(model).value();
  return loaded;
}

// Pages descending: out of order.
SequenceWork work(const std::vector<TokenId>& tokens, int cached) {
  return testing_support::hf_sequence_work(tokens, cached, kPageSize, kNumPages, 1);
}

class HfReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfReferenceTest, LogitsMatchTransformers) {
  const auto loaded = load(GetParam());
  ASSERT_NE(loaded, nullptr);
  const nlohmann::json reference = read_hf_reference(GetParam());
  const auto& prompts = reference.at("prompts");
  ASSERT_FALSE(prompts.empty());
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    const auto tokens = prompts[p].get<std::vector<TokenId>>();
    BatchPlan plan;
    plan.sequences.push_back(work(tokens, 0));
    auto logits = loaded->model->forward_logits(plan);
    ASSERT_TRUE(logits.ok()) << logits.status().to_string();
    const auto expected = reference.at("logits")[p].get<std::vector<double>>();
    ASSERT_EQ(logits->size(), expected.size());
    double norm = 0, worst = 0;
    for (std::size_t i = 0; i < expected.size(); ++i) {
      ASSERT_NEAR((*logits)[i], expected[i], 1e-4 + 1e-4 * std::fabs(expected[i]))
          << GetParam() << " prompt " << p << " logit " << i;
      worst = std::max(worst, std::fabs((*logits)[i] - expected[i]));
      norm += expected[i] * expected[i];
    }
    EXPECT_GT(norm, 1.0) << "reference logits are trivially small";
    RecordProperty("max_abs_error_prompt" + std::to_string(p), std::to_string(worst));
  }
}

TEST_P(HfReferenceTest, GreedyTokensMatchTransformers) {
  const auto loaded = load(GetParam());
  ASSERT_NE(loaded, nullptr);
  const nlohmann::json reference = read_hf_reference(GetParam());
  EXPECT_GT(reference.at("min_margin").get<double>(), 1e-3);
  const SamplingRow greedy{};
  for (std::size_t p = 0; p < reference.at("prompts").size(); ++p) {
    std::vector<TokenId> tokens = reference.at("prompts")[p].get<std::vector<TokenId>>();
    std::vector<TokenId> generated;
    int cached = 0;
    for (int step = 0; step < kGreedySteps; ++step) {
      BatchPlan plan;
      plan.iteration = step;
      plan.sequences.push_back(work(tokens, cached));
      auto next = loaded->model->forward(plan, std::span<const SamplingRow>(&greedy, 1));
      ASSERT_TRUE(next.ok()) << next.status().to_string();
      ASSERT_EQ(next->size(), 1u);
      cached = static_cast<int>(tokens.size());
      tokens.push_back(next->front());
      generated.push_back(next->front());
    }
    EXPECT_EQ(generated, reference.at("greedy")[p].get<std::vector<TokenId>>())
        << GetParam() << " prompt " << p;
  }
}

// TP=2 (ranks in threads): q/k/v weights and biases, o/down and the vocab-parallel LM head
// sharded, the same reference logits on both ranks.
TEST_P(HfReferenceTest, TensorParallelLogitsMatchTransformers) {
  auto config = model_config_from_hf_json(hf_fixture_dir(GetParam()) + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  const nlohmann::json reference = read_hf_reference(GetParam());
  const auto tokens = reference.at("prompts")[0].get<std::vector<TokenId>>();
  const auto expected = reference.at("logits")[0].get<std::vector<double>>();
  testing_support::ThreadGroup group(2);
  std::vector<std::vector<float>> logits(2);
  std::vector<Status> statuses(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      auto backend = make_cpu_backend();
      testing_support::ThreadCommunicator comm(group, rank);
      auto weights = open_weight_source(hf_fixture_dir(GetParam()), 0);
      if (!weights.ok()) {
        statuses[rank] = weights.status();
        return;
      }
      ModelOptions options;
      options.num_pages = kNumPages;
      options.page_size = kPageSize;
      auto model = LlamaModel::create(*config, **weights, *backend, comm, options);
      if (!model.ok()) {
        statuses[rank] = model.status();
        return;
      }
      BatchPlan plan;
      plan.sequences.push_back(work(tokens, 0));
      auto out = (*model)->forward_logits(plan);
      statuses[rank] = out.status();
      if (out.ok()) logits[rank] = *out;
    });
  }
  for (auto& t : threads) t.join();
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(statuses[rank].ok()) << statuses[rank].to_string();
    ASSERT_EQ(logits[rank].size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      ASSERT_NEAR(logits[rank][i], expected[i], 1e-4 + 1e-4 * std::fabs(expected[i]))
          << GetParam() << " rank " << rank << " logit " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, HfReferenceTest,
                         ::testing::Values("llama", "mistral", "qwen2", "llama-hd64", "qwen2-hd64"),
                         testing_support::hf_test_name);

// What each fixture's config.json / generation_config.json say, as read.
TEST(HfModelConfig, FixturesReadAsSaved) {
  auto llama = model_config_from_hf_json(hf_fixture_dir("llama") + "/config.json");
  ASSERT_TRUE(llama.ok()) << llama.status().to_string();
  EXPECT_EQ(llama->architecture, "LlamaForCausalLM");
  EXPECT_FALSE(llama->attention_bias);
  EXPECT_FALSE(llama->tie_word_embeddings);
  EXPECT_EQ(llama->rope_scaling.kind, RopeScalingKind::kLlama3);  // 4.x layout: rope_scaling
  EXPECT_FLOAT_EQ(llama->rope_scaling.factor, 8.0f);
  EXPECT_EQ(llama->rope_scaling.original_max_position_embeddings, 64);
  EXPECT_FLOAT_EQ(llama->rope_theta, 500000.0f);
  EXPECT_EQ(llama->eos_token_ids, (std::vector<TokenId>{1, 4}));  // generation_config's list
  EXPECT_EQ(llama->eos_token_id, 1);
  EXPECT_TRUE(llama->is_eos(4));
  EXPECT_FALSE(llama->is_eos(0));
  ASSERT_TRUE(llama->generation.temperature.has_value());
  EXPECT_FLOAT_EQ(*llama->generation.temperature, 0.6f);
  EXPECT_FLOAT_EQ(*llama->generation.top_p, 0.9f);
  EXPECT_EQ(llama->max_position_embeddings, 256);

  auto mistral = model_config_from_hf_json(hf_fixture_dir("mistral") + "/config.json");
  ASSERT_TRUE(mistral.ok()) << mistral.status().to_string();
  EXPECT_EQ(mistral->architecture, "MistralForCausalLM");
  EXPECT_TRUE(mistral->tie_word_embeddings);
  EXPECT_EQ(mistral->rope_scaling.kind, RopeScalingKind::kLinear);  // 5.x: rope_parameters
  EXPECT_FLOAT_EQ(mistral->rope_scaling.factor, 2.0f);
  EXPECT_FLOAT_EQ(mistral->rope_theta, 10000.0f);

  auto qwen2 = model_config_from_hf_json(hf_fixture_dir("qwen2") + "/config.json");
  ASSERT_TRUE(qwen2.ok()) << qwen2.status().to_string();
  EXPECT_EQ(qwen2->architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(qwen2->attention_bias);
  EXPECT_EQ(qwen2->rope_scaling.kind, RopeScalingKind::kNone);
  EXPECT_FLOAT_EQ(qwen2->rope_theta, 1000000.0f);
  EXPECT_FLOAT_EQ(qwen2->rms_norm_eps, 1e-6f);
  EXPECT_EQ(qwen2->eos_token_ids, (std::vector<TokenId>{6, 1}));
}

}  // namespace
}  // namespace podserve
