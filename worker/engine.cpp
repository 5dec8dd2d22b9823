#include "worker/engine.h"

#include <fmt/format.h>

#include <chrono>

#include "kernels/sampler.h"

namespace podserve {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Engine::Engine(std::unique_ptr<LlamaModel> model, const SchedulerConfig& config)
    : model_(std::move(model)), scheduler_(config) {}

Result<std::unique_ptr<Engine>> Engine::create(std::unique_ptr<LlamaModel> model,
                                               const EngineOptions& options) {
  if (model == nullptr) return invalid_argument("Engine needs a model");
  const ModelConfig& mc = model->config();
  SchedulerConfig config;
  config.token_budget = options.token_budget;
  config.max_running = options.max_running;
  config.page_size = model->options().page_size;
  config.num_pages = model->options().num_pages;
  config.max_model_len = options.max_model_len > 0 ? options.max_model_len : mc.max_position_embeddings;
  config.eos_token_id = mc.eos_token_id;
  PODSERVE_RETURN_IF_ERROR(config.validate());
  return std::unique_ptr<Engine>(new Engine(std::move(model), config));
}

Status Engine::submit(GenerationRequest request) {
  const std::int32_t vocab = model_->config().vocab_size;
  for (TokenId token : request.prompt) {
    if (token < 0 || token >= vocab) {
      return invalid_argument(fmt::format("request {}: token {} outside the vocabulary of {}",
                                          request.id, token, vocab));
    }
  }
  return scheduler_.add(std::move(request));
}

void Engine::cancel(RequestId id) {
  if (auto out = scheduler_.abort(id)) pending_aborts_.push_back(*out);
}

bool Engine::has_work() const { return scheduler_.has_unfinished() || !pending_aborts_.empty(); }

Result<StepResult> Engine::step(const PlanCallback& before_forward) {
  const auto start = std::chrono::steady_clock::now();
  StepResult result;
  result.outputs = std::move(pending_aborts_);
  pending_aborts_.clear();

  BatchPlan plan = scheduler_.schedule();
  result.stats.iteration = plan.iteration;
  if (plan.empty()) {
    result.stats.iteration_seconds = seconds_since(start);
    return result;
  }
  result.stats.num_sequences = static_cast<std::int32_t>(plan.sequences.size());
  result.stats.num_prefill_tokens = plan.num_prefill_tokens();
  result.stats.num_decode_tokens = plan.num_decode_tokens();
  if (before_forward) PODSERVE_RETURN_IF_ERROR(before_forward(plan));

  const auto forward_start = std::chrono::steady_clock::now();
  PODSERVE_ASSIGN_OR_RETURN(const std::vector<float> logits, model_->forward(plan));
  result.stats.forward_seconds = seconds_since(forward_start);

  const auto vocab = static_cast<std::size_t>(model_->config().vocab_size);
  std::vector<TokenId> sampled;
  for (const SequenceWork& work : plan.sequences) {
    if (!work.sample) continue;
    const Sequence* seq = scheduler_.find(work.seq_id);
    const std::span<const float> row(logits.data() + sampled.size() * vocab, vocab);
    const TokenId token = sample_token(row, seq->request.sampling, seq->num_generated);
    if (token < 0) {
      return internal_error(fmt::format("request {}: no token could be sampled (NaN logits)", work.seq_id));
    }
    sampled.push_back(token);
  }
  PODSERVE_ASSIGN_OR_RETURN(std::vector<TokenOutput> outputs, scheduler_.on_step_done(plan, sampled));
  result.outputs.insert(result.outputs.end(), outputs.begin(), outputs.end());
  result.stats.iteration_seconds = seconds_since(start);
  return result;
}

Status Engine::execute_peer(const BatchPlan& plan) {
  PODSERVE_ASSIGN_OR_RETURN(const std::vector<float> logits, model_->forward(plan));
  (void)logits;
  return Status::Ok();
}

}  // namespace podserve
