// Who does what: maps MPI ranks to the router and to instances (tensor-parallel groups of
// consecutive ranks, in config order), and builds the communicators. Rank 0 is the router.
// Built once at start-up by every rank with the same inputs (collective); immutable after.
#pragma once

#include <mpi.h>

#include <span>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/status.h"
#include "core/types.h"

namespace podserve {

struct InstancePlacement {
  int id = 0;
  InstanceRole role = InstanceRole::kColocated;
  int tp = 1;
  int first_rank = 0;  // the leader (TP rank 0); peers are first_rank + 1 .. first_rank + tp - 1
};

struct RankEndpoint {
  std::string host;
  int node_local_rank = 0;
};

// Pure function of the config: instance i takes ranks in config order after rank 0.
std::vector<InstancePlacement> place_instances(const ServiceConfig& config);

// The GPU of instance rank `world_rank` (>= 1): its index among the instance ranks (every rank
// but 0, the router) on its host, in world-rank order.
int gpu_index_on_host(std::span<const RankEndpoint> endpoints, int world_rank);

class Topology {
 public:
  // Collective over MPI_COMM_WORLD. Fails (naming the config key) when the world size does not
  // match the config or an instance would span two nodes.
  static Result<Topology> create(const ServiceConfig& config);
  ~Topology();
  Topology(Topology&& other) noexcept;
  Topology& operator=(Topology&&) = delete;
  Topology(const Topology&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  bool is_router() const { return world_rank_ == 0; }
  // -1 on the router.
  int instance_id() const { return instance_id_; }
  const InstancePlacement& instance() const { return instances_.at(instance_id_); }
  int tp_rank() const { return tp_rank_; }
  bool is_leader() const { return !is_router() && tp_rank_ == 0; }
  int node_local_rank() const { return endpoints_[world_rank_].node_local_rank; }
  // The GPU this rank uses: its index among the instance ranks of its node (the router takes no
  // GPU, so on a one-node deployment ranks 1..N use GPUs 0..N-1); -1 on the router.
  int device_index() const { return is_router() ? -1 : gpu_index_on_host(endpoints_, world_rank_); }
  const std::vector<InstancePlacement>& instances() const { return instances_; }
  const std::vector<RankEndpoint>& endpoints() const { return endpoints_; }
  // "router" or "<role>-<instance>-tp<rank>".
  std::string role_name() const;

  // Router <-> leaders control plane (a duplicate of MPI_COMM_WORLD, so ranks are world ranks).
  MPI_Comm control_comm() const { return control_comm_; }
  // This rank's TP group; MPI_COMM_NULL on the router.
  MPI_Comm instance_comm() const { return instance_comm_; }

 private:
  Topology() = default;

  int world_rank_ = 0;
  int world_size_ = 1;
  int instance_id_ = -1;
  int tp_rank_ = 0;
  std::vector<InstancePlacement> instances_;
  std::vector<RankEndpoint> endpoints_;
  MPI_Comm control_comm_ = MPI_COMM_NULL;
  MPI_Comm instance_comm_ = MPI_COMM_NULL;
};

}  // namespace podserve
