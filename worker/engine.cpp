#include "worker/engine.h"

#include <fmt/format.h>

#include <chrono>

namespace podserve {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

Status wrong_role(std::string_view method, InstanceRole needed) {
  return invalid_argument(fmt::format("Engine::{} needs the {} role", method, to_string(needed)));
}

}  // namespace

Engine::Engine(std::unique_ptr<LlamaModel> model, const SchedulerConfig& config, InstanceRole role)
    : model_(std::move(model)), role_(role) {
  switch (role) {
    case InstanceRole::kColocated: scheduler_ = std::make_unique<ColocatedScheduler>(config); break;
    case InstanceRole::kPrefill: {
      auto prefill = std::make_unique<PrefillScheduler>(config);
      prefill_scheduler_ = prefill.get();
      scheduler_ = std::move(prefill);
      break;
    }
    case InstanceRole::kDecode: {
      auto decode = std::make_unique<DecodeScheduler>(config);
      decode_scheduler_ = decode.get();
      scheduler_ = std::move(decode);
      break;
    }
  }
}

Result<std::unique_ptr<Engine>> Engine::create(std::unique_ptr<LlamaModel> model,
                                               const EngineOptions& options) {
  if (model == nullptr) return invalid_argument("Engine needs a model");
  const ModelConfig& mc = model->config();
  SchedulerConfig config;
  config.token_budget = options.token_budget;
  config.max_running = options.max_running;
  config.page_size = model->options().page_size;
  config.num_pages = model->options().num_pages;
  config.max_model_len =
      options.max_model_len > 0 ? options.max_model_len : mc.max_position_embeddings;
  config.eos_token_ids = mc.stop_token_ids();
  PODSERVE_RETURN_IF_ERROR(config.validate());
  return std::unique_ptr<Engine>(new Engine(std::move(model), config, options.role));
}

Status Engine::check_tokens(const GenerationRequest& request, TokenId first_token) const {
  const std::int32_t vocab = model_->config().vocab_size;
  for (TokenId token : request.prompt) {
    if (token < 0 || token >= vocab) {
      return invalid_argument(fmt::format("request {}: token {} outside the vocabulary of {}",
                                          request.id, token, vocab));
    }
  }
  if (first_token != TokenOutput::kNoToken && (first_token < 0 || first_token >= vocab)) {
    return invalid_argument(fmt::format("request {}: first token {} outside the vocabulary of {}",
                                        request.id, first_token, vocab));
  }
  return Status::Ok();
}

Status Engine::submit(GenerationRequest request) {
  if (role_ == InstanceRole::kDecode) {
    return invalid_argument(fmt::format(
        "request {}: a decode instance takes requests through reserve/activate", request.id));
  }
  PODSERVE_RETURN_IF_ERROR(check_tokens(request, TokenOutput::kNoToken));
  return scheduler_->add(std::move(request));
}

void Engine::cancel(RequestId id) {
  if (auto out = scheduler_->abort(id)) pending_aborts_.push_back(*out);
}

bool Engine::has_work() const { return scheduler_->has_unfinished() || !pending_aborts_.empty(); }

Result<StepResult> Engine::step(const PlanCallback& before_forward,
                                const LayerCallback& after_layer) {
  const auto start = std::chrono::steady_clock::now();
  StepResult result;
  result.outputs = std::move(pending_aborts_);
  pending_aborts_.clear();

  BatchPlan plan = scheduler_->schedule();
  result.stats.iteration = plan.iteration;
  if (plan.empty()) {
    result.stats.iteration_seconds = seconds_since(start);
    return result;
  }
  result.stats.num_sequences = static_cast<std::int32_t>(plan.sequences.size());
  result.stats.num_prefill_tokens = plan.num_prefill_tokens();
  result.stats.num_decode_tokens = plan.num_decode_tokens();
  if (before_forward) PODSERVE_RETURN_IF_ERROR(before_forward(plan));

  std::vector<SamplingRow> rows;  // one per sampled sequence, in plan order
  for (const SequenceWork& work : plan.sequences) {
    if (!work.sample) continue;
    const Sequence* seq = scheduler_->find(work.seq_id);
    SamplingRow row;
    row.temperature = seq->request.sampling.temperature;
    row.top_p = seq->request.sampling.top_p;
    row.seed = seq->request.sampling.seed;
    row.generated_index = seq->num_generated;
    rows.push_back(row);
  }
  const auto forward_start = std::chrono::steady_clock::now();
  PODSERVE_ASSIGN_OR_RETURN(const std::vector<TokenId> sampled,
                            model_->forward(plan, rows, after_layer));
  result.stats.forward_seconds = seconds_since(forward_start);
  result.stats.attention_seconds = model_->attention_seconds();
  result.stats.graph = model_->last_step_used_graph();
  for (std::size_t i = 0; i < sampled.size(); ++i) {
    if (sampled[i] < 0) {
      return internal_error(fmt::format(
          "plan {}: no token could be sampled for row {} (NaN logits)", plan.iteration, i));
    }
  }
  PODSERVE_ASSIGN_OR_RETURN(std::vector<TokenOutput> outputs,
                            scheduler_->on_step_done(plan, sampled));
  result.outputs.insert(result.outputs.end(), outputs.begin(), outputs.end());
  if (prefill_scheduler_ != nullptr)
    result.prefill_completions = prefill_scheduler_->take_completions();
  result.stats.iteration_seconds = seconds_since(start);
  return result;
}

Status Engine::execute_peer(const BatchPlan& plan, const LayerCallback& after_layer) {
  return model_->forward(plan, {}, after_layer).status();
}

std::vector<std::int32_t> Engine::retained_pages(RequestId id) const {
  return prefill_scheduler_ != nullptr ? prefill_scheduler_->retained_pages(id)
                                       : std::vector<std::int32_t>{};
}

Status Engine::release_retained(RequestId id) {
  if (prefill_scheduler_ == nullptr) return wrong_role("release_retained", InstanceRole::kPrefill);
  return prefill_scheduler_->release_retained(id);
}

Result<std::vector<std::int32_t>> Engine::reserve(RequestId id, std::int32_t prompt_tokens) {
  if (decode_scheduler_ == nullptr) return wrong_role("reserve", InstanceRole::kDecode);
  return decode_scheduler_->reserve(id, prompt_tokens);
}

Status Engine::activate_prefilled(GenerationRequest request, TokenId first_token) {
  if (decode_scheduler_ == nullptr) return wrong_role("activate_prefilled", InstanceRole::kDecode);
  PODSERVE_RETURN_IF_ERROR(check_tokens(request, first_token));
  return decode_scheduler_->activate_prefilled(std::move(request), first_token);
}

Status Engine::activate_fallback(GenerationRequest request, TokenId first_token) {
  if (decode_scheduler_ == nullptr) return wrong_role("activate_fallback", InstanceRole::kDecode);
  PODSERVE_RETURN_IF_ERROR(check_tokens(request, first_token));
  return decode_scheduler_->activate_fallback(std::move(request), first_token);
}

Status Engine::release_reservation(RequestId id) {
  if (decode_scheduler_ == nullptr) return wrong_role("release_reservation", InstanceRole::kDecode);
  return decode_scheduler_->release_reservation(id);
}

bool Engine::is_reserved(RequestId id) const {
  return decode_scheduler_ != nullptr && decode_scheduler_->is_reserved(id);
}

}  // namespace podserve
