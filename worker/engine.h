// Engine: the body of an instance leader's iteration loop (colocated role). It owns the
// scheduler and this rank's model: submit/cancel requests, then step() repeatedly: schedule a
// batch plan, hand it to `before_forward` (the cluster broadcasts it to the TP peers there),
// run the forward pass, sample one token per sampling sequence (kernels/sampler.h, seeded per
// request, so recompute after preemption reproduces the same tokens), and return the token
// outputs with the iteration's statistics. Non-leader TP ranks hold an Engine too and call
// execute_peer() with each broadcast plan.
//
// Contract: single-threaded (the leader's loop calls every method); errors from the model or a
// callback are returned as Status and leave the instance unusable (the caller shuts it down).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/batch_plan.h"
#include "core/request.h"
#include "core/status.h"
#include "worker/model.h"
#include "worker/scheduler.h"

namespace podserve {

struct EngineOptions {
  std::int32_t token_budget = 512;  // new tokens per iteration
  std::int32_t max_running = 64;    // sequences in the running set
  std::int32_t max_model_len = 0;   // 0: the model's max_position_embeddings
};

struct StepStats {
  std::uint64_t iteration = 0;
  std::int32_t num_sequences = 0;
  std::int32_t num_prefill_tokens = 0;
  std::int32_t num_decode_tokens = 0;
  double iteration_seconds = 0.0;  // the whole step: schedule, callback, forward, sampling
  double forward_seconds = 0.0;    // the model's forward pass alone
};

struct StepResult {
  std::vector<TokenOutput> outputs;  // sampled tokens and finishes (aborts included)
  StepStats stats;
};

class Engine {
 public:
  // Takes the model; page pool size and page size come from the model's options.
  static Result<std::unique_ptr<Engine>> create(std::unique_ptr<LlamaModel> model,
                                                const EngineOptions& options);

  // Queues a request. kInvalidArgument for bad ids/prompts (tokens outside the vocabulary,
  // empty, too long) or a duplicate id.
  Status submit(GenerationRequest request);
  // Aborts a waiting or running request; its final output (kAbort) comes with the next step().
  // Unknown ids (already finished) are ignored.
  void cancel(RequestId id);
  // True while requests are held or abort outputs wait to be reported.
  bool has_work() const;
  // One iteration. An iteration with nothing to compute calls neither the callback nor the
  // model and returns only pending abort outputs.
  using PlanCallback = std::function<Status(const BatchPlan&)>;
  Result<StepResult> step(const PlanCallback& before_forward);
  // A TP peer's part of one iteration: the forward pass of the leader's plan, logits dropped.
  Status execute_peer(const BatchPlan& plan);

  InstanceLoad load() const { return scheduler_.load(); }
  const ColocatedScheduler& scheduler() const { return scheduler_; }
  LlamaModel& model() { return *model_; }

 private:
  Engine(std::unique_ptr<LlamaModel> model, const SchedulerConfig& config);

  std::unique_ptr<LlamaModel> model_;
  ColocatedScheduler scheduler_;
  std::vector<TokenOutput> pending_aborts_;
};

}  // namespace podserve
