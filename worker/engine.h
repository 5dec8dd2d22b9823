// Engine: the body of an instance leader's iteration loop, typed by role: ColocatedEngine
// (hybrid batches), PrefillEngine (prefill-only; requests leave after their first token and
// retain their KV pages for shipping) or DecodeEngine (decode-only; requests arrive as page
// reservations and are activated once their KV arrived, or fall back to a local prefill). Each
// owns its role's scheduler (worker/scheduler.h) and this rank's model, and offers only its
// role's operations, so a call of another role's does not compile: submit (colocated,
// prefill), retained_pages / release_retained (prefill), reserve / activate_* /
// release_reservation / is_reserved (decode). The Engine base holds what every role shares:
// cancel, then step() repeatedly: schedule a batch plan, hand it to `before_forward` (the
// cluster broadcasts it to the TP peers there), run the forward pass (calling `after_layer`
// after each layer), sample one token per sampling sequence (kernels/sampler.h, seeded per
// request and generated index, so recompute after preemption and a decode instance continuing
// a prefill instance's request reproduce the same tokens), and return the token outputs, the
// prefill completions (prefill role) and the iteration's statistics. Non-leader TP ranks hold
// an engine of their instance's role too and call execute_peer() with each broadcast plan.
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
  double attention_seconds = 0.0;  // attention within the forward pass (all layers; 0 in graphs)
  bool graph = false;              // the forward pass replayed a captured graph
};

struct StepResult {
  std::vector<TokenOutput> outputs;  // sampled tokens and finishes (aborts included)
  // Prefill role: requests whose prompt completed this step, in plan order; their pages are
  // retained until release_retained().
  std::vector<PrefillCompletion> prefill_completions;
  StepStats stats;
};

class Engine {
 public:
  virtual ~Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Aborts a request; its final output (kAbort) comes with the next step(). Unknown ids
  // (already finished) are ignored. Prefill role: a request whose prefill completed keeps its
  // retained pages. Decode role: a reservation is only marked cancelled (its pages stay held
  // until release_reservation() or an activation).
  void cancel(RequestId id);
  // True while requests wait or run, or abort outputs wait to be reported. Retained pages and
  // reservations are no work.
  bool has_work() const;
  // One iteration. An iteration with nothing to compute calls neither callback nor the model
  // and returns only pending abort outputs. `before_forward` may add to the plan what the TP
  // peers need besides the work (e.g. KV shipments); it must not change the work.
  using PlanCallback = std::function<Status(BatchPlan&)>;
  using LayerCallback = LlamaModel::LayerCallback;
  Result<StepResult> step(const PlanCallback& before_forward,
                          const LayerCallback& after_layer = {});
  // A TP peer's part of one iteration: the forward pass of the leader's plan (the collectives,
  // no sampling).
  Status execute_peer(const BatchPlan& plan, const LayerCallback& after_layer = {});

  InstanceLoad load() const { return scheduler_->load(); }
  InstanceRole role() const { return role_; }
  const SchedulerBase& scheduler() const { return *scheduler_; }
  LlamaModel& model() { return *model_; }

 protected:
  Engine(std::unique_ptr<LlamaModel> model, std::unique_ptr<SchedulerBase> scheduler,
         InstanceRole role);
  // The scheduler configuration for `model` (page pool and page size from its options);
  // kInvalidArgument without a model or for an invalid configuration.
  static Result<SchedulerConfig> scheduler_config(const LlamaModel* model,
                                                  const EngineOptions& options);
  // kInvalidArgument for prompt tokens (or a first token) outside the vocabulary.
  Status check_tokens(const GenerationRequest& request, TokenId first_token) const;
  // Role hook at the end of a step that ran the model.
  virtual void finish_step(StepResult&) {}
  SchedulerBase& mutable_scheduler() { return *scheduler_; }

 private:
  std::unique_ptr<LlamaModel> model_;
  InstanceRole role_;
  std::unique_ptr<SchedulerBase> scheduler_;
  std::vector<TokenOutput> pending_aborts_;
};

// Sarathi-Serve hybrid batches (ColocatedScheduler).
class ColocatedEngine final : public Engine {
 public:
  static Result<std::unique_ptr<ColocatedEngine>> create(std::unique_ptr<LlamaModel> model,
                                                         const EngineOptions& options);
  // Queues a request. kInvalidArgument for bad ids/prompts (tokens outside the vocabulary,
  // empty, too long) or a duplicate id.
  Status submit(GenerationRequest request);

 private:
  ColocatedEngine(std::unique_ptr<LlamaModel> model, const SchedulerConfig& config);
  ColocatedScheduler& colocated_scheduler_;
};

// Prefill-only batches (PrefillScheduler): a request leaves after its first token; its pages
// are retained (the source of its KV shipment) until release_retained().
class PrefillEngine final : public Engine {
 public:
  static Result<std::unique_ptr<PrefillEngine>> create(std::unique_ptr<LlamaModel> model,
                                                       const EngineOptions& options);
  // As ColocatedEngine::submit.
  Status submit(GenerationRequest request);
  // Retained pages of a request whose prefill completed (position order; empty when none), and
  // their release once its KV shipment is final (kNotFound when it retains none).
  std::vector<std::int32_t> retained_pages(RequestId id) const;
  Status release_retained(RequestId id);

 private:
  PrefillEngine(std::unique_ptr<LlamaModel> model, const SchedulerConfig& config);
  void finish_step(StepResult& result) override;
  PrefillScheduler& prefill_scheduler_;
};

// Decode-only continuous batching (DecodeScheduler): requests arrive as reservations.
class DecodeEngine final : public Engine {
 public:
  static Result<std::unique_ptr<DecodeEngine>> create(std::unique_ptr<LlamaModel> model,
                                                      const EngineOptions& options);
  // As DecodeScheduler's; activations check the prompt and first token against the vocabulary.
  Result<std::vector<std::int32_t>> reserve(RequestId id, std::int32_t prompt_tokens);
  Status activate_prefilled(GenerationRequest request, TokenId first_token);
  Status activate_fallback(GenerationRequest request, TokenId first_token);
  Status release_reservation(RequestId id);
  bool is_reserved(RequestId id) const;

 private:
  DecodeEngine(std::unique_ptr<LlamaModel> model, const SchedulerConfig& config);
  DecodeScheduler& decode_scheduler_;
};

}  // namespace podserve
