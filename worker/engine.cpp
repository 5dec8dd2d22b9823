#include "worker/engine.h"

#include <fmt/format.h>

#include <chrono>

namespace podserve {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Engine::Engine(std::unique_ptr<LlamaModel> model, std::unique_ptr<SchedulerBase> scheduler,
               InstanceRole role)
    : model_(std::move(model)), role_(role), scheduler_(std::move(scheduler)) {}

Result<SchedulerConfig> Engine::scheduler_config(const LlamaModel* model,
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
  return config;
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
  finish_step(result);
  result.stats.iteration_seconds = seconds_since(start);
  return result;
}

Status Engine::execute_peer(const BatchPlan& plan, const LayerCallback& after_layer) {
  return model_->forward(plan, {}, after_layer).status();
}

Result<std::unique_ptr<ColocatedEngine>> ColocatedEngine::create(std::unique_ptr<LlamaModel> model,
                                                                 const EngineOptions& options) {
  PODSERVE_ASSIGN_OR_RETURN(const SchedulerConfig config, scheduler_config(model.get(), options));
  return std::unique_ptr<ColocatedEngine>(new ColocatedEngine(std::move(model), config));
}

ColocatedEngine::ColocatedEngine(std::unique_ptr<LlamaModel> model, const SchedulerConfig& config)
    : Engine(std::move(model), std::make_unique<ColocatedScheduler>(config),
             InstanceRole::kColocated),
      colocated_scheduler_(static_cast<ColocatedScheduler&>(mutable_scheduler())) {}

Status ColocatedEngine::submit(GenerationRequest request) {
  PODSERVE_RETURN_IF_ERROR(check_tokens(request, TokenOutput::kNoToken));
  return colocated_scheduler_.add(std::move(request));
}

Result<std::unique_ptr<PrefillEngine>> PrefillEngine::create(std::unique_ptr<LlamaModel> model,
                                                             const EngineOptions& options) {
  PODSERVE_ASSIGN_OR_RETURN(const SchedulerConfig config, scheduler_config(model.get(), options));
  return std::unique_ptr<PrefillEngine>(new PrefillEngine(std::move(model), config));
}

PrefillEngine::PrefillEngine(std::unique_ptr<LlamaModel> model, const SchedulerConfig& config)
    : Engine(std::move(model), std::make_unique<PrefillScheduler>(config), InstanceRole::kPrefill),
      prefill_scheduler_(static_cast<PrefillScheduler&>(mutable_scheduler())) {}

Status PrefillEngine::submit(GenerationRequest request) {
  PODSERVE_RETURN_IF_ERROR(check_tokens(request, TokenOutput::kNoToken));
  return prefill_scheduler_.add(std::move(request));
}

void PrefillEngine::finish_step(StepResult& result) {
  result.prefill_completions = prefill_scheduler_.take_completions();
}

std::vector<std::int32_t> PrefillEngine::retained_pages(RequestId id) const {
  return prefill_scheduler_.retained_pages(id);
}

Status PrefillEngine::release_retained(RequestId id) {
  return prefill_scheduler_.release_retained(id);
}

Result<std::unique_ptr<DecodeEngine>> DecodeEngine::create(std::unique_ptr<LlamaModel> model,
                                                           const EngineOptions& options) {
  PODSERVE_ASSIGN_OR_RETURN(const SchedulerConfig config, scheduler_config(model.get(), options));
  return std::unique_ptr<DecodeEngine>(new DecodeEngine(std::move(model), config));
}

DecodeEngine::DecodeEngine(std::unique_ptr<LlamaModel> model, const SchedulerConfig& config)
    : Engine(std::move(model), std::make_unique<DecodeScheduler>(config), InstanceRole::kDecode),
      decode_scheduler_(static_cast<DecodeScheduler&>(mutable_scheduler())) {}

Result<std::vector<std::int32_t>> DecodeEngine::reserve(RequestId id, std::int32_t prompt_tokens) {
  return decode_scheduler_.reserve(id, prompt_tokens);
}

Status DecodeEngine::activate_prefilled(GenerationRequest request, TokenId first_token) {
  PODSERVE_RETURN_IF_ERROR(check_tokens(request, first_token));
  return decode_scheduler_.activate_prefilled(std::move(request), first_token);
}

Status DecodeEngine::activate_fallback(GenerationRequest request, TokenId first_token) {
  PODSERVE_RETURN_IF_ERROR(check_tokens(request, first_token));
  return decode_scheduler_.activate_fallback(std::move(request), first_token);
}

Status DecodeEngine::release_reservation(RequestId id) {
  return decode_scheduler_.release_reservation(id);
}

bool DecodeEngine::is_reserved(RequestId id) const { return decode_scheduler_.is_reserved(id); }

}  // namespace podserve
