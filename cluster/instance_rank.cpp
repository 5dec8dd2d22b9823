#include "cluster/instance_rank.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "cluster/control_endpoint.h"
#include "cluster/kv_fabric_mpi.h"
#include "cluster/mpi_check.h"
#include "cluster/mpi_communicator.h"
#include "cluster/plan_broadcast.h"
#include "cluster/rank_metrics.h"
#include "disagg/decode_side.h"
#include "disagg/outbox.h"
#include "disagg/prefill_side.h"
#include "kernels/backend_factory.h"
#include "worker/engine.h"
#include "worker/weights.h"

namespace podserve {
namespace {

constexpr int kRouterRank = 0;

// `backend: auto` takes the GPU when there is one and its kernels take this model's attention
// shape (per rank), else the CPU; the choice and its reason are logged every time. `cuda` with an
// unsupported shape is a config error.
Result<BackendKind> choose_backend(const ServiceConfig& config, const ModelConfig& model, int tp) {
  const auto cuda_supports = [&] {
    return backend_supports_attention(BackendKind::kCuda, model.num_heads / tp,
                                      model.num_kv_heads / tp, model.head_dim,
                                      config.kv_cache.page_size);
  };
  switch (config.backend) {
    case BackendChoice::kCpu: return BackendKind::kCpu;
    case BackendChoice::kCuda:
      if (const Status supported = cuda_supports(); !supported.ok()) {
        return invalid_argument("config key 'backend': cuda cannot serve model '" + model.name +
                                "': " + supported.message());
      }
      return BackendKind::kCuda;
    case BackendChoice::kAuto:
      if (!cuda_device_available()) {
        const bool built = cuda_supports().code() != StatusCode::kUnimplemented;
        spdlog::info("backend auto: CPU ({})",
                     built ? "no CUDA device is visible" : "this build has no CUDA backend");
        return BackendKind::kCpu;
      }
      if (const Status supported = cuda_supports(); !supported.ok()) {
        spdlog::warn("backend auto: a GPU is present but model '{}' runs on the CPU ({})",
                     model.name, supported.message());
        return BackendKind::kCpu;
      }
      spdlog::info("backend auto: CUDA");
      return BackendKind::kCuda;
  }
  return invalid_argument("config key 'backend': unknown value");
}

Result<AttentionKind> choose_attention(AttentionImpl impl, BackendKind backend) {
  switch (impl) {
    case AttentionImpl::kAuto:
      return backend == BackendKind::kCuda ? AttentionKind::kPod : AttentionKind::kCpu;
    case AttentionImpl::kCpu: return AttentionKind::kCpu;
    case AttentionImpl::kPod: return AttentionKind::kPod;
    case AttentionImpl::kSerial: return AttentionKind::kSerial;
    case AttentionImpl::kStreams: return AttentionKind::kStreams;
  }
  return invalid_argument("config key 'scheduler.attention': unknown value");
}

// The instance's tensor-parallel collectives: MPI on the CPU backend; on a device backend its
// own library's (NCCL), joined with an id the leader makes and broadcasts over the instance.
Result<std::unique_ptr<Communicator>> make_tensor_parallel_communicator(const Topology& topology,
                                                                        Backend& backend) {
  if (backend.kind() == BackendKind::kCpu) {
    return std::unique_ptr<Communicator>(
        std::make_unique<MpiCommunicator>(topology.instance_comm()));
  }
  std::vector<std::uint8_t> id;
  if (topology.is_leader()) {
    PODSERVE_ASSIGN_OR_RETURN(id, make_collective_id(backend.kind()));
  }
  std::uint64_t id_bytes = id.size();
  PODSERVE_MPI(MPI_Bcast(&id_bytes, 1, MPI_UINT64_T, 0, topology.instance_comm()));
  id.resize(id_bytes);
  PODSERVE_MPI(
      MPI_Bcast(id.data(), static_cast<int>(id_bytes), MPI_BYTE, 0, topology.instance_comm()));
  return make_collective_communicator(id, topology.instance().tp, topology.tp_rank(), backend);
}

// KV-cache bytes per rank when kv_cache.num_pages is 0: cpu_memory_mb on the CPU backend; on a
// device, memory_fraction of what its free memory leaves after this rank's share of the weights
// (the embedding counted whole: every rank holds it).
Result<std::size_t> kv_cache_budget(const ServiceConfig& config, const ModelConfig& model, int tp,
                                    const Backend& backend) {
  if (backend.kind() == BackendKind::kCpu) {
    return static_cast<std::size_t>(config.kv_cache.cpu_memory_mb) << 20;
  }
  PODSERVE_ASSIGN_OR_RETURN(const std::size_t free_bytes, device_free_memory(backend));
  const std::size_t element = dtype_size(backend.compute_dtype());
  const auto embedding = static_cast<std::size_t>(model.vocab_size) * model.hidden_size;
  const std::size_t weight_bytes =
      (static_cast<std::size_t>(model.num_parameters()) / tp + embedding) * element;
  if (free_bytes <= weight_bytes) {
    return resource_exhausted(fmt::format(
        "config key 'kv_cache.num_pages': {} has {:.1f} GiB free, the weights need {:.1f} GiB per "
        "rank (raise the instance's tp or set kv_cache.num_pages)",
        backend.name(), free_bytes / double(1 << 30), weight_bytes / double(1 << 30)));
  }
  return static_cast<std::size_t>(static_cast<double>(free_bytes - weight_bytes) *
                                  config.kv_cache.memory_fraction);
}

IterationBatchKind batch_kind(const StepStats& stats) {
  if (stats.num_prefill_tokens > 0 && stats.num_decode_tokens > 0)
    return IterationBatchKind::kHybrid;
  return stats.num_prefill_tokens > 0 ? IterationBatchKind::kPrefill : IterationBatchKind::kDecode;
}

void publish_load(const InstanceLoad& load, InstanceMetrics& metrics) {
  metrics.num_requests_running.Set(load.running);
  metrics.num_requests_waiting.Set(load.waiting);
  metrics.kv_cache_usage_ratio.Set(
      load.total_pages > 0 ? 1.0 - static_cast<double>(load.free_pages) / load.total_pages : 0.0);
}

void record_shipment(const KvShipper::Finished& done, InstanceMetrics& metrics) {
  metrics.kv_transfer_bytes.Increment(static_cast<double>(done.bytes));
  metrics.kv_transfer_runs.Increment(static_cast<double>(done.runs));
  metrics.kv_transfer_seconds.Observe(done.seconds);
  metrics.kv_transfer_tail_seconds.Observe(done.tail_seconds);
  metrics.kv_transfer_failures.Increment(done.failed_attempts);
}

// The disaggregated protocol's outbox over the control plane: messages to another instance go
// to its leader; a request finished early goes to the router with the instance's load.
class ControlOutbox final : public PdOutbox {
 public:
  ControlOutbox(const Topology& topology, ControlEndpoint& control, const Engine& engine)
      : topology_(topology), control_(control), engine_(engine) {}

