#include "router/router.h"

#include <fmt/format.h>
#include <httplib.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "core/tokenizer.h"
#include "metrics/http_listen.h"
#include "nlohmann/json.hpp"
#include "router/output_queue.h"
#include "spdlog/spdlog.h"

namespace podserve {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// A stream with no token for this long gets an SSE comment line, so a client that went away is
// noticed (the write fails) even while its request is still queued or prefilling.
constexpr auto kStreamKeepAlive = std::chrono::seconds(2);
// A non-streaming handler re-checks its queue at this period (only matters for wake-ups lost to
// nothing; every finish, including stop(), pushes an output).
constexpr auto kBlockingWaitSlice = std::chrono::seconds(1);
constexpr std::size_t kMaxBodyBytes = 32u << 20;

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_error(httplib::Response& response, const ApiError& error) {
  response.status = error.http_status;
  response.set_content(api_error_body(error), "application/json");
}

ApiError server_error(int status, std::string message, std::string code) {
  return ApiError{.http_status = status,
                  .message = std::move(message),
                  .type = status >= 500 ? "server_error" : "invalid_request_error",
                  .code = std::move(code)};
}

std::pair<std::string, int> split_host_port(const std::string& listen) {
  const std::size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return {listen, -1};
  try {
    return {listen.substr(0, colon), std::stoi(listen.substr(colon + 1))};
  } catch (const std::exception&) {
    return {listen, -1};
  }
}

std::int32_t max_model_len(const ServiceConfig& config, const ModelConfig& model) {
  return config.model.max_model_len > 0 ? config.model.max_model_len
                                        : model.max_position_embeddings;
}

}  // namespace

struct Router::ActiveRequest {
  RequestId id = 0;
  int instance = 0;          // colocated, or the prefill instance of the pair
  int decode_instance = -1;  // disaggregated: the decode instance of the pair
  std::int64_t prompt_tokens = 0;
  TokenId eos_token_id = 0;
  bool chat = false;  // /v1/chat/completions: chat.completion objects instead of text_completion
  Clock::time_point arrival;
  OutputQueue outputs;

  // Guarded by Router::requests_mutex_ (control-plane side).
  bool active = true;
  bool first_output_seen = false;
  bool queue_time_recorded = false;
  std::int64_t outstanding_tokens = 0;                // charged to `instance`
  std::int64_t decode_outstanding_tokens = 0;         // charged to `decode_instance`
  std::int32_t next_index = 0;                        // index of the next token output to deliver
  std::map<std::int32_t, TokenOutput> early_outputs;  // arrived before a lower index

  // Handler thread only.
  std::vector<TokenId> generated;
  Clock::time_point last_token_time;

  // The text of generated[from..]: bytes of the ids, without a final EOS.
  std::string text_from(std::size_t from, std::optional<FinishReason> reason) const {
    std::size_t end = generated.size();
    if (reason == FinishReason::kStop && end > from && generated[end - 1] == eos_token_id) --end;
    if (end <= from) return {};
    return ByteTokenizer::decode(std::span<const TokenId>(generated).subspan(from, end - from));
  }
};

// One slot of router.max_queue, released when the request's handler is done with it.
class Router::Admission {
 public:
  explicit Admission(Router* router) : router_(router) {}
  Admission(Admission&& other) noexcept : router_(std::exchange(other.router_, nullptr)) {}
  Admission& operator=(Admission&&) = delete;
  ~Admission() {
    if (router_ != nullptr) router_->release_admission();
  }

 private:
  Router* router_;
};

struct Router::StreamState {
  StreamState(std::shared_ptr<ActiveRequest> request_in, Admission admission_in)
      : request(std::move(request_in)), admission(std::move(admission_in)) {}
  std::shared_ptr<ActiveRequest> request;
  Admission admission;
  bool done = false;  // finished, failed or abandoned: metrics recorded
};

