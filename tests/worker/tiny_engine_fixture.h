// Test fixture shared by the engine tests: engines over the tiny preset on the CPU backend
// (TP=1, page size 4, model seed 5), deterministic greedy requests, and what the disaggregated
// tests share: the outputs a run served, a colocated run to compare with, and a KV page copy
// between two engines.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "core/model_config.h"
#include "kernels/cpu_backend.h"
#include "test_communicators.h"
#include "worker/engine.h"
#include "worker/weights.h"

namespace podserve::testing_support {

// Tokens and finish reasons of a run, per request.
struct Served {
  std::map<RequestId, std::vector<TokenId>> tokens;
  std::map<RequestId, FinishReason> reasons;
};

// Adds outputs; one request's arrive in index order from `first_index` on (0 for a whole run,
// 1 for a decode instance alone) and finish once.
inline void record(Served& served, std::span<const TokenOutput> outputs,
                   std::int32_t first_index = 0) {
  for (const TokenOutput& out : outputs) {
    auto& tokens = served.tokens[out.id];
    if (out.token != TokenOutput::kNoToken) {
      EXPECT_EQ(out.index, first_index + static_cast<std::int32_t>(tokens.size()))
          << "request " << out.id;
      tokens.push_back(out.token);
    }
    if (out.finished) {
      EXPECT_FALSE(served.reasons.contains(out.id)) << "request " << out.id << " finished twice";
      served.reasons[out.id] = out.reason;
    }
  }
}

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

  // `requests` through a colocated engine to the end: the outputs disaggregation must equal.
  static Served serve_colocated(ColocatedEngine& engine,
                                const std::vector<GenerationRequest>& requests) {
    Served served;
    for (const auto& r : requests) EXPECT_TRUE(engine.submit(r).ok());
    for (int steps = 0; engine.has_work() && steps < 2000; ++steps) {
      auto result = engine.step(nullptr);
      EXPECT_TRUE(result.ok()) << result.status().to_string();
      if (!result.ok()) break;
      record(served, result->outputs);
    }
    return served;
  }

  // Layer `layer`'s K/V of P's pages -> D's pages (CPU backend: device memory is host memory).
  static void copy_layer(Engine& prefill, std::span<const std::int32_t> prefill_pages,
                         Engine& decode, std::span<const std::int32_t> decode_pages,
                         std::int32_t layer) {
    ASSERT_EQ(prefill_pages.size(), decode_pages.size());
    const KvCacheView source = prefill.model().kv_cache(layer);
    const KvCacheView target = decode.model().kv_cache(layer);
    const std::size_t page_bytes = source.page_elements() * dtype_size(source.dtype);
    ASSERT_EQ(page_bytes, target.page_elements() * dtype_size(target.dtype));
    for (std::size_t i = 0; i < prefill_pages.size(); ++i) {
      std::memcpy(static_cast<std::uint8_t*>(target.data) +
                      static_cast<std::size_t>(decode_pages[i]) * page_bytes,
                  static_cast<const std::uint8_t*>(source.data) +
                      static_cast<std::size_t>(prefill_pages[i]) * page_bytes,
                  page_bytes);
    }
  }

  std::unique_ptr<Backend> backend_ = make_cpu_backend();
  SingleRankCommunicator comm_;
};

}  // namespace podserve::testing_support
