// End-to-end disaggregation on the CPU backend: prefill and decode pools under mpirun that ship
// the KV cache over real UCX (shared memory and TCP), real HTTP. Greedy outputs must equal
// colocated mode's for the same prompts and seed; faults (dropped and stalled transfers) and
// client cancellations must never leak a page on any instance.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "tests/integration/service_process.h"

namespace podserve::testing {
namespace {

using nlohmann::json;

constexpr char kModel[] = "model: {preset: tiny, weights: random, seed: 7}\nbackend: cpu\n";
// One KV head's row of one token in the tiny model on the CPU backend: head_dim 32, fp32.
constexpr double kHeadRowBytes = 32 * 4;
constexpr char kColocated[] = R"(instances: [{role: colocated, tp: 1, count: 1}]
scheduler: {mode: colocated, token_budget: 64, max_running: 32}
kv_cache: {page_size: 16, cpu_memory_mb: 16}
)";

std::vector<std::vector<int>> probe_prompts() {
  std::mt19937 rng(99);
  std::vector<std::vector<int>> prompts;
  for (int length : {1, 15, 16, 17, 40, 100, 130}) {
    std::vector<int> p(length);
    for (auto& t : p) t = static_cast<int>(rng() % 256);
    prompts.push_back(std::move(p));
  }
  return prompts;
}

httplib::Result complete(int port, const json& body) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120);
  return c.Post("/v1/completions", body.dump(), "application/json");
}

// Greedy token ids of every probe prompt, sent concurrently.
std::vector<std::vector<int>> greedy_outputs(const ServiceUnderTest& service) {
  const auto prompts = probe_prompts();
  std::vector<std::vector<int>> outputs(prompts.size());
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    clients.emplace_back([&, i] {
      auto res = complete(service.http_port(), {{"prompt", prompts[i]},
                                                {"max_tokens", 12},
                                                {"temperature", 0},
                                                {"ignore_eos", true},
                                                {"stream", i % 2 == 0}});
      if (!res || res->status != 200) {
        ADD_FAILURE() << "probe " << i << ": "
                      << (res ? res->body : httplib::to_string(res.error()));
        return;
      }
      if (i % 2 == 1) {
        outputs[i] =
            json::parse(res->body).at("choices").at(0).at("token_ids").get<std::vector<int>>();
        return;
      }
      std::istringstream lines(res->body);
      std::string line;
      while (std::getline(lines, line)) {
        if (line.rfind("data: {", 0) != 0) continue;
        const auto chunk = json::parse(line.substr(6));
        for (const auto& id : chunk["choices"][0]["token_ids"]) outputs[i].push_back(id.get<int>());
      }
    });
  }
  for (auto& t : clients) t.join();
  return outputs;
}

class Disaggregation : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServiceUnderTest colocated("reference", std::string(kModel) + kColocated);
    ASSERT_TRUE(colocated.start()) << colocated.log();
    reference_ = greedy_outputs(colocated);
    EXPECT_EQ(colocated.stop(), 0) << colocated.log();
    for (std::size_t i = 0; i < reference_.size(); ++i)
      ASSERT_EQ(reference_[i].size(), 12u) << "probe " << i;
  }
  static std::vector<std::vector<int>> reference_;
};
std::vector<std::vector<int>> Disaggregation::reference_;

struct Deployment {
  const char* name;
  const char* instances;
  int world_size;
  const char* env;
  const char* transfer;
};

class DisaggregatedDeployments : public Disaggregation,
                                 public ::testing::WithParamInterface<Deployment> {};

TEST_P(DisaggregatedDeployments, GreedyOutputsEqualColocatedAndEveryPageComesBack) {
  const auto& d = GetParam();
  const std::string yaml = fmt::format(
      "{}instances: {}\nscheduler: {{mode: disaggregated, token_budget: 64, max_running: 32}}\n"
      "kv_cache: {{page_size: 16, cpu_memory_mb: 16}}\nkv_transfer: {}\n",
      kModel, d.instances, d.transfer);
  ServiceUnderTest service(d.name, yaml, d.env);
  ASSERT_TRUE(service.start()) << service.log();
  const auto outputs = greedy_outputs(service);
  for (std::size_t i = 0; i < outputs.size(); ++i)
    EXPECT_EQ(outputs[i], reference_[i]) << "prompt " << i;
  double shipped = 0;
  double runs = 0;
  for (int rank = 1; rank < d.world_size; ++rank) {
    shipped += scrape_sum(service.metrics_port_base() + rank, "podserve_kv_transfer_bytes_total");
    runs += scrape_sum(service.metrics_port_base() + rank, "podserve_kv_transfer_runs_total");
  }
  EXPECT_GT(shipped, 0.0) << "no KV bytes shipped";
  // A run is at least one KV head's row of one token (the TP-splitting deployments' unit).
  EXPECT_GT(runs, 0.0);
  EXPECT_LE(runs * kHeadRowBytes, shipped);
  EXPECT_TRUE(wait_all_pages_free(service, d.world_size, 30));
  EXPECT_EQ(service.stop(), 0) << service.log();
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, DisaggregatedDeployments,
    ::testing::Values(
        Deployment{"prefill_tp2_to_decode_tp1_shm",
                   "[{role: prefill, tp: 2, count: 1}, {role: decode, tp: 1, count: 1}]", 4,
                   "UCX_TLS=sm,self", "{timeout_ms: 5000}"},
        Deployment{"prefill_tp1_to_decode_tp2_tcp",
                   "[{role: prefill, tp: 1, count: 1}, {role: decode, tp: 2, count: 1}]", 4,
                   "UCX_TLS=tcp,self", "{timeout_ms: 5000}"},
        Deployment{"two_prefill_one_decode_layerwise",
                   "[{role: prefill, tp: 1, count: 2}, {role: decode, tp: 1, count: 1}]", 4,
                   "UCX_TLS=sm,self", "{layerwise: true, timeout_ms: 5000}"}),
    [](const auto& info) { return std::string(info.param.name); });