  Status send_to_prefill(std::int32_t prefill_instance,
                         const PrefillRequestMessage& message) override {
    return control_.send(leader_rank(prefill_instance), message);
  }
  Status send_to_decode(std::int32_t decode_instance,
                        const PrefillResultMessage& message) override {
    return control_.send(leader_rank(decode_instance), message);
  }
  Status finish_at_router(const TokenOutput& output) override {
    OutputsMessage message;
    message.outputs.push_back(output);
    message.load = engine_.load();
    return control_.send(kRouterRank, message);
  }

 private:
  int leader_rank(int instance) const { return topology_.instances().at(instance).first_rank; }

  const Topology& topology_;
  ControlEndpoint& control_;
  const Engine& engine_;
};

// The leader's engine, typed by the instance's role: exactly one of the role pointers is set.
struct RoleEngine {
  std::unique_ptr<Engine> engine;
  ColocatedEngine* colocated = nullptr;
  PrefillEngine* prefill = nullptr;
  DecodeEngine* decode = nullptr;
};

template <typename Typed>
Result<RoleEngine> wrap_engine(Result<std::unique_ptr<Typed>> made, Typed* RoleEngine::*slot) {
  if (!made.ok()) return made.status();
  RoleEngine role_engine;
  role_engine.*slot = made->get();
  role_engine.engine = std::move(made).value();
  return role_engine;
}

Result<RoleEngine> make_role_engine(InstanceRole role, std::unique_ptr<LlamaModel> model,
                                    const EngineOptions& options) {
  switch (role) {
    case InstanceRole::kColocated:
      return wrap_engine(ColocatedEngine::create(std::move(model), options),
                         &RoleEngine::colocated);
    case InstanceRole::kPrefill:
      return wrap_engine(PrefillEngine::create(std::move(model), options), &RoleEngine::prefill);
    case InstanceRole::kDecode:
      return wrap_engine(DecodeEngine::create(std::move(model), options), &RoleEngine::decode);
  }
  return invalid_argument("unknown instance role");
}

// One instance's leader: control messages in, iterations, outputs out; sleeps (backing off to
// 5 ms) while it has nothing to do. Colocated, prefill and decode leaders share the loop; the
// disaggregated protocol (docs/design.md section 2) is disagg/'s PrefillSide or DecodeSide,
// fed the messages and iterations here, talking back through a ControlOutbox.
class Leader {
 public:
  Leader(const Topology& topology, const ServiceConfig& config, const RoleEngine& role_engine,
         InstanceMetrics& metrics, KvFabric* fabric)
      : topology_(topology),
        config_(config),
        engine_(*role_engine.engine),
        colocated_(role_engine.colocated),
        metrics_(metrics),
        control_(topology.control_comm()),
        outbox_(topology, control_, engine_),
        role_(topology.instance().role),
        has_peers_(topology.instance().tp > 1),
        fabric_(fabric) {
    if (role_engine.prefill != nullptr) {
      prefill_.emplace(topology.instance().tp, *role_engine.prefill, outbox_);
      shipper_.emplace(*fabric, kv_shipper_options(topology, config, engine_.model().config(),
                                                   engine_.model().kv_cache(0).dtype));
    }
    if (role_engine.decode != nullptr)
      decode_.emplace(topology.instance_id(), *role_engine.decode, outbox_);
  }

