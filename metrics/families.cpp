#include "metrics/families.h"

#include <string>

#include "prometheus/family.h"

namespace podserve {
namespace {

prometheus::Labels const_labels(const MetricsIdentity& identity) {
  return {{"mode", identity.mode},
          {"instance", identity.instance},
          {"role", identity.role},
          {"rank", std::to_string(identity.rank)}};
}

prometheus::Family<prometheus::Histogram>& histogram_family(prometheus::Registry& registry,
                                                            const MetricsIdentity& identity,
                                                            const std::string& name,
                                                            const std::string& help) {
  return prometheus::BuildHistogram()
      .Name(name)
      .Help(help)
      .Labels(const_labels(identity))
      .Register(registry);
}

prometheus::Family<prometheus::Counter>& counter_family(prometheus::Registry& registry,
                                                        const MetricsIdentity& identity,
                                                        const std::string& name,
                                                        const std::string& help) {
  return prometheus::BuildCounter()
      .Name(name)
      .Help(help)
      .Labels(const_labels(identity))
      .Register(registry);
}

prometheus::Family<prometheus::Gauge>& gauge_family(prometheus::Registry& registry,
                                                    const MetricsIdentity& identity,
                                                    const std::string& name,
                                                    const std::string& help) {
  return prometheus::BuildGauge()
      .Name(name)
      .Help(help)
      .Labels(const_labels(identity))
      .Register(registry);
}

}  // namespace

const prometheus::Histogram::BucketBoundaries& request_latency_buckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1,  0.15, 0.2, 0.3,
      0.4,   0.5,    0.75,  1.0,  1.5,   2.0,  2.5,  5.0,  7.5,  10.0,  20.0, 30.0, 60.0};
  return kBuckets;
}

const prometheus::Histogram::BucketBoundaries& kernel_latency_buckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
      0.025,   0.05,     0.1,     0.25,   0.5,     1.0,    2.5,   5.0,    10.0};
  return kBuckets;
}

const prometheus::Histogram::BucketBoundaries& batch_token_buckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
  return kBuckets;
}

prometheus::Counter& RouterMetrics::http_requests(int status_code) const {
  for (std::size_t i = 0; i + 1 < kCountedHttpCodes.size(); ++i) {
    if (kCountedHttpCodes[i] == status_code) return *http_requests_by_code[i];
  }
  return *http_requests_by_code.back();
}

RouterMetrics make_router_metrics(prometheus::Registry& registry, const MetricsIdentity& identity) {
  auto& ttft = histogram_family(
      registry, identity, "podserve_time_to_first_token_seconds",
      "Arrival of the HTTP request at the router to the first token handed to the connection.");
  auto& itl = histogram_family(registry, identity, "podserve_inter_token_latency_seconds",
                               "Gap between successive tokens handed to the HTTP connection.");
  auto& e2e = histogram_family(registry, identity, "podserve_e2e_request_latency_seconds",
                               "Arrival of the HTTP request at the router to its last byte.");
  auto& queue = histogram_family(
      registry, identity, "podserve_request_queue_time_seconds",
      "Arrival at the router to the instance scheduling the request (see router/README.md).");
  auto& prefill_time = histogram_family(
      registry, identity, "podserve_request_prefill_time_seconds",
      "Per request: the instance scheduling it to its first output reaching the router (every "
      "prefill chunk).");
  auto& decode_time =
      histogram_family(registry, identity, "podserve_request_decode_time_seconds",
                       "Per request: its first token to its last handed to the connection.");
  auto& prompt_length = histogram_family(registry, identity, "podserve_request_prompt_tokens",
                                         "Per request: prompt tokens.");
  auto& generation_length =
      histogram_family(registry, identity, "podserve_request_generation_tokens",
                       "Per finished request: generated tokens.");
  auto& prompt_tokens = counter_family(registry, identity, "podserve_prompt_tokens_total",
                                       "Prompt tokens of requests submitted to an instance.");
  auto& generation_tokens = counter_family(registry, identity, "podserve_generation_tokens_total",
                                           "Generated tokens handed to clients.");
  auto& requests = counter_family(registry, identity, "podserve_requests_total",
                                  "Requests finished, by finish reason.");
  auto& http = counter_family(registry, identity, "podserve_http_requests_total",
                              "HTTP responses sent by the router, by status code.");
  auto& running = gauge_family(registry, identity, "podserve_requests_running",
                               "Admitted requests that have produced their first token.");
  auto& waiting = gauge_family(registry, identity, "podserve_requests_waiting",
                               "Admitted requests still waiting for their first token.");

  RouterMetrics metrics{
      .time_to_first_token = ttft.Add({}, request_latency_buckets()),
      .inter_token_latency = itl.Add({}, request_latency_buckets()),
      .e2e_request_latency = e2e.Add({}, request_latency_buckets()),
      .request_queue_time = queue.Add({}, request_latency_buckets()),
      .request_prefill_time = prefill_time.Add({}, request_latency_buckets()),
      .request_decode_time = decode_time.Add({}, request_latency_buckets()),
      .request_prompt_tokens = prompt_length.Add({}, batch_token_buckets()),
      .request_generation_tokens = generation_length.Add({}, batch_token_buckets()),
      .prompt_tokens = prompt_tokens.Add({}),
      .generation_tokens = generation_tokens.Add({}),
      .requests_by_finish_reason = {},
      .http_requests_by_code = {},
      .requests_running = running.Add({}),
      .requests_waiting = waiting.Add({}),
  };
  for (const FinishReason reason :
       {FinishReason::kStop, FinishReason::kLength, FinishReason::kAbort, FinishReason::kError}) {
    metrics.requests_by_finish_reason[static_cast<std::size_t>(reason)] =
        &requests.Add({{"finish_reason", std::string(to_string(reason))}});
  }
  for (std::size_t i = 0; i < RouterMetrics::kCountedHttpCodes.size(); ++i) {
    const int code = RouterMetrics::kCountedHttpCodes[i];
    metrics.http_requests_by_code[i] =
        &http.Add({{"code", code == 0 ? std::string("other") : std::to_string(code)}});
  }
  return metrics;
}

