#include "sim/simulator.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>

#include "router/policy.h"
#include "worker/model.h"
#include "worker/scheduler.h"

namespace podserve::sim {
namespace {

// Router-side bookkeeping of one request (router/router.cpp accept_output_locked, colocated).
struct RequestState {
  std::int32_t instance = -1;
  std::int64_t outstanding_tokens = 0;
  bool first_output_seen = false;
  double last_token_s = 0.0;
};

struct InstanceState {
  std::unique_ptr<ColocatedScheduler> scheduler;
  const CostProfile* profile = nullptr;
  std::optional<BatchPlan> plan;  // the iteration in flight
  double busy_until_s = 0.0;
};

}  // namespace

BatchKind batch_kind_of(const BatchFeatures& features) {
  if (features.prefill_tokens > 0 && features.num_decodes > 0) return BatchKind::kHybrid;
  return features.prefill_tokens > 0 ? BatchKind::kPrefill : BatchKind::kDecode;
}

Result<SimOptions> sim_options_from_config(const ServiceConfig& config, const ModelConfig& model) {
  if (config.scheduler.mode != SchedulerMode::kColocated) {
    return invalid_argument("podserve-sim models colocated mode only (scheduler.mode: colocated)");
  }
  if (config.kv_cache.num_pages == 0 && config.backend != BackendChoice::kCpu) {
    return invalid_argument(
        "kv_cache.num_pages must be set for a simulated GPU deployment (the service derives it "
        "from the free GPU memory, which the simulator does not know)");
  }
  SimOptions options;
  for (const InstanceGroup& group : config.instances) {
    // cluster/instance_rank.cpp: the configured count, else cpu_memory_mb per rank (fp32).
    const std::int32_t num_pages =
        config.kv_cache.num_pages > 0
            ? config.kv_cache.num_pages
            : LlamaModel::pages_that_fit(
                  model, group.tp, static_cast<std::size_t>(config.kv_cache.cpu_memory_mb) << 20,
                  config.kv_cache.page_size, DType::kF32);
    for (std::int32_t i = 0; i < group.count; ++i) {
      options.instances.push_back(SimInstance{.tp = group.tp, .num_pages = num_pages});
    }
  }
  options.token_budget = config.scheduler.token_budget;
  options.max_running = config.scheduler.max_running;
  options.page_size = config.kv_cache.page_size;
  options.max_model_len = model.max_position_embeddings;
  options.policy = config.router.policy;
  return options;
}

Result<SimResult> simulate(const SimOptions& options, const std::vector<SimRequest>& requests) {
  std::vector<InstanceInfo> infos;
  std::vector<InstanceState> instances;
  for (std::size_t i = 0; i < options.instances.size(); ++i) {
    const SimInstance& instance = options.instances[i];
    const auto profile = options.profiles.find(instance.tp);
    if (profile == options.profiles.end()) {
      return invalid_argument(
          fmt::format("no cost profile for tp {} (instance {})", instance.tp, i));
    }
    SchedulerConfig config{.token_budget = options.token_budget,
                           .max_running = options.max_running,
                           .page_size = options.page_size,
                           .num_pages = instance.num_pages,
                           .max_model_len = options.max_model_len};
    PODSERVE_RETURN_IF_ERROR(config.validate());
    InstanceState state;
    state.scheduler = std::make_unique<ColocatedScheduler>(config);
    state.profile = &profile->second;
    instances.push_back(std::move(state));
    infos.push_back(InstanceInfo{.id = static_cast<int>(i), .tp = instance.tp});
  }
  if (instances.empty()) return invalid_argument("no instances to simulate");
  for (std::size_t i = 1; i < requests.size(); ++i) {
    if (requests[i].arrival_s < requests[i - 1].arrival_s) {
      return invalid_argument(fmt::format("request {} arrives before request {}", i, i - 1));
    }
  }
  LoadBalancer balancer(options.policy, infos, options.page_size);
  for (std::size_t i = 0; i < instances.size(); ++i) {
    balancer.update_load(static_cast<int>(i), instances[i].scheduler->load());
  }

  SimResult result;
  result.requests.resize(requests.size());
  std::vector<RequestState> states(requests.size());
  double now = 0.0;
  const auto advance = [&](double t) {
    if (t < now) result.clock_monotonic = false;
    now = t;
  };
  // Starts the next iteration of an idle instance that has work.
  const auto start_iteration = [&](InstanceState& instance) {
    if (instance.plan || !instance.scheduler->has_unfinished()) return;
    BatchPlan plan = instance.scheduler->schedule();
    if (plan.empty()) return;
    const BatchFeatures features = features_of(plan);
    const double seconds = instance.profile->predict(features);
    IterationTotals& totals =
        result.iterations_by_kind[static_cast<std::size_t>(batch_kind_of(features))];
    ++totals.count;
    totals.seconds += seconds;
    instance.busy_until_s = now + seconds;
    instance.plan = std::move(plan);
    ++result.iterations;
  };

  std::size_t next_arrival = 0;
  std::int64_t in_flight = 0;
  const auto slot_free = [&] {
    return options.concurrency_limit <= 0 || in_flight < options.concurrency_limit;
  };
  while (true) {
    std::size_t ending = instances.size();
    double end_s = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < instances.size(); ++i) {
      if (instances[i].plan && instances[i].busy_until_s < end_s) {
        end_s = instances[i].busy_until_s;
        ending = i;
      }
    }
    // The next request is sent at its arrival time, or now if it waited for a slot.
    const double arrival_s = next_arrival < requests.size() && slot_free()
                                 ? std::max(requests[next_arrival].arrival_s, now)
                                 : std::numeric_limits<double>::infinity();
    if (ending == instances.size() && next_arrival == requests.size()) break;
    if (ending == instances.size() && !slot_free()) {
      return internal_error("the simulator holds requests in flight and no iteration runs");
    }

    if (ending < instances.size() && end_s <= arrival_s) {
      advance(end_s);
      InstanceState& instance = instances[ending];
      const BatchPlan plan = std::move(*instance.plan);
      instance.plan.reset();
      const auto num_sampled = std::count_if(plan.sequences.begin(), plan.sequences.end(),
                                             [](const SequenceWork& w) { return w.sample; });
      // Any token but EOS (requests ignore EOS anyway): they end at their output length.
      const std::vector<TokenId> dummies(static_cast<std::size_t>(num_sampled), 0);
      PODSERVE_ASSIGN_OR_RETURN(const auto outputs,
                                instance.scheduler->on_step_done(plan, dummies));
      for (const TokenOutput& output : outputs) {
        const auto index = static_cast<std::size_t>(output.id);
        RequestState& state = states[index];
        SimRequestResult& out = result.requests[index];
        std::int64_t completed = 1;
        if (!state.first_output_seen) {
          state.first_output_seen = true;
          completed += requests[index].prompt_tokens;
          out.first_token_s = now;
        } else {
          out.itl_s.push_back(now - state.last_token_s);
        }
        state.last_token_s = now;
        ++out.output_tokens;
        completed = std::min(completed, state.outstanding_tokens);
        state.outstanding_tokens -= completed;
        balancer.release(state.instance, completed);
        if (output.finished) {
          out.finished = true;
          out.finish_s = now;
          --in_flight;
          balancer.release(state.instance, state.outstanding_tokens);
          state.outstanding_tokens = 0;
        }
      }
      balancer.update_load(static_cast<int>(ending), instance.scheduler->load());
      start_iteration(instance);
      continue;
    }

    advance(arrival_s);
    const std::size_t index = next_arrival++;
    const SimRequest& request = requests[index];
    const auto picked = balancer.assign(request.prompt_tokens, request.output_tokens);
    if (!picked) return internal_error("the balancer has no candidate instance");
    GenerationRequest generation;
    generation.id = static_cast<RequestId>(index);
    generation.prompt.assign(static_cast<std::size_t>(request.prompt_tokens), 0);
    generation.sampling.max_tokens = request.output_tokens;
    generation.sampling.ignore_eos = true;
    InstanceState& instance = instances[static_cast<std::size_t>(*picked)];
    PODSERVE_RETURN_IF_ERROR(instance.scheduler->add(std::move(generation)));
    states[index] = RequestState{
        .instance = *picked,
        .outstanding_tokens = std::int64_t{request.prompt_tokens} + request.output_tokens};
    result.requests[index].instance = *picked;
    result.requests[index].arrival_s = arrival_s;
    ++in_flight;
    start_iteration(instance);
  }

  result.end_s = now;
  for (const InstanceState& instance : instances) {
    result.preemptions += instance.scheduler->num_preemptions();
    result.pages_in_use_at_end += instance.scheduler->block_manager().used_pages();
  }
  return result;
}

}  // namespace podserve::sim
