#include "cluster/plan_broadcast.h"

#include <vector>

#include "cluster/mpi_check.h"

namespace podserve {

Status broadcast_plan(MPI_Comm instance_comm, const BatchPlan& plan) {
  auto bytes = plan.serialize();
  std::uint64_t size = bytes.size();
  MPI_Request request = MPI_REQUEST_NULL;
  // Peers post a non-blocking broadcast for the size, so the leader must too (blocking and
  // non-blocking collectives never match each other).
  PODSERVE_MPI(MPI_Ibcast(&size, 1, MPI_UINT64_T, 0, instance_comm, &request));
  PODSERVE_MPI(MPI_Wait(&request, MPI_STATUS_IGNORE));
  PODSERVE_MPI(MPI_Bcast(bytes.data(), static_cast<int>(size), MPI_BYTE, 0, instance_comm));
  return Status::Ok();
}

Result<std::optional<BatchPlan>> PlanReceiver::try_receive() {
  if (size_request_ == MPI_REQUEST_NULL) {
    PODSERVE_MPI(MPI_Ibcast(&size_, 1, MPI_UINT64_T, 0, comm_, &size_request_));
  }
  int done = 0;
  PODSERVE_MPI(MPI_Test(&size_request_, &done, MPI_STATUS_IGNORE));
  if (!done) return std::optional<BatchPlan>{};
  std::vector<std::uint8_t> bytes(size_);
  PODSERVE_MPI(MPI_Bcast(bytes.data(), static_cast<int>(size_), MPI_BYTE, 0, comm_));
  PODSERVE_ASSIGN_OR_RETURN(auto plan, BatchPlan::deserialize(bytes));
  return std::optional<BatchPlan>{std::move(plan)};
}

}  // namespace podserve