void publish_kv_transport(prometheus::Registry& registry, const MetricsIdentity& identity,
                          const std::string& transport) {
  gauge_family(registry, identity, "podserve_kv_transport_info",
               "The KV transport of this rank's fabric (disaggregated mode); always 1.")
      .Add({{"transport", transport}})
      .Set(1);
}

std::string_view to_string(IterationBatchKind kind) {
  switch (kind) {
    case IterationBatchKind::kPrefill: return "prefill";
    case IterationBatchKind::kDecode: return "decode";
    case IterationBatchKind::kHybrid: return "hybrid";
  }
  return "unknown";
}

InstanceMetrics make_instance_metrics(prometheus::Registry& registry,
                                      const MetricsIdentity& identity) {
  auto& iteration = histogram_family(registry, identity, "podserve_iteration_seconds",
                                     "Wall time of one scheduler iteration, by batch kind.");
  auto& batch_tokens = histogram_family(registry, identity, "podserve_batch_tokens",
                                        "New tokens (prefill chunks + decodes) per iteration.");
  auto& kv_usage = gauge_family(registry, identity, "podserve_kv_cache_usage_ratio",
                                "Used KV-cache pages / total pages (0..1).");
  auto& running = gauge_family(registry, identity, "podserve_num_requests_running",
                               "Sequences in the instance's running set.");
  auto& waiting = gauge_family(registry, identity, "podserve_num_requests_waiting",
                               "Sequences admitted to the instance but not yet running.");
  auto& preemptions = counter_family(registry, identity, "podserve_preemptions_total",
                                     "Sequences preempted (recompute) on KV page exhaustion.");
  auto& attention =
      histogram_family(registry, identity, "podserve_attention_seconds",
                       "Attention time of one forward pass (all layers); decode steps replayed "
                       "as CUDA graphs are not timed.");
  auto& transfer_bytes = counter_family(registry, identity, "podserve_kv_transfer_bytes_total",
                                        "KV-cache bytes sent to decode instances.");
  auto& transfer_runs = counter_family(
      registry, identity, "podserve_kv_transfer_runs_total",
      "Page runs (contiguous on both sides) in the KV bytes sent: one UCX put or NCCL message "
      "each; bytes_total / runs_total is the mean run, low when KV pages are fragmented.");
  auto& transfer_seconds =
      histogram_family(registry, identity, "podserve_kv_transfer_seconds",
                       "Post of a request's first KV page transfer to completion of its last one.");
  auto& transfer_tail = histogram_family(
      registry, identity, "podserve_kv_transfer_tail_seconds",
      "End of a request's prefill forward pass to completion of its KV transfer: the transfer "
      "time not hidden behind compute (layer-wise shipping shrinks it).");
  auto& transfer_failures =
      counter_family(registry, identity, "podserve_kv_transfer_failures_total",
                     "KV transfers that failed or timed out.");
  auto& transfer_fallbacks = counter_family(
      registry, identity, "podserve_kv_transfer_fallbacks_total",
      "Requests a decode instance prefilled locally because their KV transfer failed.");
  auto& waiting_for_kv =
      gauge_family(registry, identity, "podserve_requests_waiting_for_kv",
                   "Decode instance: requests admitted whose KV has not arrived.");

  auto& kv_wait = histogram_family(
      registry, identity, "podserve_request_kv_wait_seconds",
      "Decode instance, per request: the prefill's result to its KV in place (transfer not "
      "hidden behind the prefill, plus the control messages).");

  InstanceMetrics metrics{
      .iteration_seconds_by_kind = {},
      .batch_tokens = batch_tokens.Add({}, batch_token_buckets()),
      .kv_cache_usage_ratio = kv_usage.Add({}),
      .num_requests_running = running.Add({}),
      .num_requests_waiting = waiting.Add({}),
      .preemptions = preemptions.Add({}),
      .attention_seconds = attention.Add({}, kernel_latency_buckets()),
      .kv_transfer_bytes = transfer_bytes.Add({}),
      .kv_transfer_runs = transfer_runs.Add({}),
      .kv_transfer_seconds = transfer_seconds.Add({}, request_latency_buckets()),
      .kv_transfer_tail_seconds = transfer_tail.Add({}, kernel_latency_buckets()),
      .kv_transfer_failures = transfer_failures.Add({}),
      .kv_transfer_fallbacks = transfer_fallbacks.Add({}),
      .requests_waiting_for_kv = waiting_for_kv.Add({}),
      .request_kv_wait = kv_wait.Add({}, request_latency_buckets()),
  };
  for (const IterationBatchKind kind :
       {IterationBatchKind::kPrefill, IterationBatchKind::kDecode, IterationBatchKind::kHybrid}) {
    metrics.iteration_seconds_by_kind[static_cast<std::size_t>(kind)] =
        &iteration.Add({{"batch_kind", std::string(to_string(kind))}}, kernel_latency_buckets());
  }
  return metrics;
}

}  // namespace podserve
