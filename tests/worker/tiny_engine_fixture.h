// Test fixture shared by the engine tests: engines over the tiny preset on the CPU backend
// (TP=1, page size 4, model seed 5), and deterministic greedy requests.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "core/model_config.h"
#include "kernels/cpu_backend.h"
#include "test_communicators.h"
#include "worker/engine.h"
#include "worker/weights.h"

namespace podserve::testing_support {

class TinyEngineTest : public ::testing::Test {
 protected:
  // RoleEngine: ColocatedEngine, PrefillEngine or DecodeEngine.
  template <typename RoleEngine>
  std::unique_ptr<RoleEngine> make_engine(std::int32_t num_pages, std::int32_t token_budget) {
    auto config = model_preset("tiny");
    EXPECT_TRUE(config.ok());
    RandomWeightSource weights(5);
    ModelOptions options;
    options.num_pages = num_pages;
    options.page_size = 4;
    auto model = LlamaModel::create(*config, weights, *backend_, comm_, options);
    EXPECT_TRUE(model.ok()) << model.status().to_string();
    EngineOptions engine_options;
    engine_options.token_budget = token_budget;
    engine_options.max_running = 8;
    engine_options.max_model_len = 64;
    auto engine = RoleEngine::create(std::move(model).value(), engine_options);
    EXPECT_TRUE(engine.ok()) << engine.status().to_string();
    return std::move(engine).value();
  }

  // Greedy, EOS ignored; the prompt is a fixed function of (id, position).
  static GenerationRequest request(RequestId id, std::int32_t prompt_len, std::int32_t max_tokens) {
    GenerationRequest r;
    r.id = id;
    for (std::int32_t i = 0; i < prompt_len; ++i)
      r.prompt.push_back(static_cast<TokenId>((id * 37 + static_cast<RequestId>(i) * 11) % 256));
    r.sampling.max_tokens = max_tokens;
    r.sampling.temperature = 0.0f;
    r.sampling.ignore_eos = true;
    return r;
  }

  std::unique_ptr<Backend> backend_ = make_cpu_backend();
  SingleRankCommunicator comm_;
};

}  // namespace podserve::testing_support
