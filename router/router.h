// The router (rank 0): the OpenAI-compatible HTTP API, admission (queue bound, drain), load
// balancing over the instances (router/policy.h), token streaming, and the router-side
// request metrics. Latency definitions: router/README.md.
//
// Modes (scheduler.mode): colocated — one instance per request, picked among the colocated
// instances; disaggregated — a (prefill, decode) pair per request, each side picked by the
// configured policy over its own instances (two LoadBalancers: prefill charged the prompt
// tokens until the first output, decode charged max_tokens - tokens generated). Cancels go to
// both instances of the pair. Outputs of one request may come from either instance (index 0
// from the prefill one, index >= 1 from the decode one) and in either order: token outputs
// are delivered in index order (an early one is held until the gap fills).
//
// Endpoints: POST /v1/completions (JSON or SSE stream), GET /v1/models, GET /health.
// Status codes: 400 invalid request (OpenAI error body), 404 unknown route or model,
// 405 wrong method, 429 when router.max_queue requests are admitted and unfinished,
// 503 while draining / stopped or when no instance takes requests, 500 on an internal error.
//
// Threads: start() serves HTTP from a pool of router.http_threads threads (a streaming or
// waiting request holds one thread until it finishes, so size the pool for the concurrency you
// expect). The control-plane thread delivers instance events through on_outputs / on_load /
// on_scheduled: they only take short mutexes and notify; they never block on HTTP I/O.
// All public methods are thread-safe. The Router must outlive the channel's callbacks into it;
// the channel and the metrics must outlive the Router. start() makes the process ignore
// SIGPIPE (a client that disconnects must not kill the service).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "core/model_config.h"
#include "core/request.h"
#include "core/status.h"
#include "metrics/families.h"
#include "router/completion_request.h"
#include "router/instance_channel.h"
#include "router/policy.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace podserve {

class Router {
 public:
  Router(const ServiceConfig& config, const ModelConfig& model, InstanceChannel& channel,
         RouterMetrics& metrics);
  ~Router();  // stop()

  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Binds router.listen ("host:port"; port 0 picks a free port) and serves in a background
  // thread. Returns once the socket is bound; a bind failure is an error Status.
  Status start();
  // The bound port (after start()).
  int port() const { return port_; }
  // Stops accepting new completions: they get 503, /health turns 503. Non-blocking.
  void begin_drain();
  // Blocks until no request is in flight or router.drain_timeout_s passed; true when drained.
  bool wait_drained();
  // Aborts requests still in flight (cancelled on their instances, clients get an error),
  // stops the HTTP server and joins its thread. Idempotent.
  void stop();
  // Requests admitted and not yet finished (answered or abandoned).
  std::size_t in_flight() const;

  // Control-plane callbacks (any thread; fast, non-blocking).
  // Token and finish events of requests running on `instance`; unknown ids are ignored.
  void on_outputs(int instance, std::span<const TokenOutput> outputs);
  // The instance's latest load report.
  void on_load(int instance, const InstanceLoad& load);
  // The instance scheduled the request (first prefill chunk): ends its queue time. Optional:
  // without it the queue time ends at the request's first output.
  void on_scheduled(int instance, RequestId id);

 private:
  struct ActiveRequest;
  class Admission;
  struct StreamState;

  void install_routes();
  // POST /v1/completions (chat false) and /v1/chat/completions (chat true).
  void handle_completion(const httplib::Request& http_request, httplib::Response& response,
                         bool chat);
  void serve_blocking(const std::shared_ptr<ActiveRequest>& request, httplib::Response& response);
  void serve_stream(std::shared_ptr<ActiveRequest> request, Admission admission,
                    httplib::Response& response);

  // Removes a request from the active set (once): returns its outstanding tokens to the load
  // balancer and updates the running/waiting gauges. Caller holds requests_mutex_.
  void retire_locked(ActiveRequest& request);
  // The client went away: retire the request and cancel it on its instance(s).
  void abandon(ActiveRequest& request);
  // Cancels the request on every instance it was handed to.
  void cancel_everywhere(const ActiveRequest& request);
  // Accounts one output in index order and hands it to the handler side. Caller holds
  // requests_mutex_.
  void accept_output_locked(const std::shared_ptr<ActiveRequest>& request,
                            const TokenOutput& output);
  // Hands one output to the handler side: TTFT/ITL and generated-token metrics.
  void deliver(ActiveRequest& request, const TokenOutput& output);
  // Records the metrics of a request the handler finished serving.
  void record_finished(const ActiveRequest& request, FinishReason reason);
  void release_admission();

  const ServiceConfig config_;
  CompletionLimits limits_;  // set in the constructor, its tokenizer in start()
  // model.path's tokenizer.json or tokenizer.model; null: the byte tokenizer.
  std::unique_ptr<TextTokenizer> tokenizer_;
  std::optional<CheckpointChat> chat_;  // model.path's chat template, when it has one
  InstanceChannel& channel_;
  RouterMetrics& metrics_;
  const bool disaggregated_;
  LoadBalancer balancer_;         // colocated instances, or the prefill side
  LoadBalancer decode_balancer_;  // disaggregated: the decode side
  const std::int64_t created_unix_s_;
  const std::vector<TokenId> eos_token_ids_;
  // Readiness (/health): instances whose leader has reported its load at least once.
  const int num_instances_;
  std::mutex reported_mutex_;
  std::vector<bool> instance_reported_;  // [num_instances_]
  std::atomic<int> instances_ready_{0};

  std::unique_ptr<httplib::Server> server_;
  std::thread server_thread_;
  int port_ = 0;

  std::atomic<bool> draining_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<std::uint64_t> next_request_id_{1};
  std::atomic<std::uint64_t> next_seed_{0x5eed};

  mutable std::mutex admission_mutex_;
  std::condition_variable all_finished_;
  std::size_t admitted_ = 0;

  std::mutex requests_mutex_;
  std::unordered_map<RequestId, std::shared_ptr<ActiveRequest>> active_;
};

}  // namespace podserve
