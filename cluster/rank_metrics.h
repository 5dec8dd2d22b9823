// Starts this rank's Prometheus endpoint on metrics.port_base + node-local rank.
#pragma once

#include <memory>
#include <string>

#include "cluster/topology.h"
#include "core/config.h"
#include "metrics/families.h"
#include "metrics/metrics.h"

namespace podserve {

Result<std::unique_ptr<MetricsServer>> start_rank_metrics(const Topology& topology,
                                                          const ServiceConfig& config);
// The constant labels of this rank's metric families.
MetricsIdentity rank_metrics_identity(const Topology& topology, const ServiceConfig& config);
// The scrape target of `rank`: "host:port" (the bind address, or the rank's host name when
// binding to every interface).
std::string rank_metrics_target(const Topology& topology, const ServiceConfig& config, int rank);

}  // namespace podserve
