// The colocated-mode simulator: N colocated instances, each running podserve's own
// ColocatedScheduler and BlockManager (worker/scheduler.h), behind the router's own LoadBalancer
// (router/policy.h), on a virtual clock. The model never runs: an iteration lasts what the cost
// model (sim/cost_model.h) predicts for its batch plan, sampled tokens are dummies and a request
// finishes at its output length (EOS ignored), exactly as the service's scheduler finishes it.
//
// Event loop: the clock jumps to the earliest event, an iteration's end (ties: lowest instance
// first) before an arrival at the same instant. At an arrival the balancer picks an instance
// and charges it as the router does, and the request joins that scheduler. At an iteration's end
// the scheduler applies the dummy tokens, every output is timestamped and released from the
// balancer as the router releases it, the instance's load is reported to the balancer, and the
// instance starts its next iteration at once if it has work. An idle instance starts one when a
// request arrives.
//
// Not modelled: the router's HTTP and streaming path, the control-plane messages between router
// and instances, TP peers (the profile of the instance's TP degree covers them), disaggregated
// mode (prefill/decode instances and KV transfer), stragglers.
//
// Contract: single-threaded, deterministic (same inputs, same result); no I/O.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <vector>

#include "core/config.h"
#include "core/model_config.h"
#include "core/status.h"
#include "sim/cost_model.h"

namespace podserve::sim {

struct SimRequest {
  double arrival_s = 0.0;
  std::int32_t prompt_tokens = 0;
  std::int32_t output_tokens = 0;
};

// One instance as the simulator sees it.
struct SimInstance {
  std::int32_t tp = 1;
  std::int32_t num_pages = 0;  // KV pages of the instance
};

struct SimOptions {
  std::vector<SimInstance> instances;
  std::int32_t token_budget = 512;
  std::int32_t max_running = 64;
  std::int32_t page_size = 16;
  std::int32_t max_model_len = 0;
  RouterPolicy policy = RouterPolicy::kLeastOutstandingTokens;
  // 0: open loop (every request arrives at its arrival_s). Otherwise at most this many requests
  // in flight, as podserve-bench --concurrency-limit keeps them: a request is sent at its
  // arrival_s or, when every slot is taken then, the moment one frees (its result's arrival_s).
  std::int32_t concurrency_limit = 0;
  // Cost profile per TP degree; every instance's TP needs one.
  std::map<std::int32_t, CostProfile> profiles;
};

// Per request, in input order; times in virtual seconds from the first arrival.
struct SimRequestResult {
  std::int32_t instance = -1;
  double arrival_s = 0.0;  // when it was sent (later than requested under a concurrency limit)
  double first_token_s = 0.0;
  double finish_s = 0.0;
  std::int32_t output_tokens = 0;
  std::vector<double> itl_s;  // gaps between consecutive tokens
  bool finished = false;
};

// Iterations of one batch kind, as the service's podserve_iteration_seconds{batch_kind} counts
// them: prefill (prefill chunks only), decode (decodes only), hybrid (both).
struct IterationTotals {
  std::int64_t count = 0;
  double seconds = 0.0;
};
enum class BatchKind : std::uint8_t { kPrefill, kDecode, kHybrid };
BatchKind batch_kind_of(const BatchFeatures& features);

struct SimResult {
  std::vector<SimRequestResult> requests;
  double end_s = 0.0;  // virtual time of the last event
  std::int64_t iterations = 0;
  std::array<IterationTotals, 3> iterations_by_kind;  // indexed by BatchKind
  std::int64_t preemptions = 0;
  // Invariant checks for tests: the clock never went back, and every instance's block manager
  // ended with zero used pages.
  bool clock_monotonic = true;
  std::int64_t pages_in_use_at_end = 0;
};

// The options for `config`'s colocated instances of `model` (its max_position_embeddings is the
// max_model_len, as the service resolves it). KV pages per instance as the service derives them:
// kv_cache.num_pages, else cpu_memory_mb per rank on the CPU backend. kInvalidArgument for
// disaggregated mode, and for a GPU backend without kv_cache.num_pages (the service derives it
// from free GPU memory, unknown here). No profiles are filled in.
Result<SimOptions> sim_options_from_config(const ServiceConfig& config, const ModelConfig& model);

// Runs `requests` to completion. Errors: requests not sorted by arrival, a missing profile, a
// request the scheduler refuses (prompt >= max_model_len), or a scheduler error.
Result<SimResult> simulate(const SimOptions& options, const std::vector<SimRequest>& requests);

}  // namespace podserve::sim
