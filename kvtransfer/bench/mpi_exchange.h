// Out-of-band exchange of transport addresses, region descriptors and NCCL unique ids between MPI
// ranks, for the benchmark and the two-process tests (the service does its own, over all ranks, in
// cluster/kv_fabric_mpi.cpp). Blocking, collective over the ranks involved; MPI_COMM_WORLD.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace podserve {

// Sends `mine` to `peer` and returns what `peer` sent.
inline std::vector<std::uint8_t> swap_bytes(std::span<const std::uint8_t> mine, int peer) {
  int my_size = static_cast<int>(mine.size());
  int peer_size = 0;
  MPI_Sendrecv(&my_size, 1, MPI_INT, peer, 0, &peer_size, 1, MPI_INT, peer, 0, MPI_COMM_WORLD,
               MPI_STATUS_IGNORE);
  std::vector<std::uint8_t> theirs(static_cast<std::size_t>(peer_size));
  MPI_Sendrecv(mine.data(), my_size, MPI_BYTE, peer, 1, theirs.data(), peer_size, MPI_BYTE, peer, 1,
               MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  return theirs;
}

// Returns rank `root`'s `bytes` on every rank (what the other ranks pass is ignored).
inline std::vector<std::uint8_t> broadcast_bytes(std::span<const std::uint8_t> bytes, int root) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int size = static_cast<int>(bytes.size());
  MPI_Bcast(&size, 1, MPI_INT, root, MPI_COMM_WORLD);
  std::vector<std::uint8_t> received(static_cast<std::size_t>(size));
  if (rank == root) std::copy(bytes.begin(), bytes.end(), received.begin());
  MPI_Bcast(received.data(), size, MPI_BYTE, root, MPI_COMM_WORLD);
  return received;
}

}  // namespace podserve
