// Engine: the body of an instance leader's iteration loop, in one of three roles
// (EngineOptions.role): colocated (hybrid batches), prefill (prefill-only; requests leave after
// their first token and retain their KV pages for shipping) or decode (decode-only; requests
// arrive as page reservations and are activated once their KV arrived, or fall back to a
// local prefill). It owns the role's scheduler (worker/scheduler.h) and this rank's model:
// submit/cancel requests (or reserve/activate/release in the decode role), then step()
// repeatedly: schedule a batch plan, hand it to `before_forward` (the cluster broadcasts it to
// the TP peers there), run the forward pass (calling `after_layer` after each layer), sample one
// token per sampling sequence (kernels/sampler.h, seeded per request and generated index, so
// recompute after preemption and a decode instance continuing a prefill instance's request
// reproduce the same tokens), and return the token outputs, the prefill completions (prefill
// role) and the iteration's statistics. Non-leader TP ranks hold an Engine too and call
// execute_peer() with each broadcast plan.
//
// Contract: single-threaded (the leader's loop calls every method); errors from the model or a
// callback are returned as Status and leave the instance unusable (the caller shuts it down).
// A method of another role returns kInvalidArgument (or nothing) and changes nothing.
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
  InstanceRole role = InstanceRole::kColocated;
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
  // Takes the model; page pool size and page size come from the model's options.
  static Result<std::unique_ptr<Engine>> create(std::unique_ptr<LlamaModel> model,
                                                const EngineOptions& options);

  // Queues a request (colocated and prefill roles). kInvalidArgument for bad ids/prompts
  // (tokens outside the vocabulary, empty, too long), a duplicate id, or the decode role.
  Status submit(GenerationRequest request);
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

  // Prefill role (PrefillScheduler): retained pages of a request whose prefill completed, and
  // their release once its KV shipment is final. Other roles: empty / kInvalidArgument.
  std::vector<std::int32_t> retained_pages(RequestId id) const;
  Status release_retained(RequestId id);

  // Decode role (DecodeScheduler); other roles: kInvalidArgument / false. Tokens are checked
  // against the vocabulary.
  Result<std::vector<std::int32_t>> reserve(RequestId id, std::int32_t prompt_tokens);
  Status activate_prefilled(GenerationRequest request, TokenId first_token);
  Status activate_fallback(GenerationRequest request, TokenId first_token);
  Status release_reservation(RequestId id);
  bool is_reserved(RequestId id) const;

  InstanceLoad load() const { return scheduler_->load(); }
  InstanceRole role() const { return role_; }
  const SchedulerBase& scheduler() const { return *scheduler_; }
  LlamaModel& model() { return *model_; }

 private:
  Engine(std::unique_ptr<LlamaModel> model, const SchedulerConfig& config, InstanceRole role);
  Status check_tokens(const GenerationRequest& request, TokenId first_token) const;

  std::unique_ptr<LlamaModel> model_;
  InstanceRole role_;
  std::unique_ptr<SchedulerBase> scheduler_;
  PrefillScheduler* prefill_scheduler_ = nullptr;  // scheduler_ in the prefill role
  DecodeScheduler* decode_scheduler_ = nullptr;    // scheduler_ in the decode role
  std::vector<TokenOutput> pending_aborts_;
};

}  // namespace podserve