  Status run() {
    IdleBackoff backoff(50, 5000);
    reported_load_ = engine_.load();
    PODSERVE_RETURN_IF_ERROR(control_.send(kRouterRank, LoadMessage{reported_load_}));
    while (!shutdown_) {
      bool active = false;
      PODSERVE_RETURN_IF_ERROR(receive_control(active));
      if (shutdown_) break;
      if (decode_) {
        PODSERVE_ASSIGN_OR_RETURN(const bool admitted, decode_->admit_waiting());
        if (admitted) active = true;
      }
      publish_protocol_metrics();
      if (engine_.has_work()) {
        active = true;
        PODSERVE_RETURN_IF_ERROR(iterate());
      }
      PODSERVE_RETURN_IF_ERROR(poll_shipments(active));
      if (fabric_ != nullptr && fabric_->progress()) active = true;
      PODSERVE_RETURN_IF_ERROR(report_load_if_changed());
      PODSERVE_ASSIGN_OR_RETURN(const auto pending_sends, control_.progress());
      if (active || pending_sends > 0) {
        backoff.reset();
      } else {
        backoff.sleep();
      }
    }
    return stop();
  }

 private:
  Status receive_control(bool& active) {
    while (true) {
      PODSERVE_ASSIGN_OR_RETURN(auto received, control_.try_receive());
      if (!received) return Status::Ok();
      active = true;
      PODSERVE_RETURN_IF_ERROR(std::visit([&](auto& m) { return handle(m); }, received->message));
    }
  }

