#include "cluster/instance_rank.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "cluster/control_endpoint.h"
#include "cluster/mpi_communicator.h"
#include "cluster/plan_broadcast.h"
#include "cluster/rank_metrics.h"
#include "kernels/backend_factory.h"
#include "worker/engine.h"
#include "worker/weights.h"

namespace podserve {
namespace {

constexpr int kRouterRank = 0;

Result<BackendKind> choose_backend(BackendChoice choice) {
  switch (choice) {
    case BackendChoice::kCpu: return BackendKind::kCpu;
    case BackendChoice::kCuda: return BackendKind::kCuda;
    case BackendChoice::kAuto: return cuda_device_available() ? BackendKind::kCuda : BackendKind::kCpu;
  }
  return invalid_argument("config key 'backend': unknown value");
}

Result<AttentionKind> choose_attention(AttentionImpl impl, BackendKind backend) {
  switch (impl) {
    case AttentionImpl::kAuto: return backend == BackendKind::kCuda ? AttentionKind::kPod : AttentionKind::kCpu;
    case AttentionImpl::kCpu: return AttentionKind::kCpu;
    case AttentionImpl::kPod: return AttentionKind::kPod;
    case AttentionImpl::kSerial: return AttentionKind::kSerial;
    case AttentionImpl::kStreams: return AttentionKind::kStreams;
  }
  return invalid_argument("config key 'scheduler.attention': unknown value");
}

IterationBatchKind batch_kind(const StepStats& stats) {
  if (stats.num_prefill_tokens > 0 && stats.num_decode_tokens > 0) return IterationBatchKind::kHybrid;
  return stats.num_prefill_tokens > 0 ? IterationBatchKind::kPrefill : IterationBatchKind::kDecode;
}

void publish_load(const InstanceLoad& load, InstanceMetrics& metrics) {
  metrics.num_requests_running.Set(load.running);
  metrics.num_requests_waiting.Set(load.waiting);
  metrics.kv_cache_usage_ratio.Set(
      load.total_pages > 0 ? 1.0 - static_cast<double>(load.free_pages) / load.total_pages : 0.0);
}

bool same_load(const InstanceLoad& a, const InstanceLoad& b) {
  return a.running == b.running && a.waiting == b.waiting &&
         a.outstanding_tokens == b.outstanding_tokens && a.free_pages == b.free_pages;
}

// The leader: control messages in, iterations, outputs out; sleeps (backing off to 5 ms)
// while it has nothing to do.
Status run_leader(const Topology& topology, Engine& engine, InstanceMetrics& metrics) {
  ControlEndpoint control(topology.control_comm());
  const bool has_peers = topology.instance().tp > 1;
  IdleBackoff backoff(50, 5000);
  InstanceLoad reported_load = engine.load();
  std::int64_t reported_preemptions = 0;
  bool shutdown = false;
  PODSERVE_RETURN_IF_ERROR(control.send(kRouterRank, LoadMessage{reported_load}));

  while (true) {
    bool active = false;
    while (true) {
      PODSERVE_ASSIGN_OR_RETURN(auto received, control.try_receive());
      if (!received) break;
      active = true;
      if (auto* submit = std::get_if<SubmitMessage>(&received->message)) {
        const RequestId id = submit->request.id;
        if (auto status = engine.submit(std::move(submit->request)); !status.ok()) {
          spdlog::warn("request {} rejected: {}", id, status.to_string());
          OutputsMessage rejected;
          rejected.outputs.push_back({id, TokenOutput::kNoToken, 0, true, FinishReason::kError});
          rejected.load = engine.load();
          PODSERVE_RETURN_IF_ERROR(control.send(kRouterRank, rejected));
        }
      } else if (auto* cancel = std::get_if<CancelMessage>(&received->message)) {
        engine.cancel(cancel->id);
      } else if (std::holds_alternative<ShutdownMessage>(received->message)) {
        shutdown = true;
      } else {
        return internal_error(fmt::format("leader got an unexpected control message (type {})",
                                          received->message.index()));
      }
    }
    if (shutdown) break;

    if (engine.has_work()) {
      active = true;
      OutputsMessage message;
      const auto before_forward = [&](const BatchPlan& plan) -> Status {
        for (const auto& seq : plan.sequences) {
          if (seq.is_prefill && seq.num_cached_tokens == 0) message.scheduled.push_back(seq.seq_id);
        }
        return has_peers ? broadcast_plan(topology.instance_comm(), plan) : Status::Ok();
      };
      PODSERVE_ASSIGN_OR_RETURN(auto step, engine.step(before_forward));
      message.outputs = std::move(step.outputs);
      message.load = engine.load();
      const auto& stats = step.stats;
      if (stats.num_prefill_tokens + stats.num_decode_tokens > 0) {
        metrics.iteration_seconds(batch_kind(stats)).Observe(stats.iteration_seconds);
        metrics.batch_tokens.Observe(stats.num_prefill_tokens + stats.num_decode_tokens);
      }
      const auto preemptions = engine.scheduler().num_preemptions();
      metrics.preemptions.Increment(static_cast<double>(preemptions - reported_preemptions));
      reported_preemptions = preemptions;
      publish_load(message.load, metrics);
      if (!message.outputs.empty() || !message.scheduled.empty() || !same_load(message.load, reported_load)) {
        reported_load = message.load;
        PODSERVE_RETURN_IF_ERROR(control.send(kRouterRank, message));
      }
    }
    PODSERVE_ASSIGN_OR_RETURN(const auto pending_sends, control.progress());
    if (active || pending_sends > 0) {
      backoff.reset();
    } else {
      backoff.sleep();
    }
  }

  // Shutdown: the router drained first; anything still here is aborted and reported.
  const auto load = engine.load();
  if (load.running + load.waiting > 0) {
    spdlog::warn("shutting down with {} requests still held", load.running + load.waiting);
  }
  if (has_peers) {
    BatchPlan stop;
    stop.shutdown = true;
    PODSERVE_RETURN_IF_ERROR(broadcast_plan(topology.instance_comm(), stop));
  }
  PODSERVE_RETURN_IF_ERROR(control.send(kRouterRank, ShutdownDoneMessage{}));
  return control.flush();
}

// A TP peer: executes every plan its leader broadcasts until the shutdown plan.
Status run_peer(const Topology& topology, Engine& engine, InstanceMetrics& metrics) {
  IdleBackoff backoff(50, 5000);
  while (true) {
    PODSERVE_ASSIGN_OR_RETURN(const auto plan, receive_plan(topology.instance_comm(), backoff));
    if (plan.shutdown) return Status::Ok();
    const auto start = std::chrono::steady_clock::now();
    PODSERVE_RETURN_IF_ERROR(engine.execute_peer(plan));
    StepStats stats;
    stats.num_prefill_tokens = plan.num_prefill_tokens();
    stats.num_decode_tokens = plan.num_decode_tokens();
    metrics.iteration_seconds(batch_kind(stats))
        .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    metrics.batch_tokens.Observe(plan.total_new_tokens());
  }
}

}  // namespace

Status run_instance_rank(const Topology& topology, const ServiceConfig& config,
                         const ModelConfig& model) {
  PODSERVE_ASSIGN_OR_RETURN(auto metrics_server, start_rank_metrics(topology, config));
  auto metrics = make_instance_metrics(metrics_server->registry(), rank_metrics_identity(topology, config));

  PODSERVE_ASSIGN_OR_RETURN(const auto backend_kind, choose_backend(config.backend));
  PODSERVE_ASSIGN_OR_RETURN(const auto attention, choose_attention(config.scheduler.attention, backend_kind));
  PODSERVE_ASSIGN_OR_RETURN(auto backend, make_backend(backend_kind, topology.node_local_rank()));
  MpiCommunicator communicator(topology.instance_comm());
  const int tp = topology.instance().tp;

  ModelOptions options;
  options.page_size = config.kv_cache.page_size;
  options.attention = attention;
  options.num_pages = config.kv_cache.num_pages;
  if (options.num_pages == 0) {
    if (backend_kind != BackendKind::kCpu) {
      return unimplemented("config key 'kv_cache.num_pages': deriving the page count from GPU "
                           "memory needs the CUDA backend");
    }
    options.num_pages = LlamaModel::pages_that_fit(
        model, tp, static_cast<std::size_t>(config.kv_cache.cpu_memory_mb) << 20,
        options.page_size, backend->compute_dtype());
  }
  PODSERVE_ASSIGN_OR_RETURN(auto weights, open_weight_source(config.model.weights, config.model.seed));
  const auto load_start = std::chrono::steady_clock::now();
  PODSERVE_ASSIGN_OR_RETURN(auto llama, LlamaModel::create(model, *weights, *backend, communicator, options));
  if (topology.is_leader()) {
    spdlog::info("instance {} ({}, tp={}) on {}: weights {} loaded in {:.1f} s, {} KV pages of {} tokens",
                 topology.instance_id(), to_string(topology.instance().role), tp, backend->name(),
                 weights->describe(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count(),
                 options.num_pages, options.page_size);
  }
  EngineOptions engine_options;
  engine_options.token_budget = config.scheduler.token_budget;
  engine_options.max_running = config.scheduler.max_running;
  engine_options.max_model_len = model.max_position_embeddings;
  PODSERVE_ASSIGN_OR_RETURN(auto engine, Engine::create(std::move(llama), engine_options));

  const auto status = topology.is_leader() ? run_leader(topology, *engine, metrics)
                                           : run_peer(topology, *engine, metrics);
  if (status.ok()) spdlog::info("stopped cleanly");
  return status;
}

}  // namespace podserve
