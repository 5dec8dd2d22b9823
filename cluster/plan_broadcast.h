// Leader -> TP peers: each iteration's batch plan, broadcast on the instance communicator.
// The leader sends; peers wait for the next plan without spinning (non-blocking broadcast of
// the size polled with a backoff sleep, then the body). Collective over the instance comm.
#pragma once

#include <mpi.h>

#include "cluster/control_endpoint.h"
#include "core/batch_plan.h"
#include "core/status.h"

namespace podserve {

Status broadcast_plan(MPI_Comm instance_comm, const BatchPlan& plan);
// Blocks (sleeping with `backoff` while idle) until the leader broadcasts the next plan.
Result<BatchPlan> receive_plan(MPI_Comm instance_comm, IdleBackoff& backoff);

}  // namespace podserve