Router::Router(const ServiceConfig& config, const ModelConfig& model, InstanceChannel& channel,
               RouterMetrics& metrics)
    : config_(config),
      limits_{.served_model_name = config.router.served_model_name.empty()
                                       ? model.name
                                       : config.router.served_model_name,
              .vocab_size = model.vocab_size,
              .max_model_len = max_model_len(config, model),
              .max_tokens_limit = config.router.max_tokens_limit,
              .bos_token_id = model.bos_token_id},
      channel_(channel),
      metrics_(metrics),
      disaggregated_(config.scheduler.mode == SchedulerMode::kDisaggregated),
      balancer_(config.router.policy, channel.instances(), config.kv_cache.page_size),
      decode_balancer_(config.router.policy, channel.instances(), config.kv_cache.page_size,
                       LoadBalancer::kDecodeRoles),
      created_unix_s_(std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count()),
      eos_token_id_(model.eos_token_id),
      num_instances_(static_cast<int>(channel.instances().size())),
      instance_reported_(channel.instances().size(), false) {}

Router::~Router() { stop(); }

Status Router::start() {
  ::signal(SIGPIPE, SIG_IGN);
  const auto [host, port] = split_host_port(config_.router.listen);
  if (port < 0 || port > 65535) {
    return invalid_argument("router.listen: expected host:port, got '" + config_.router.listen +
                            "'");
  }
  server_ = std::make_unique<httplib::Server>();
  const int threads = std::max(1, config_.router.http_threads);
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_->set_payload_max_length(kMaxBodyBytes);
  // httplib 0.11 listens with a backlog of 5, which a burst of concurrent clients overflows
  // (connections reset); remember the socket and raise the backlog once it is bound.
  int listen_socket = -1;
  server_->set_socket_options([&listen_socket](socket_t sock) {
    http::reuse_address_only(sock);
    listen_socket = sock;
  });
  install_routes();

  port_ = port == 0 ? server_->bind_to_any_port(host) : port;
  if (port_ <= 0 || (port != 0 && !server_->bind_to_port(host, port))) {
    Status status = unavailable("router: cannot listen on " + config_.router.listen);
    spdlog::error("{}", status.message());
    return status;
  }
  server_->set_socket_options(http::reuse_address_only);
  if (listen_socket >= 0 && ::listen(listen_socket, SOMAXCONN) != 0) {
    spdlog::warn("router: could not raise the listen backlog: {}", std::strerror(errno));
  }
  server_thread_ = http::listen_in_background(*server_);
  spdlog::info(
      "router: serving '{}' on {}:{} ({} HTTP threads, mode {}, policy {}, {} candidate "
      "instances{}, max_model_len {})",
      limits_.served_model_name, host, port_, threads, to_string(config_.scheduler.mode),
      to_string(config_.router.policy), balancer_.num_candidates(),
      disaggregated_ ? fmt::format(" + {} decode", decode_balancer_.num_candidates()) : "",
      limits_.max_model_len);
  return Status::Ok();
}

void Router::install_routes() {
  httplib::Server& server = *server_;
  server.Post("/v1/completions",
              [this](const httplib::Request& request, httplib::Response& response) {
                handle_completion(request, response, /*chat=*/false);
              });
  server.Post("/v1/chat/completions",
              [this](const httplib::Request& request, httplib::Response& response) {
                handle_completion(request, response, /*chat=*/true);
              });
  server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& response) {
    const json body = {{"object", "list"},
                       {"data", json::array({{{"id", limits_.served_model_name},
                                              {"object", "model"},
                                              {"created", created_unix_s_},
                                              {"owned_by", "podserve"},
                                              {"max_model_len", limits_.max_model_len}}})}};
    response.set_content(dump(body), "application/json");
  });
  // 200 once every instance's leader has reported in (its weights are loaded and its loop runs),
  // so a load generator polling it does not time model loading as queueing; 503 before that
  // ("starting") and while draining.
  server.Get("/health", [this](const httplib::Request&, httplib::Response& response) {
    const int ready = instances_ready_.load();
    const char* status = draining_.load() ? "draining" : ready < num_instances_ ? "starting" : "ok";
    response.status = std::string_view(status) == "ok" ? 200 : 503;
    response.set_content(
        dump({{"status", status}, {"instances_ready", ready}, {"instances", num_instances_}}),
        "application/json");
  });
  const auto method_not_allowed = [](const httplib::Request& request, httplib::Response& response) {
    send_error(response, server_error(405, request.method + " is not allowed on " + request.path,
                                      "method_not_allowed"));
    response.status = 405;
  };
  server.Get("/v1/completions", method_not_allowed);
  server.Get("/v1/chat/completions", method_not_allowed);
  server.Post("/v1/models", method_not_allowed);
  server.Post("/health", method_not_allowed);

  server.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& request,
                                                                   httplib::Response& response) {
    if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const std::string message = response.status == 404
                                    ? "no route for " + request.method + " " + request.path
                                    : "the request could not be served";
    send_error(response,
               server_error(response.status, message, response.status == 404 ? "not_found" : ""));
    return httplib::Server::HandlerResponse::Handled;
  }));
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& response, std::exception_ptr error) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("router: HTTP handler failed: {}", what);
        send_error(response, server_error(500, "internal error: " + what, "internal_error"));
      });
  server.set_logger([this](const httplib::Request&, const httplib::Response& response) {
    metrics_.http_requests(response.status).Increment();
  });
}