  Status wrong_role(std::string_view message) const {
    return internal_error(fmt::format("{} leader got a {} message", to_string(role_), message));
  }

  Status handle(SubmitMessage& m) {
    const RequestId id = m.request.id;
    if (colocated_ == nullptr) {
      return reject_request(outbox_, id,
                            invalid_argument(fmt::format("a {} instance takes requests only "
                                                         "through the disaggregated protocol",
                                                         to_string(role_))));
    }
    if (auto status = colocated_->submit(std::move(m.request)); !status.ok())
      return reject_request(outbox_, id, status);
    return Status::Ok();
  }
  Status handle(CancelMessage& m) {
    if (decode_) {
      decode_->cancel(m.id);
    } else if (prefill_) {
      prefill_->cancel(m.id);
    } else {
      engine_.cancel(m.id);
    }
    return Status::Ok();
  }
  Status handle(ShutdownMessage&) {
    shutdown_ = true;
    return Status::Ok();
  }
  Status handle(DisaggregatedSubmitMessage& m) {
    if (!decode_) {
      return reject_request(
          outbox_, m.request.id,
          invalid_argument(
              fmt::format("a {} instance takes no disaggregated submission", to_string(role_))));
    }
    return decode_->submit(std::move(m));
  }
  Status handle(PrefillRequestMessage& m) {
    if (!prefill_) return wrong_role("prefill request");
    return prefill_->on_prefill_request(std::move(m));
  }
  Status handle(PrefillResultMessage& m) {
    if (!decode_) return wrong_role("prefill result");
    return decode_->on_prefill_result(m);
  }
  Status handle(KvPartDoneMessage& m) {
    if (prefill_) return prefill_->on_part_done(m.id);
    if (decode_) return decode_->on_part_done(m);
    return wrong_role("KV part");
  }
  Status handle(OutputsMessage&) { return wrong_role("outputs"); }
  Status handle(LoadMessage&) { return wrong_role("load"); }
  Status handle(ShutdownDoneMessage&) { return wrong_role("shutdown-done"); }

  Status iterate() {
    OutputsMessage message;
    std::vector<KvShipment> shipments;  // this iteration's, as broadcast
    const auto before_forward = [&](BatchPlan& plan) -> Status {
      for (const auto& seq : plan.sequences) {
        if (seq.is_prefill && seq.num_cached_tokens == 0) message.scheduled.push_back(seq.seq_id);
      }
      // Told now, before the forward pass, so that the router's queue time ends when the first
      // prefill chunk starts (and its prefill time covers every chunk), not when outputs leave.
      if (!message.scheduled.empty()) {
        OutputsMessage scheduled;
        scheduled.scheduled = std::exchange(message.scheduled, {});
        scheduled.load = reported_load_;
        PODSERVE_RETURN_IF_ERROR(control_.send(kRouterRank, scheduled));
      }
      if (prefill_) {
        prefill_->add_shipments(plan);
        shipments = plan.shipments;
      }
      if (decode_) plan.deliver_pages = decode_->take_deliveries();
      if (has_peers_) PODSERVE_RETURN_IF_ERROR(broadcast_plan(topology_.instance_comm(), plan));
      return fabric_ != nullptr ? fabric_->deliver(plan.deliver_pages) : Status::Ok();
    };
    const auto after_layer = [&](std::int32_t layer) -> Status { return ship(shipments, layer); };
    const bool layerwise = prefill_.has_value() && config_.kv_transfer.layerwise;
    PODSERVE_ASSIGN_OR_RETURN(auto step, layerwise ? engine_.step(before_forward, after_layer)
                                                   : engine_.step(before_forward, {}));
    if (prefill_) PODSERVE_RETURN_IF_ERROR(prefill_->on_step_outputs(step.outputs));
    // Tokens leave first: time to first token does not wait for the KV shipment.
    message.outputs = std::move(step.outputs);
    message.load = engine_.load();
    record_step(step.stats);
    if (!message.outputs.empty() || !message.scheduled.empty()) {
      reported_load_ = message.load;
      PODSERVE_RETURN_IF_ERROR(control_.send(kRouterRank, message));
    }
    if (prefill_) {
      if (!layerwise) PODSERVE_RETURN_IF_ERROR(ship(shipments, std::nullopt));
      PODSERVE_RETURN_IF_ERROR(prefill_->on_prefill_completions(step.prefill_completions));
    }
    return Status::Ok();
  }

