// The router rank's side of the control plane: implements the router's InstanceChannel over
// MPI. HTTP threads call submit()/cancel() (thread-safe, they only enqueue); the rank's main
// thread runs run(), the only place this process makes MPI calls: it sends what was queued,
// receives leaders' outputs and load reports and hands them to the Router, and sleeps (woken
// by new submissions) when there is nothing to do.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <variant>
#include <vector>

#include "cluster/control_endpoint.h"
#include "cluster/topology.h"
#include "router/instance_channel.h"
#include "router/router.h"

namespace podserve {

class RouterLink final : public InstanceChannel {
 public:
  explicit RouterLink(const Topology& topology);

  std::vector<InstanceInfo> instances() const override;
  void submit(int instance, GenerationRequest request) override;
  // Disaggregated mode: the request goes to its decode instance, which reserves KV pages and
  // forwards the prompt to `prefill_instance`.
  void submit_disaggregated(int prefill_instance, int decode_instance,
                            GenerationRequest request) override;
  void cancel(int instance, RequestId id) override;

  // Runs until request_shutdown(), then tells every leader to stop and waits for their
  // acknowledgements (or `shutdown_timeout_ms`). Returns the first MPI/decoding error.
  Status run(Router& router, int shutdown_timeout_ms);
  // Thread-safe; run() returns once the leaders have stopped.
  void request_shutdown();

 private:
  struct Outgoing {
    int instance;
    ControlMessage message;
  };

  Status send_queued();
  Status receive_all(Router& router, bool& received_any, int& shutdown_acks);

  const Topology& topology_;
  ControlEndpoint endpoint_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Outgoing> queue_;  // guarded by mutex_
  std::atomic<bool> shutdown_requested_{false};
};

}  // namespace podserve