void Router::handle_completion(const httplib::Request& http_request, httplib::Response& response,
                               bool chat) {
  const Clock::time_point arrival = Clock::now();
  auto parsed = chat ? parse_chat_completion_request(http_request.body, limits_)
                     : parse_completion_request(http_request.body, limits_);
  if (const ApiError* error = std::get_if<ApiError>(&parsed)) {
    send_error(response, *error);
    return;
  }
  CompletionRequest& completion = std::get<CompletionRequest>(parsed);
  if (draining_.load()) {
    send_error(response, server_error(503, "the server is draining", "service_unavailable"));
    return;
  }
  {
    std::lock_guard lock(admission_mutex_);
    if (admitted_ >= static_cast<std::size_t>(config_.router.max_queue)) {
      send_error(response, ApiError{.http_status = 429,
                                    .message = "too many requests in flight (router.max_queue = " +
                                               std::to_string(config_.router.max_queue) + ")",
                                    .type = "rate_limit_error",
                                    .code = "rate_limit_exceeded"});
      return;
    }
    ++admitted_;
  }
  Admission admission(this);

  const auto prompt_tokens = static_cast<std::int64_t>(completion.prompt.size());
  const std::int64_t max_tokens = completion.sampling.max_tokens;
  auto request = std::make_shared<ActiveRequest>();
  if (disaggregated_) {
    const std::optional<int> prefill = balancer_.assign_charging(prompt_tokens, prompt_tokens);
    const std::optional<int> decode = decode_balancer_.assign_charging(max_tokens, prompt_tokens);
    if (!prefill || !decode) {
      if (prefill) balancer_.release(*prefill, prompt_tokens);
      if (decode) decode_balancer_.release(*decode, max_tokens);
      send_error(response,
                 server_error(503, "no prefill/decode pair accepts requests", "no_instance"));
      return;
    }
    request->instance = *prefill;
    request->decode_instance = *decode;
    request->outstanding_tokens = prompt_tokens;
    request->decode_outstanding_tokens = max_tokens;
  } else {
    const std::optional<int> instance = balancer_.assign(prompt_tokens, max_tokens);
    if (!instance) {
      send_error(response, server_error(503, "no instance accepts requests", "no_instance"));
      return;
    }
    request->instance = *instance;
    request->outstanding_tokens = prompt_tokens + max_tokens;
  }
  request->id = next_request_id_.fetch_add(1);
  request->prompt_tokens = prompt_tokens;
  request->eos_token_id = eos_token_id_;
  request->chat = completion.chat;
  request->arrival = arrival;

  GenerationRequest generation{
      .id = request->id, .prompt = std::move(completion.prompt), .sampling = completion.sampling};
  if (!completion.has_seed) generation.sampling.seed = next_seed_.fetch_add(1);
  {
    std::lock_guard lock(requests_mutex_);
    if (stopped_.load()) {
      balancer_.release(request->instance, request->outstanding_tokens);
      if (disaggregated_) {
        decode_balancer_.release(request->decode_instance, request->decode_outstanding_tokens);
      }
      send_error(response, server_error(503, "the server is stopping", "service_unavailable"));
      return;
    }
    active_.emplace(request->id, request);
    metrics_.requests_waiting.Increment();
  }
  metrics_.prompt_tokens.Increment(static_cast<double>(prompt_tokens));
  if (disaggregated_) {
    channel_.submit_disaggregated(request->instance, request->decode_instance,
                                  std::move(generation));
  } else {
    channel_.submit(request->instance, std::move(generation));
  }

  if (completion.stream) {
    serve_stream(std::move(request), std::move(admission), response);
  } else {
    serve_blocking(request, response);
  }
}

