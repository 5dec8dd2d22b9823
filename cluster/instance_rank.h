// Ranks 1..N: one rank of an instance (a tensor-parallel group). The leader (TP rank 0) owns
// the scheduler and the engine loop: it takes requests from the router, broadcasts each
// iteration's batch plan to its TP peers, samples, and reports tokens and load back. Peers
// execute the plans they receive. Blocks until the router orders shutdown.
#pragma once

#include "cluster/topology.h"
#include "core/config.h"
#include "core/model_config.h"
#include "core/status.h"

namespace podserve {

Status run_instance_rank(const Topology& topology, const ServiceConfig& config,
                         const ModelConfig& model);

}  // namespace podserve
