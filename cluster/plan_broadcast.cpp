#include "cluster/plan_broadcast.h"

#include <cstdint>
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

Result<BatchPlan> receive_plan(MPI_Comm instance_comm, IdleBackoff& backoff) {
  std::uint64_t size = 0;
  MPI_Request request = MPI_REQUEST_NULL;
  PODSERVE_MPI(MPI_Ibcast(&size, 1, MPI_UINT64_T, 0, instance_comm, &request));
  while (true) {
    int done = 0;
    PODSERVE_MPI(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done) break;
    backoff.sleep();
  }
  backoff.reset();
  std::vector<std::uint8_t> bytes(size);
  PODSERVE_MPI(MPI_Bcast(bytes.data(), static_cast<int>(size), MPI_BYTE, 0, instance_comm));
  return BatchPlan::deserialize(bytes);
}

}  // namespace podserve