void Router::deliver(ActiveRequest& request, const TokenOutput& output) {
  if (output.token == TokenOutput::kNoToken) return;
  const Clock::time_point now = Clock::now();
  if (request.generated.empty()) {
    metrics_.time_to_first_token.Observe(seconds_between(request.arrival, now));
  } else {
    metrics_.inter_token_latency.Observe(seconds_between(request.last_token_time, now));
  }
  request.last_token_time = now;
  request.generated.push_back(output.token);
  metrics_.generation_tokens.Increment();
}

void Router::record_finished(const ActiveRequest& request, FinishReason reason) {
  metrics_.requests_finished(reason).Increment();
  if (reason == FinishReason::kStop || reason == FinishReason::kLength) {
    metrics_.e2e_request_latency.Observe(seconds_between(request.arrival, Clock::now()));
  }
}

namespace {

ApiError failed_request_error(FinishReason reason) {
  return reason == FinishReason::kAbort
             ? server_error(503, "the request was aborted (service stopping or instance lost)",
                            "request_aborted")
             : server_error(500, "the instance failed to complete the request", "instance_error");
}

// One choice of a response or stream chunk. Completions: {"text"}; chat: {"message"} in a
// response, {"delta"} in a stream chunk (the first one also names the role). `token_ids` (the
// generated ids) is an extension on both.
json choice_json(bool chat, bool stream_chunk, bool first_chunk, std::string text,
                 std::span<const TokenId> token_ids, std::optional<FinishReason> reason) {
  json choice = {{"index", 0}};
  if (!chat) {
    choice["text"] = std::move(text);
  } else if (!stream_chunk) {
    choice["message"] = {{"role", "assistant"}, {"content", std::move(text)}};
  } else {
    choice["delta"] = {{"content", std::move(text)}};
    if (first_chunk) choice["delta"]["role"] = "assistant";
  }
  choice["token_ids"] = token_ids;
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = reason ? json(std::string(to_string(*reason))) : json(nullptr);
  return choice;
}

// The response's "id" and "object" for a request of either endpoint.
std::string response_id(bool chat, RequestId id) {
  return (chat ? "chatcmpl-" : "cmpl-") + std::to_string(id);
}
const char* response_object(bool chat, bool stream_chunk) {
  if (!chat) return "text_completion";
  return stream_chunk ? "chat.completion.chunk" : "chat.completion";
}

json usage_json(std::int64_t prompt_tokens, std::size_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + static_cast<std::int64_t>(completion_tokens)}};
}

}  // namespace

void Router::serve_blocking(const std::shared_ptr<ActiveRequest>& request,
                            httplib::Response& response) {
  std::vector<TokenOutput> batch;
  std::optional<FinishReason> reason;
  while (!reason) {
    batch.clear();
    if (!request->outputs.wait_pop(batch, kBlockingWaitSlice)) continue;
    for (const TokenOutput& output : batch) {
      deliver(*request, output);
      if (output.finished) {
        reason = output.reason;
        break;
      }
    }
  }
  record_finished(*request, *reason);
  if (*reason != FinishReason::kStop && *reason != FinishReason::kLength) {
    send_error(response, failed_request_error(*reason));
    return;
  }
  const json body = {
      {"id", response_id(request->chat, request->id)},
      {"object", response_object(request->chat, /*stream_chunk=*/false)},
      {"created", std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count()},
      {"model", limits_.served_model_name},
      {"choices",
       json::array({choice_json(request->chat, /*stream_chunk=*/false, /*first_chunk=*/false,
                                request->text_from(0, reason), request->generated, reason)})},
      {"usage", usage_json(request->prompt_tokens, request->generated.size())}};
  response.set_content(dump(body), "application/json");
}

