// The router's only way to reach the model instances. The router depends on this interface, not
// on MPI: cluster/ implements it over the control plane; tests implement it in-process.
//
// Contract for implementations: every method is thread-safe (called from many HTTP handler
// threads at once) and non-blocking (enqueue and return; never wait on an instance).
// Events flow back by the implementation calling Router::on_outputs / on_load / on_scheduled
// from its own thread (router/router.h).
#pragma once

#include <vector>

#include "core/request.h"
#include "core/types.h"

namespace podserve {

struct InstanceInfo {
  int id = 0;  // dense instance id, 0..N-1
  InstanceRole role = InstanceRole::kColocated;
  int tp = 1;           // tensor-parallel ranks of the instance
  int leader_rank = 0;  // MPI world rank of its TP rank 0
};

class InstanceChannel {
 public:
  virtual ~InstanceChannel() = default;

  // Every instance of the deployment; constant for the life of the channel.
  virtual std::vector<InstanceInfo> instances() const = 0;
  // Hands `request` to the instance's leader. Its outputs come back via Router::on_outputs.
  virtual void submit(int instance, GenerationRequest request) = 0;
  // Disaggregated mode: hands `request` to the pair. The decode instance reserves its KV pages
  // and forwards it to the prefill instance; outputs come from the prefill instance (index 0)
  // and then from the decode instance (index >= 1), in either arrival order.
  virtual void submit_disaggregated(int prefill_instance, int decode_instance,
                                    GenerationRequest request) = 0;
  // Asks the instance to abort the request and free its KV pages; idempotent, and harmless for
  // a request that already finished. The instance may answer with a kAbort output.
  virtual void cancel(int instance, RequestId id) = 0;
};

}  // namespace podserve
