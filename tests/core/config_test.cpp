#include "core/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace podserve {
namespace {

TEST(Config, EmptyDocumentGivesDefaults) {
  const auto c = parse_config("");
  EXPECT_EQ(c.model.preset, "tiny");
  EXPECT_EQ(c.backend, BackendChoice::kAuto);
  ASSERT_EQ(c.instances.size(), 1u);
  EXPECT_EQ(c.instances[0].role, InstanceRole::kColocated);
  EXPECT_EQ(c.scheduler.mode, SchedulerMode::kColocated);
  EXPECT_EQ(c.kv_cache.page_size, 16);
  EXPECT_EQ(c.router.listen, "127.0.0.1:8000");
  EXPECT_EQ(c.world_size(), 2);
}

TEST(Config, ReadsEverySection) {
  const auto c = parse_config(R"(
model: {preset: llama3-8b, weights: random, seed: 5, dtype: bf16, max_model_len: 2048}
backend: cuda
instances:
  - {role: prefill, tp: 2, count: 2}
  - {role: decode, tp: 4, count: 1}
scheduler: {mode: disaggregated, attention: pod, token_budget: 1024, max_running: 256}
kv_cache: {page_size: 32, memory_fraction: 0.8, num_pages: 100, cpu_memory_mb: 10}
kv_transfer: {backend: nccl, layerwise: true, timeout_ms: 100, retries: 2}
router: {listen: 0.0.0.0:9000, policy: round_robin, max_queue: 10, http_threads: 4}
metrics: {port_base: 9500, bind: 0.0.0.0, sd_file: /tmp/x.json}
logging: {level: debug}
)");
  EXPECT_EQ(c.model.preset, "llama3-8b");
  EXPECT_EQ(c.model.seed, 5u);
  EXPECT_EQ(c.model.max_model_len, 2048);
  EXPECT_EQ(c.backend, BackendChoice::kCuda);
  EXPECT_EQ(c.world_size(), 1 + 2 * 2 + 4);
  EXPECT_EQ(c.scheduler.attention, AttentionImpl::kPod);
  EXPECT_EQ(c.kv_cache.page_size, 32);
  EXPECT_TRUE(c.kv_transfer.layerwise);
  EXPECT_EQ(c.router.policy, RouterPolicy::kRoundRobin);
  EXPECT_EQ(c.metrics.port_base, 9500);
  EXPECT_EQ(c.logging.level, "debug");
}

TEST(Config, ModelPathSetsConfigAndWeights) {
  const auto c = parse_config("model: {path: /models/llama}");
  EXPECT_EQ(c.model.config, "/models/llama/config.json");
  EXPECT_EQ(c.model.weights, "/models/llama");
  const auto again = parse_config(to_yaml(c));  // the effective config names the path only
  EXPECT_EQ(again.model.config, c.model.config);
  EXPECT_EQ(again.model.weights, c.model.weights);
  EXPECT_THROW(parse_config("model: {path: /m, config: /m/config.json}"), ConfigError);
  EXPECT_THROW(parse_config("model: {path: /m, weights: random}"), ConfigError);
}

TEST(Config, EffectiveConfigRoundTrips) {
  const auto original = parse_config(R"(
instances: [{role: colocated, tp: 2, count: 3}]
scheduler: {token_budget: 300}
router: {policy: round_robin}
)");
  const auto again = parse_config(to_yaml(original));
  EXPECT_EQ(to_yaml(again), to_yaml(original));
  EXPECT_EQ(again.world_size(), 7);
  EXPECT_EQ(again.scheduler.token_budget, 300);
}

struct BadConfig {
  const char* name;
  const char* yaml;
  const char* key;  // the error must name this key
};

class ConfigErrors : public ::testing::TestWithParam<BadConfig> {};

TEST_P(ConfigErrors, NameTheKey) {
  try {
    parse_config(GetParam().yaml);
    FAIL() << "accepted: " << GetParam().yaml;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(GetParam().key), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Config, ConfigErrors,
    ::testing::Values(
        BadConfig{"UnknownTopLevelKey", "modle: {}", "modle"},
        BadConfig{"UnknownNestedKey", "scheduler: {token_budgt: 3}", "scheduler.token_budgt"},
        BadConfig{"WrongType", "scheduler: {token_budget: lots}", "scheduler.token_budget"},
        BadConfig{"NonPositiveBudget", "scheduler: {token_budget: 0}", "scheduler.token_budget"},
        BadConfig{"BadEnum", "backend: tpu", "backend"},
        BadConfig{"BadRole", "instances: [{role: both}]", "instances[0].role"},
        BadConfig{"BadTp", "instances: [{tp: 0}]", "instances[0].tp"},
        BadConfig{"ColocatedWithPrefillRole", "instances: [{role: prefill}]", "scheduler.mode"},
        BadConfig{"DisaggregatedWithoutDecode",
                  "scheduler: {mode: disaggregated}\ninstances: [{role: prefill}]",
                  "scheduler.mode"},
        BadConfig{"BadListen", "router: {listen: nowhere}", "router.listen"},
        BadConfig{"BadFraction", "kv_cache: {memory_fraction: 1.5}", "kv_cache.memory_fraction"},
        BadConfig{"BadTransferBackend", "kv_transfer: {backend: carrier-pigeon}",
                  "kv_transfer.backend"},
        BadConfig{"SyntaxError", "model: {preset: [", "YAML"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
// Every shipped config loads, and each colocated/disaggregated pair differs only in the keys the
// A/B switch needs: the instances' roles and scheduler.mode.
TEST(Config, ShippedConfigsLoadAndTheirAbPairsDifferOnlyInTheSwitch) {
  const std::filesystem::path dir = PODSERVE_SOURCE_DIR "/deploy/configs";
  int loaded = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    EXPECT_NO_THROW(load_config(entry.path().string())) << entry.path();
    ++loaded;
  }
  EXPECT_GE(loaded, 4);
  for (const std::string prefix : {"tiny", "llama3-8b"}) {
    SCOPED_TRACE(prefix);
    ServiceConfig colocated = load_config((dir / (prefix + "-colocated.yaml")).string());
    const ServiceConfig disaggregated =
        load_config((dir / (prefix + "-disaggregated.yaml")).string());
    EXPECT_EQ(colocated.scheduler.mode, SchedulerMode::kColocated);
    EXPECT_EQ(disaggregated.scheduler.mode, SchedulerMode::kDisaggregated);
    colocated.scheduler.mode = disaggregated.scheduler.mode;
    colocated.instances = disaggregated.instances;
    EXPECT_EQ(to_yaml(colocated), to_yaml(disaggregated));
  }
}

}  // namespace podserve