void Router::serve_stream(std::shared_ptr<ActiveRequest> request, Admission admission,
                          httplib::Response& response) {
  auto state = std::make_shared<StreamState>(std::move(request), std::move(admission));
  const std::int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
  response.set_header("Cache-Control", "no-cache");
  response.set_chunked_content_provider(
      "text/event-stream",
      [this, state, created](std::size_t, httplib::DataSink& sink) {
        ActiveRequest& active = *state->request;
        std::vector<TokenOutput> batch;
        if (!active.outputs.wait_pop(batch, kStreamKeepAlive)) {
          static constexpr std::string_view kKeepAlive = ": keep-alive\n\n";
          if (sink.write(kKeepAlive.data(), kKeepAlive.size())) return true;
          state->done = true;
          abandon(active);
          record_finished(active, FinishReason::kAbort);
          return false;
        }
        std::string events;
        std::optional<FinishReason> reason;
        for (const TokenOutput& output : batch) {
          const std::size_t before = active.generated.size();
          deliver(active, output);
          if (output.finished) reason = output.reason;
          if (reason && *reason != FinishReason::kStop && *reason != FinishReason::kLength) {
            events += "data: " + api_error_body(failed_request_error(*reason)) + "\n\n";
            break;
          }
          if (before == active.generated.size() && !reason) continue;
          json chunk = {
              {"id", response_id(active.chat, active.id)},
              {"object", response_object(active.chat, /*stream_chunk=*/true)},
              {"created", created},
              {"model", limits_.served_model_name},
              {"choices",
               json::array({choice_json(active.chat, /*stream_chunk=*/true, before == 0,
                                        active.text_from(before, reason),
                                        std::span<const TokenId>(active.generated).subspan(before),
                                        reason)})}};
          if (reason) chunk["usage"] = usage_json(active.prompt_tokens, active.generated.size());
          events += "data: " + dump(chunk) + "\n\n";
          if (reason) break;
        }
        if (reason) events += "data: [DONE]\n\n";
        if (!sink.write(events.data(), events.size())) {
          state->done = true;
          abandon(active);
          record_finished(active, FinishReason::kAbort);
          return false;
        }
        if (reason) {
          state->done = true;
          record_finished(active, *reason);
          sink.done();
        }
        return true;
      },
      [this, state](bool) {
        if (state->done) return;
        state->done = true;
        abandon(*state->request);
        record_finished(*state->request, FinishReason::kAbort);
      });
}

void Router::retire_locked(ActiveRequest& request) {
  if (!request.active) return;
  request.active = false;
  balancer_.release(request.instance, request.outstanding_tokens);
  request.outstanding_tokens = 0;
  if (request.decode_instance >= 0) {
    decode_balancer_.release(request.decode_instance, request.decode_outstanding_tokens);
    request.decode_outstanding_tokens = 0;
  }
  request.early_outputs.clear();
  (request.first_output_seen ? metrics_.requests_running : metrics_.requests_waiting).Decrement();
  active_.erase(request.id);
}

void Router::abandon(ActiveRequest& request) {
  bool was_active = false;
  {
    std::lock_guard lock(requests_mutex_);
    was_active = request.active;
    retire_locked(request);
  }
  if (was_active) cancel_everywhere(request);
}

void Router::cancel_everywhere(const ActiveRequest& request) {
  channel_.cancel(request.instance, request.id);
  if (request.decode_instance >= 0) channel_.cancel(request.decode_instance, request.id);
}

void Router::on_outputs(int, std::span<const TokenOutput> outputs) {
  std::lock_guard lock(requests_mutex_);
  for (const TokenOutput& output : outputs) {
    const auto it = active_.find(output.id);
    if (it == active_.end()) continue;
    const std::shared_ptr<ActiveRequest> request = it->second;
    if (output.token != TokenOutput::kNoToken && output.index > request->next_index) {
      request->early_outputs.emplace(output.index, output);
      continue;
    }
    accept_output_locked(request, output);
    while (request->active) {
      const auto next = request->early_outputs.find(request->next_index);
      if (next == request->early_outputs.end()) break;
      const TokenOutput held = next->second;
      request->early_outputs.erase(next);
      accept_output_locked(request, held);
    }
  }
}

