// The podserve metric families (docs/design.md section 7), defined once. Each rank builds the
// families it needs into its Registry with constant labels naming the deployment (`mode`,
// `instance`, `role`, `rank`), and gets back a struct of references to label-resolved metrics, so
// hot paths only call Observe/Increment/Set (lock-free atomic updates inside prometheus-cpp).
//
// Contract: make_*_metrics is called once per rank at start-up (it allocates and may throw
// std::invalid_argument on an invalid label, an edge). The returned references stay valid as
// long as the Registry lives. All metric updates are thread-safe. Every latency is in seconds.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "core/types.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace podserve {

// Who exports the metrics; becomes the constant labels of every family.
struct MetricsIdentity {
  std::string mode;      // scheduler.mode: colocated | disaggregated
  std::string instance;  // instance id ("0", "1", ...), "router" on the router rank
  std::string role;      // router | colocated | prefill | decode
  int rank = 0;          // MPI world rank
};

// Bucket boundaries, in seconds for latencies, shared so dashboards can compare families.
const prometheus::Histogram::BucketBoundaries& request_latency_buckets();  // 1 ms .. 60 s
const prometheus::Histogram::BucketBoundaries& kernel_latency_buckets();   // 10 us .. 10 s
const prometheus::Histogram::BucketBoundaries& batch_token_buckets();      // 1 .. 16384 tokens

// Router side (rank 0): per-request latencies and counts as seen by the HTTP API.
// Exact definitions of each latency: router/README.md.
struct RouterMetrics {
  static constexpr std::array<int, 9> kCountedHttpCodes = {200, 400, 404, 405, 413,
                                                           429, 500, 503, 0};  // 0: any other

  prometheus::Histogram& time_to_first_token;  // podserve_time_to_first_token_seconds
  prometheus::Histogram& inter_token_latency;  // podserve_inter_token_latency_seconds
  prometheus::Histogram& e2e_request_latency;  // podserve_e2e_request_latency_seconds
  prometheus::Histogram& request_queue_time;   // podserve_request_queue_time_seconds
  // The phases of one request (router/README.md has the exact points in time).
  prometheus::Histogram& request_prefill_time;       // podserve_request_prefill_time_seconds
  prometheus::Histogram& request_decode_time;        // podserve_request_decode_time_seconds
  prometheus::Histogram& request_prompt_tokens;      // podserve_request_prompt_tokens
  prometheus::Histogram& request_generation_tokens;  // podserve_request_generation_tokens
  prometheus::Counter& prompt_tokens;                // podserve_prompt_tokens_total
  prometheus::Counter& generation_tokens;            // podserve_generation_tokens_total
  // podserve_requests_total{finish_reason}, indexed by FinishReason.
  std::array<prometheus::Counter*, 4> requests_by_finish_reason;
  // podserve_http_requests_total{code}, parallel to kCountedHttpCodes ("other" for code 0).
  std::array<prometheus::Counter*, kCountedHttpCodes.size()> http_requests_by_code;
  prometheus::Gauge& requests_running;  // podserve_requests_running: producing tokens
  prometheus::Gauge& requests_waiting;  // podserve_requests_waiting: admitted, no token yet

  prometheus::Counter& requests_finished(FinishReason reason) const {
    return *requests_by_finish_reason[static_cast<std::size_t>(reason)];
  }
  // The counter of an HTTP status code; codes not listed go to code="other".
  prometheus::Counter& http_requests(int status_code) const;
};

// The kind of batch an iteration ran (label batch_kind).
enum class IterationBatchKind : std::uint8_t { kPrefill, kDecode, kHybrid };

// Instance side (each rank of an instance; the leader owns the scheduler gauges).
struct InstanceMetrics {
  // podserve_iteration_seconds{batch_kind}, indexed by IterationBatchKind.
  std::array<prometheus::Histogram*, 3> iteration_seconds_by_kind;
  prometheus::Histogram& batch_tokens;         // podserve_batch_tokens (new tokens per iteration)
  prometheus::Gauge& kv_cache_usage_ratio;     // podserve_kv_cache_usage_ratio, used/total pages
  prometheus::Gauge& num_requests_running;     // podserve_num_requests_running
  prometheus::Gauge& num_requests_waiting;     // podserve_num_requests_waiting
  prometheus::Counter& preemptions;            // podserve_preemptions_total
  prometheus::Histogram& attention_seconds;    // podserve_attention_seconds, per forward pass
  prometheus::Counter& kv_transfer_bytes;      // podserve_kv_transfer_bytes_total
  prometheus::Counter& kv_transfer_runs;       // podserve_kv_transfer_runs_total
  prometheus::Histogram& kv_transfer_seconds;  // podserve_kv_transfer_seconds, per request
  prometheus::Histogram& kv_transfer_tail_seconds;  // podserve_kv_transfer_tail_seconds
  prometheus::Counter& kv_transfer_failures;        // podserve_kv_transfer_failures_total
  prometheus::Counter& kv_transfer_fallbacks;       // podserve_kv_transfer_fallbacks_total
  prometheus::Gauge& requests_waiting_for_kv;       // podserve_requests_waiting_for_kv
  // Decode leader, per request: the prefill side's result (first token sampled) to the KV in
  // place and the request decoding (podserve_request_kv_wait_seconds).
  prometheus::Histogram& request_kv_wait;

  prometheus::Histogram& iteration_seconds(IterationBatchKind kind) const {
    return *iteration_seconds_by_kind[static_cast<std::size_t>(kind)];
  }
};

RouterMetrics make_router_metrics(prometheus::Registry& registry, const MetricsIdentity& identity);
InstanceMetrics make_instance_metrics(prometheus::Registry& registry,
                                      const MetricsIdentity& identity);

// Disaggregated mode, every prefill and decode rank: podserve_kv_transport_info{transport} = 1,
// the KV transport the rank's fabric runs (ucx, ucx+host-staging, cuda-ipc), so a dashboard can
// tell the runs of a transport A/B apart.
void publish_kv_transport(prometheus::Registry& registry, const MetricsIdentity& identity,
                          const std::string& transport);

std::string_view to_string(IterationBatchKind kind);

}  // namespace podserve
