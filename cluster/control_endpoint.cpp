#include "cluster/control_endpoint.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "cluster/mpi_check.h"

namespace podserve {

ControlEndpoint::~ControlEndpoint() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (auto& p : pending_) {
    if (p.request != MPI_REQUEST_NULL) {
      MPI_Cancel(&p.request);
      MPI_Request_free(&p.request);
    }
  }
}

Status ControlEndpoint::send(int dest_rank, const ControlMessage& message) {
  auto& pending = pending_.emplace_back();
  pending.bytes = encode_control(message);
  PODSERVE_MPI(MPI_Isend(pending.bytes.data(), static_cast<int>(pending.bytes.size()), MPI_BYTE,
                         dest_rank, kControlTag, comm_, &pending.request));
  return Status::Ok();
}

Result<std::size_t> ControlEndpoint::progress() {
  for (auto it = pending_.begin(); it != pending_.end();) {
    int done = 0;
    PODSERVE_MPI(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE));
    it = done ? pending_.erase(it) : std::next(it);
  }
  return pending_.size();
}

Result<std::optional<ReceivedControl>> ControlEndpoint::try_receive() {
  int flag = 0;
  MPI_Status status;
  PODSERVE_MPI(MPI_Iprobe(MPI_ANY_SOURCE, kControlTag, comm_, &flag, &status));
  if (!flag) return std::optional<ReceivedControl>{};
  int count = 0;
  PODSERVE_MPI(MPI_Get_count(&status, MPI_BYTE, &count));
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(count));
  PODSERVE_MPI(MPI_Recv(bytes.data(), count, MPI_BYTE, status.MPI_SOURCE, kControlTag, comm_,
                        MPI_STATUS_IGNORE));
  PODSERVE_ASSIGN_OR_RETURN(auto message, decode_control(bytes));
  return std::optional<ReceivedControl>{ReceivedControl{status.MPI_SOURCE, std::move(message)}};
}

Status ControlEndpoint::flush() {
  IdleBackoff backoff(20, 2000);
  while (true) {
    PODSERVE_ASSIGN_OR_RETURN(const auto remaining, progress());
    if (remaining == 0) return Status::Ok();
    backoff.sleep();
  }
}

std::int64_t IdleBackoff::next_us() {
  const auto now = current_us_;
  current_us_ = std::min(current_us_ * 2, max_us_);
  return now;
}

void IdleBackoff::sleep() { std::this_thread::sleep_for(std::chrono::microseconds(next_us())); }

}  // namespace podserve
