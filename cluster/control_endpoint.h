// Moves control messages over MPI point-to-point on the control communicator. Sends are
// non-blocking (the endpoint keeps each buffer until MPI reports the send complete); receives
// poll with MPI_Iprobe so a caller can interleave them with other work and sleep when idle.
// Used by exactly one thread per process (the thread that makes all MPI calls).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <list>
#include <optional>
#include <vector>

#include "cluster/control_messages.h"
#include "core/status.h"

namespace podserve {

struct ReceivedControl {
  int source_rank = 0;
  ControlMessage message;
};

class ControlEndpoint {
 public:
  explicit ControlEndpoint(MPI_Comm comm) : comm_(comm) {}
  ~ControlEndpoint();
  ControlEndpoint(const ControlEndpoint&) = delete;
  ControlEndpoint& operator=(const ControlEndpoint&) = delete;

  Status send(int dest_rank, const ControlMessage& message);
  // Completes finished sends; returns how many are still in flight.
  Result<std::size_t> progress();
  // One message if one is waiting, from any rank; never blocks.
  Result<std::optional<ReceivedControl>> try_receive();
  // Waits (polling with progress, no busy spin) until every send completed.
  Status flush();

 private:
  struct PendingSend {
    std::vector<std::uint8_t> bytes;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  MPI_Comm comm_;
  std::list<PendingSend> pending_;
};

// Sleeps for growing intervals while a polling loop finds nothing to do, so idle ranks leave
// the CPU to busy ones (several ranks share a core on small machines). reset() on activity.
class IdleBackoff {
 public:
  IdleBackoff(std::int64_t min_us, std::int64_t max_us)
      : min_us_(min_us), max_us_(max_us), current_us_(min_us) {}
  void reset() { current_us_ = min_us_; }
  std::int64_t next_us();  // the interval to sleep now; doubles up to max
  void sleep();

 private:
  std::int64_t min_us_, max_us_, current_us_;
};

inline constexpr int kControlTag = 7001;

}  // namespace podserve
