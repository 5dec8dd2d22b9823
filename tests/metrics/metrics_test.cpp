// MetricsServer + families: serve on a free port, scrape with a real HTTP GET, and check the
// exposition text carries the names, constant labels and values that were recorded.
#include "metrics/metrics.h"

#include <httplib.h>

#include <random>
#include <string>

#include "gtest/gtest.h"
#include "metrics/families.h"

namespace podserve {
namespace {

std::string scrape(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5);
  auto response = client.Get("/metrics");
  EXPECT_TRUE(response) << "scrape failed: " << httplib::to_string(response.error());
  if (!response) return {};
  EXPECT_EQ(response->status, 200);
  return response->body;
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

TEST(MetricsServerTest, ServesRouterFamiliesWithConstLabelsAndValues) {
  auto server = MetricsServer::start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  ASSERT_GT((*server)->port(), 0);
  EXPECT_EQ((*server)->endpoint(), "127.0.0.1:" + std::to_string((*server)->port()));

  const MetricsIdentity identity{
      .mode = "colocated", .instance = "router", .role = "router", .rank = 0};
  RouterMetrics metrics = make_router_metrics((*server)->registry(), identity);

  std::mt19937 rng(std::random_device{}());
  const int prompt_tokens = std::uniform_int_distribution<int>(1, 5000)(rng);
  const int stops = std::uniform_int_distribution<int>(1, 9)(rng);
  metrics.prompt_tokens.Increment(prompt_tokens);
  for (int i = 0; i < stops; ++i) metrics.requests_finished(FinishReason::kStop).Increment();
  metrics.time_to_first_token.Observe(0.0042);
  metrics.http_requests(200).Increment();
  metrics.http_requests(418).Increment();
  metrics.requests_running.Set(3);

  const std::string text = scrape((*server)->port());
  const std::string labels = R"(instance="router",mode="colocated",rank="0",role="router")";
  EXPECT_TRUE(contains(
      text, "podserve_prompt_tokens_total{" + labels + "} " + std::to_string(prompt_tokens)))
      << text;
  EXPECT_TRUE(contains(text, "podserve_requests_total{" + labels + ",finish_reason=\"stop\"} " +
                                 std::to_string(stops)))
      << text;
  EXPECT_TRUE(contains(text, "podserve_requests_total{" + labels + ",finish_reason=\"abort\"} 0"));
  EXPECT_TRUE(contains(text, "podserve_http_requests_total{" + labels + ",code=\"200\"} 1"));
  EXPECT_TRUE(contains(text, "podserve_http_requests_total{" + labels + ",code=\"other\"} 1"));
  EXPECT_TRUE(contains(text, "podserve_requests_running{" + labels + "} 3"));
  // 4.2 ms lands in the 5 ms bucket, not in the 2.5 ms one.
  EXPECT_TRUE(
      contains(text, "podserve_time_to_first_token_seconds_bucket{" + labels + ",le=\"0.005\"} 1"))
      << text;
  EXPECT_TRUE(contains(
      text, "podserve_time_to_first_token_seconds_bucket{" + labels + ",le=\"0.0025\"} 0"));
  EXPECT_TRUE(contains(text, "podserve_time_to_first_token_seconds_count{" + labels + "} 1"));
  for (const char* name :
       {"podserve_inter_token_latency_seconds", "podserve_e2e_request_latency_seconds",
        "podserve_request_queue_time_seconds", "podserve_generation_tokens_total",
        "podserve_requests_waiting"}) {
    EXPECT_TRUE(contains(text, std::string("# TYPE ") + name)) << name;
  }
}

TEST(MetricsServerTest, ServesInstanceFamilies) {
  auto server = MetricsServer::start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const MetricsIdentity identity{
      .mode = "disaggregated", .instance = "1", .role = "prefill", .rank = 3};
  InstanceMetrics metrics = make_instance_metrics((*server)->registry(), identity);
  metrics.iteration_seconds(IterationBatchKind::kHybrid).Observe(0.02);
  metrics.iteration_seconds(IterationBatchKind::kHybrid).Observe(0.03);
  metrics.kv_cache_usage_ratio.Set(0.25);
  metrics.preemptions.Increment(7);
  metrics.kv_transfer_bytes.Increment(1 << 20);
  publish_kv_transport((*server)->registry(), identity, "cuda-ipc");

  const std::string text = scrape((*server)->port());
  const std::string labels = R"(instance="1",mode="disaggregated",rank="3",role="prefill")";
  EXPECT_TRUE(
      contains(text, "podserve_iteration_seconds_count{" + labels + ",batch_kind=\"hybrid\"} 2"))
      << text;
  EXPECT_TRUE(
      contains(text, "podserve_iteration_seconds_count{" + labels + ",batch_kind=\"decode\"} 0"));
  EXPECT_TRUE(contains(text, "podserve_kv_cache_usage_ratio{" + labels + "} 0.25"));
  EXPECT_TRUE(contains(text, "podserve_preemptions_total{" + labels + "} 7"));
  EXPECT_TRUE(contains(text, "podserve_kv_transfer_bytes_total{" + labels + "} 1048576"));
  EXPECT_TRUE(contains(text, "podserve_kv_transport_info{" + labels + ",transport=\"cuda-ipc\"} 1"))
      << text;
  for (const char* name :
       {"podserve_batch_tokens", "podserve_num_requests_running", "podserve_num_requests_waiting",
        "podserve_attention_seconds", "podserve_kv_transfer_seconds",
        "podserve_kv_transfer_runs_total", "podserve_kv_transfer_failures_total"}) {
    EXPECT_TRUE(contains(text, std::string("# TYPE ") + name)) << name;
  }
}

TEST(MetricsServerTest, PortInUseIsAnError) {
  auto first = MetricsServer::start("127.0.0.1", 0);
  ASSERT_TRUE(first.ok());
  auto second = MetricsServer::start("127.0.0.1", (*first)->port());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
}

TEST(MetricsFamiliesTest, BucketsAreIncreasingAndSpanTheirRange) {
  for (const auto* buckets :
       {&request_latency_buckets(), &kernel_latency_buckets(), &batch_token_buckets()}) {
    ASSERT_FALSE(buckets->empty());
    for (std::size_t i = 1; i < buckets->size(); ++i) EXPECT_LT((*buckets)[i - 1], (*buckets)[i]);
  }
  EXPECT_DOUBLE_EQ(request_latency_buckets().front(), 0.001);
  EXPECT_DOUBLE_EQ(request_latency_buckets().back(), 60.0);
}

}  // namespace
}  // namespace podserve
