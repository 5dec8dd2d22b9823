// Rank 0: the router. Serves HTTP, forwards requests to instance leaders over the control
// plane, exports router metrics and the Prometheus service-discovery file, and on SIGTERM or
// SIGINT drains in-flight requests (router.drain_timeout_s) and stops every instance.
// Blocks until the service has shut down.
#pragma once

#include <string>

#include "cluster/topology.h"
#include "core/config.h"
#include "core/model_config.h"
#include "core/status.h"

namespace podserve {

Status run_router_rank(const Topology& topology, const ServiceConfig& config,
                       const ModelConfig& model, const std::string& pid_file);

}  // namespace podserve