// kv_transfer.backend: cuda_ipc moves GPU pages only: on the CPU backend every fabric rank refuses
// it at start-up with a message naming the key, and the service exits instead of serving.
TEST_F(Disaggregation, CudaIpcWithAHostKvCacheIsRefusedAtStartUp) {
  const std::string yaml = fmt::format(
      "{}instances: [{{role: prefill, tp: 1, count: 1}}, {{role: decode, tp: 1, count: 1}}]\n"
      "scheduler: {{mode: disaggregated, token_budget: 64, max_running: 32}}\n"
      "kv_cache: {{page_size: 16, cpu_memory_mb: 16}}\n"
      "kv_transfer: {{backend: cuda_ipc}}\n",
      kModel);
  ServiceUnderTest service("cuda_ipc_on_cpu", yaml, "UCX_TLS=sm,self");
  EXPECT_FALSE(service.start(60)) << "the service came up with cuda_ipc on a host KV cache";
  EXPECT_NE(service.stop(30), 0);
  EXPECT_NE(service.log().find("cuda_ipc moves GPU pages"), std::string::npos) << service.log();
}

// 1,000 requests while transfers are dropped and stalled and clients hang up: every request
// that was not cancelled completes with its token count, greedy outputs stay correct
// (local-prefill fallback), and afterwards every page on every instance is free.
TEST_F(Disaggregation, FaultsAndCancellationsNeverLeakAPage) {
  const std::string yaml = fmt::format(
      "{}instances: [{{role: prefill, tp: 1, count: 2}}, {{role: decode, tp: 1, count: 1}}]\n"
      "scheduler: {{mode: disaggregated, token_budget: 128, max_running: 64}}\n"
      "kv_cache: {{page_size: 16, cpu_memory_mb: 16}}\n"
      "kv_transfer: {{timeout_ms: 200, retries: 1, inject_drop_rate: 0.15, inject_stall_rate: "
      "0.05}}\n",
      kModel);
  ServiceUnderTest service("faults", yaml, "UCX_TLS=sm,self");
  ASSERT_TRUE(service.start()) << service.log();
  constexpr int kRequests = 1000, kClients = 24;
  std::atomic<int> next{0}, completed{0}, cancelled{0}, wrong{0};
  std::vector<std::string> errors;
  std::mutex errors_mutex;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937 rng(500 + c);
      for (int i = next++; i < kRequests; i = next++) {
        std::vector<int> prompt(4 + rng() % 60);
        for (auto& t : prompt) t = static_cast<int>(rng() % 256);
        const int max_tokens = 2 + static_cast<int>(rng() % 6);
        if (i % 10 == 3) {  // a client that goes away after its first token
          stream_then_hang_up(
              service.http_port(),
              json{{"prompt", prompt}, {"max_tokens", 500}, {"ignore_eos", true}, {"stream", true}}
                  .dump());
          ++cancelled;
          continue;
        }
        auto res = complete(service.http_port(),
                            {{"prompt", prompt}, {"max_tokens", max_tokens}, {"ignore_eos", true}});
        if (!res || res->status != 200 ||
            json::parse(res->body)["usage"]["completion_tokens"].get<int>() != max_tokens) {
          ++wrong;
          std::lock_guard lock(errors_mutex);
          errors.push_back(
              fmt::format("request {}: {}", i, res ? res->body : httplib::to_string(res.error())));
          continue;
        }
        ++completed;
      }
    });
  }
  for (auto& t : clients) t.join();
  for (std::size_t i = 0; i < std::min<std::size_t>(errors.size(), 5); ++i)
    ADD_FAILURE() << errors[i];
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(completed.load() + cancelled.load(), kRequests);

  // Correct answers through the fallback path too.
  const auto outputs = greedy_outputs(service);
  for (std::size_t i = 0; i < outputs.size(); ++i)
    EXPECT_EQ(outputs[i], reference_[i]) << "prompt " << i;

  double failures = 0, fallbacks = 0;
  for (int rank = 1; rank < 4; ++rank) {
    failures +=
        scrape_sum(service.metrics_port_base() + rank, "podserve_kv_transfer_failures_total");
    fallbacks +=
        scrape_sum(service.metrics_port_base() + rank, "podserve_kv_transfer_fallbacks_total");
  }
  EXPECT_GT(failures, 0.0) << "no injected fault happened";
  EXPECT_GT(fallbacks, 0.0) << "no request fell back to local prefill";
  RecordProperty("transfer_failures", std::to_string(failures));
  RecordProperty("fallbacks", std::to_string(fallbacks));
  EXPECT_TRUE(wait_all_pages_free(service, 4, 60)) << "pages leaked";
  EXPECT_EQ(service.stop(), 0) << service.log();
}

}  // namespace
}  // namespace podserve::testing