  // Pages also come back between iterations (shipments done, reservations resolved): keep the
  // router's view and the gauges current.
  Status report_load_if_changed() {
    const auto load = engine_.load();
    if (load == reported_load_) return Status::Ok();
    reported_load_ = load;
    publish_load(load, metrics_);
    return control_.send(kRouterRank, LoadMessage{load});
  }

  Status ship(const std::vector<KvShipment>& shipments, std::optional<std::int32_t> layer) {
    for (const auto& shipment : shipments)
      PODSERVE_RETURN_IF_ERROR(shipper_->post(shipment, layer));
    return Status::Ok();
  }

  void record_step(const StepStats& stats) {
    if (stats.num_prefill_tokens + stats.num_decode_tokens > 0) {
      metrics_.iteration_seconds(batch_kind(stats)).Observe(stats.iteration_seconds);
      metrics_.batch_tokens.Observe(stats.num_prefill_tokens + stats.num_decode_tokens);
      // Graph steps are not timed per kernel (the metric's help says so).
      if (!stats.graph) metrics_.attention_seconds.Observe(stats.attention_seconds);
    }
    const auto preemptions = engine_.scheduler().num_preemptions();
    metrics_.preemptions.Increment(static_cast<double>(preemptions - reported_preemptions_));
    reported_preemptions_ = preemptions;
    publish_load(engine_.load(), metrics_);
  }

  // Decode leader: requests waiting for their KV, and fallbacks to a local prefill.
  void publish_protocol_metrics() {
    if (!decode_) return;
    metrics_.requests_waiting_for_kv.Set(static_cast<double>(decode_->num_waiting_for_kv()));
    const auto fallbacks = decode_->num_fallbacks();
    metrics_.kv_transfer_fallbacks.Increment(static_cast<double>(fallbacks - reported_fallbacks_));
    reported_fallbacks_ = fallbacks;
    for (const double wait : decode_->take_kv_waits()) metrics_.request_kv_wait.Observe(wait);
  }

  // Prefill leader: its own share of shipments; peers report theirs by message.
  Status poll_shipments(bool& active) {
    if (!shipper_ || shipper_->idle()) return Status::Ok();
    for (const auto& done : shipper_->poll()) {
      active = true;
      record_shipment(done, metrics_);
      PODSERVE_RETURN_IF_ERROR(
          control_.send(topology_.instances().at(done.decode_instance).first_rank,
                        KvPartDoneMessage{done.id, topology_.tp_rank(), done.ok}));
      PODSERVE_RETURN_IF_ERROR(prefill_->on_part_done(done.id));
    }
    return Status::Ok();
  }

  Status stop() {
    const auto load = engine_.load();
    const std::size_t held =
        (decode_ ? decode_->num_waiting_for_kv() : 0) + (prefill_ ? prefill_->num_held() : 0);
    if (load.running + load.waiting > 0 || held > 0) {
      spdlog::warn("shutting down with {} requests still held",
                   load.running + load.waiting + (decode_ ? decode_->num_waiting_for_kv() : 0));
    }
    if (has_peers_) {
      BatchPlan stop_plan;
      stop_plan.shutdown = true;
      PODSERVE_RETURN_IF_ERROR(broadcast_plan(topology_.instance_comm(), stop_plan));
    }
    PODSERVE_RETURN_IF_ERROR(control_.send(kRouterRank, ShutdownDoneMessage{}));
    return control_.flush();
  }