void Router::accept_output_locked(const std::shared_ptr<ActiveRequest>& request,
                                  const TokenOutput& output) {
  std::int64_t prefill_done_tokens = 0;
  if (!request->first_output_seen) {
    request->first_output_seen = true;
    prefill_done_tokens = disaggregated_ ? request->outstanding_tokens : request->prompt_tokens;
    if (!request->queue_time_recorded) {
      request->queue_time_recorded = true;
      metrics_.request_queue_time.Observe(seconds_between(request->arrival, Clock::now()));
    }
    metrics_.requests_waiting.Decrement();
    metrics_.requests_running.Increment();
  }
  const bool has_token = output.token != TokenOutput::kNoToken;
  if (has_token) request->next_index = output.index + 1;
  if (disaggregated_) {
    // Prefill side: the prompt is done at the first output. Decode side: one token fewer to go.
    request->outstanding_tokens -= prefill_done_tokens;
    balancer_.release(request->instance, prefill_done_tokens);
    const std::int64_t generated =
        std::min<std::int64_t>(has_token ? 1 : 0, request->decode_outstanding_tokens);
    request->decode_outstanding_tokens -= generated;
    decode_balancer_.release(request->decode_instance, generated);
  } else {
    std::int64_t completed_tokens = prefill_done_tokens + (has_token ? 1 : 0);
    completed_tokens = std::min(completed_tokens, request->outstanding_tokens);
    request->outstanding_tokens -= completed_tokens;
    balancer_.release(request->instance, completed_tokens);
  }
  if (output.finished) retire_locked(*request);
  request->outputs.push(output);
}

void Router::on_load(int instance, const InstanceLoad& load) {
  balancer_.update_load(instance, load);
  decode_balancer_.update_load(instance, load);
  std::lock_guard lock(reported_mutex_);
  if (instance >= 0 && instance < num_instances_ && !instance_reported_[instance]) {
    instance_reported_[instance] = true;
    ++instances_ready_;
  }
}

void Router::on_scheduled(int, RequestId id) {
  std::lock_guard lock(requests_mutex_);
  const auto it = active_.find(id);
  if (it == active_.end() || it->second->queue_time_recorded) return;
  it->second->queue_time_recorded = true;
  metrics_.request_queue_time.Observe(seconds_between(it->second->arrival, Clock::now()));
}

void Router::release_admission() {
  std::lock_guard lock(admission_mutex_);
  --admitted_;
  if (admitted_ == 0) all_finished_.notify_all();
}

std::size_t Router::in_flight() const {
  std::lock_guard lock(admission_mutex_);
  return admitted_;
}

void Router::begin_drain() {
  if (!draining_.exchange(true)) spdlog::info("router: draining, {} in flight", in_flight());
}

bool Router::wait_drained() {
  std::unique_lock lock(admission_mutex_);
  const bool drained =
      all_finished_.wait_for(lock, std::chrono::seconds(config_.router.drain_timeout_s),
                             [this] { return admitted_ == 0; });
  if (!drained) spdlog::warn("router: drain timed out with {} requests in flight", admitted_);
  return drained;
}

void Router::stop() {
  draining_ = true;
  std::vector<std::shared_ptr<ActiveRequest>> aborted;
  {
    std::lock_guard lock(requests_mutex_);
    stopped_ = true;
    for (const auto& [id, request] : active_) aborted.push_back(request);
    for (const auto& request : aborted) {
      retire_locked(*request);
      request->outputs.push(TokenOutput{.id = request->id,
                                        .token = TokenOutput::kNoToken,
                                        .index = 0,
                                        .finished = true,
                                        .reason = FinishReason::kAbort});
    }
  }
  for (const auto& request : aborted) cancel_everywhere(*request);
  if (server_) server_->stop();
  if (server_thread_.joinable()) server_thread_.join();
}

}  // namespace podserve
