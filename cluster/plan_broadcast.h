// Leader -> TP peers: each iteration's batch plan, broadcast on the instance communicator.
// The leader sends; a peer polls a PlanReceiver between its other duties (KV transfers, control
// messages) and sleeps while idle, so waiting peers never spin. Collective over the instance
// comm: the leader's broadcast_plan matches one plan taken by every peer, in order.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <optional>

#include "core/batch_plan.h"
#include "core/status.h"

namespace podserve {

Status broadcast_plan(MPI_Comm instance_comm, const BatchPlan& plan);

class PlanReceiver {
 public:
  explicit PlanReceiver(MPI_Comm instance_comm) : comm_(instance_comm) {}
  PlanReceiver(const PlanReceiver&) = delete;
  PlanReceiver& operator=(const PlanReceiver&) = delete;

  // The next plan if the leader has broadcast one; never blocks while none is coming (the
  // body is received with a blocking broadcast once its size has arrived).
  Result<std::optional<BatchPlan>> try_receive();

 private:
  MPI_Comm comm_;
  std::uint64_t size_ = 0;
  MPI_Request size_request_ = MPI_REQUEST_NULL;
};

}  // namespace podserve