  const Topology& topology_;
  const ServiceConfig& config_;
  Engine& engine_;
  ColocatedEngine* const colocated_;  // colocated role only
  InstanceMetrics& metrics_;
  ControlEndpoint control_;
  ControlOutbox outbox_;
  const InstanceRole role_;
  const bool has_peers_;
  KvFabric* const fabric_;
  std::optional<PrefillSide> prefill_;  // prefill role
  std::optional<DecodeSide> decode_;    // decode role
  std::optional<KvShipper> shipper_;    // prefill role
  InstanceLoad reported_load_;
  std::int64_t reported_preemptions_ = 0;
  std::int64_t reported_fallbacks_ = 0;
  bool shutdown_ = false;
};

// A TP peer: executes every plan its leader broadcasts until the shutdown plan; on a prefill
// instance it also ships its share of each finished prompt's KV and reports it.
Status run_peer(const Topology& topology, const ServiceConfig& config, Engine& engine,
                InstanceMetrics& metrics, KvFabric* fabric) {
  PlanReceiver receiver(topology.instance_comm());
  ControlEndpoint control(topology.control_comm());
  std::optional<KvShipper> shipper;
  const bool prefill = topology.instance().role == InstanceRole::kPrefill;
  if (prefill) {
    shipper.emplace(*fabric, kv_shipper_options(topology, config, engine.model().config(),
                                                engine.model().kv_cache(0).dtype));
  }
  const bool layerwise = prefill && config.kv_transfer.layerwise;
  IdleBackoff backoff(50, 5000);
  const int leader = topology.instance().first_rank;
  while (true) {
    bool active = false;
    PODSERVE_ASSIGN_OR_RETURN(auto plan, receiver.try_receive());
    if (plan) {
      if (plan->shutdown) return control.flush();
      active = true;
      const auto start = std::chrono::steady_clock::now();
      if (fabric != nullptr) PODSERVE_RETURN_IF_ERROR(fabric->deliver(plan->deliver_pages));
      const auto after_layer = [&](std::int32_t layer) -> Status {
        for (const auto& shipment : plan->shipments)
          PODSERVE_RETURN_IF_ERROR(shipper->post(shipment, layer));
        return Status::Ok();
      };
      PODSERVE_RETURN_IF_ERROR(layerwise ? engine.execute_peer(*plan, after_layer)
                                         : engine.execute_peer(*plan, {}));
      if (prefill && !layerwise) {
        for (const auto& shipment : plan->shipments)
          PODSERVE_RETURN_IF_ERROR(shipper->post(shipment, std::nullopt));
      }
      StepStats stats;
      stats.num_prefill_tokens = plan->num_prefill_tokens();
      stats.num_decode_tokens = plan->num_decode_tokens();
      metrics.iteration_seconds(batch_kind(stats))
          .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      metrics.batch_tokens.Observe(plan->total_new_tokens());
      metrics.attention_seconds.Observe(engine.model().attention_seconds());
    }
    if (shipper && !shipper->idle()) {
      for (const auto& done : shipper->poll()) {
        active = true;
        record_shipment(done, metrics);
        const KvPartDoneMessage part{done.id, topology.tp_rank(), done.ok};
        const int decode_leader = topology.instances().at(done.decode_instance).first_rank;
        PODSERVE_RETURN_IF_ERROR(control.send(decode_leader, part));
        PODSERVE_RETURN_IF_ERROR(control.send(leader, part));
      }
    }
    if (fabric != nullptr && fabric->progress()) active = true;
    PODSERVE_ASSIGN_OR_RETURN(const auto pending_sends, control.progress());
    if (active || pending_sends > 0) {
      backoff.reset();
    } else {
      backoff.sleep();
    }
  }
}

}  // namespace

Status run_instance_rank(const Topology& topology, const ServiceConfig& config,
                         const ModelConfig& model) {
  PODSERVE_ASSIGN_OR_RETURN(auto metrics_server, start_rank_metrics(topology, config));
  const MetricsIdentity identity = rank_metrics_identity(topology, config);
  auto metrics = make_instance_metrics(metrics_server->registry(), identity);

  PODSERVE_ASSIGN_OR_RETURN(const auto backend_kind,
                            choose_backend(config, model, topology.instance().tp));
  PODSERVE_ASSIGN_OR_RETURN(const auto attention,
                            choose_attention(config.scheduler.attention, backend_kind));
  PODSERVE_ASSIGN_OR_RETURN(auto backend, make_backend(backend_kind, topology.device_index()));
  PODSERVE_ASSIGN_OR_RETURN(auto communicator,
                            make_tensor_parallel_communicator(topology, *backend));
  const int tp = topology.instance().tp;

  ModelOptions options;
  options.page_size = config.kv_cache.page_size;
  options.attention = attention;
  options.graphs = config.engine.cuda_graphs;
  options.small_batch_kernels = config.engine.small_batch_kernels;
  options.max_graph_batch = config.engine.max_graph_batch > 0
                                ? config.engine.max_graph_batch
                                : std::min(config.scheduler.max_running, 256);
  options.max_context = model.max_position_embeddings;
  options.num_pages = config.kv_cache.num_pages;
  if (options.num_pages == 0) {
    PODSERVE_ASSIGN_OR_RETURN(const std::size_t kv_bytes,
                              kv_cache_budget(config, model, tp, *backend));
    options.num_pages = LlamaModel::pages_that_fit(model, tp, kv_bytes, options.page_size,
                                                   backend->compute_dtype());
  }
  // The KV fabric (disaggregated mode) comes first: on a host backend the KV cache lives in
  // transport memory, which shared-memory peers write in one copy.
  PODSERVE_ASSIGN_OR_RETURN(
      auto fabric,
      open_kv_fabric(topology, config,
                     backend_kind == BackendKind::kCpu ? MemoryKind::kHost : MemoryKind::kDevice,
                     topology.device_index(), backend->native_stream()));
  if (fabric) {
    publish_kv_transport(metrics_server->registry(), identity, fabric->transport().name());
  }
  if (fabric && backend_kind == BackendKind::kCpu)
    options.kv_cache_allocator = fabric->kv_cache_allocator();
  PODSERVE_ASSIGN_OR_RETURN(auto weights,
                            open_weight_source(config.model.weights, config.model.seed));
  const auto load_start = std::chrono::steady_clock::now();
  PODSERVE_ASSIGN_OR_RETURN(auto llama,
                            LlamaModel::create(model, *weights, *backend, *communicator, options));
  if (topology.is_leader()) {
    spdlog::info(
        "instance {} ({}, tp={}) on {}: weights {} loaded in {:.1f} s, {} KV pages of {} tokens",
        topology.instance_id(), to_string(topology.instance().role), tp, backend->name(),
        weights->describe(),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count(),
        options.num_pages, options.page_size);
  }
  EngineOptions engine_options;
  engine_options.token_budget = config.scheduler.token_budget;
  engine_options.max_running = config.scheduler.max_running;
  engine_options.max_model_len = model.max_position_embeddings;
  LlamaModel& model_ref = *llama;
  PODSERVE_ASSIGN_OR_RETURN(auto role_engine, make_role_engine(topology.instance().role,
                                                               std::move(llama), engine_options));
  // Collective over every rank (the router joins with nothing to offer).
  std::vector<KvCacheView> kv_layers;
  if (fabric) {
    for (std::int32_t layer = 0; layer < model.num_layers; ++layer)
      kv_layers.push_back(model_ref.kv_cache(layer));
  }
  PODSERVE_RETURN_IF_ERROR(exchange_kv_fabric(fabric.get(), topology, config, kv_layers));

  Status status;
  if (topology.is_leader()) {
    Leader leader(topology, config, role_engine, metrics, fabric.get());
    status = leader.run();
  } else {
    status = run_peer(topology, config, *role_engine.engine, metrics, fabric.get());
  }
  if (status.ok()) spdlog::info("stopped cleanly");
  return status;
}

}  // namespace podserve
