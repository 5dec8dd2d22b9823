#include "cluster/topology.h"

#include <fmt/format.h>
#include <unistd.h>

#include <array>

#include "cluster/mpi_check.h"

namespace podserve {

std::vector<InstancePlacement> place_instances(const ServiceConfig& config) {
  std::vector<InstancePlacement> placements;
  int next_rank = 1;
  for (const auto& group : config.instances) {
    for (int i = 0; i < group.count; ++i) {
      InstancePlacement p;
      p.id = static_cast<int>(placements.size());
      p.role = group.role;
      p.tp = group.tp;
      p.first_rank = next_rank;
      next_rank += group.tp;
      placements.push_back(p);
    }
  }
  return placements;
}

int gpu_index_on_host(std::span<const RankEndpoint> endpoints, int world_rank) {
  int index = 0;
  for (int r = 1; r < world_rank; ++r) {
    if (endpoints[r].host == endpoints[world_rank].host) ++index;
  }
  return index;
}

Result<Topology> Topology::create(const ServiceConfig& config) {
  Topology t;
  PODSERVE_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &t.world_rank_));
  PODSERVE_MPI(MPI_Comm_size(MPI_COMM_WORLD, &t.world_size_));
  if (t.world_size_ != config.world_size()) {
    return invalid_argument(fmt::format(
        "config key 'instances': the deployment needs {} ranks (1 router + sum of count*tp) but "
        "mpirun started {}",
        config.world_size(), t.world_size_));
  }
  t.instances_ = place_instances(config);
  for (const auto& p : t.instances_) {
    if (t.world_rank_ >= p.first_rank && t.world_rank_ < p.first_rank + p.tp) {
      t.instance_id_ = p.id;
      t.tp_rank_ = t.world_rank_ - p.first_rank;
    }
  }

  // Node-local rank and host name of every rank.
  MPI_Comm node_comm = MPI_COMM_NULL;
  PODSERVE_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, t.world_rank_,
                                   MPI_INFO_NULL, &node_comm));
  int node_local_rank = 0;
  PODSERVE_MPI(MPI_Comm_rank(node_comm, &node_local_rank));
  MPI_Comm_free(&node_comm);
  std::array<char, 256> host{};
  gethostname(host.data(), host.size() - 1);
  std::vector<char> all_hosts(host.size() * t.world_size_);
  std::vector<int> all_local_ranks(t.world_size_);
  PODSERVE_MPI(MPI_Allgather(host.data(), static_cast<int>(host.size()), MPI_CHAR, all_hosts.data(),
                             static_cast<int>(host.size()), MPI_CHAR, MPI_COMM_WORLD));
  PODSERVE_MPI(MPI_Allgather(&node_local_rank, 1, MPI_INT, all_local_ranks.data(), 1, MPI_INT,
                             MPI_COMM_WORLD));
  t.endpoints_.resize(t.world_size_);
  for (int r = 0; r < t.world_size_; ++r) {
    t.endpoints_[r].host = std::string(all_hosts.data() + r * host.size());
    t.endpoints_[r].node_local_rank = all_local_ranks[r];
  }
  for (const auto& p : t.instances_) {
    for (int r = p.first_rank + 1; r < p.first_rank + p.tp; ++r) {
      if (t.endpoints_[r].host != t.endpoints_[p.first_rank].host) {
        return invalid_argument(fmt::format(
            "config key 'instances': instance {} (ranks {}..{}) spans hosts {} and {}; an "
            "instance must sit on one node (check the hostfile's slots)",
            p.id, p.first_rank, p.first_rank + p.tp - 1, t.endpoints_[p.first_rank].host,
            t.endpoints_[r].host));
      }
    }
  }

  PODSERVE_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &t.control_comm_));
  const int color = t.instance_id_ >= 0 ? t.instance_id_ : MPI_UNDEFINED;
  PODSERVE_MPI(MPI_Comm_split(MPI_COMM_WORLD, color, t.world_rank_, &t.instance_comm_));
  return t;
}

Topology::Topology(Topology&& other) noexcept
    : world_rank_(other.world_rank_),
      world_size_(other.world_size_),
      instance_id_(other.instance_id_),
      tp_rank_(other.tp_rank_),
      instances_(std::move(other.instances_)),
      endpoints_(std::move(other.endpoints_)),
      control_comm_(other.control_comm_),
      instance_comm_(other.instance_comm_) {
  other.control_comm_ = MPI_COMM_NULL;
  other.instance_comm_ = MPI_COMM_NULL;
}

Topology::~Topology() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (control_comm_ != MPI_COMM_NULL) MPI_Comm_free(&control_comm_);
  if (instance_comm_ != MPI_COMM_NULL) MPI_Comm_free(&instance_comm_);
}

std::string Topology::role_name() const {
  if (is_router()) return "router";
  return fmt::format("{}-{}-tp{}", to_string(instance().role), instance_id_, tp_rank_);
}

}  // namespace podserve
