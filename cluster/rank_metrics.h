// Starts this rank's Prometheus endpoint on metrics.port_base + node-local rank, and lists every
// rank's endpoint for Prometheus file-based service discovery (metrics.sd_file).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cluster/topology.h"
#include "core/config.h"
#include "metrics/families.h"
#include "metrics/metrics.h"
#include "metrics/service_discovery.h"

namespace podserve {

Result<std::unique_ptr<MetricsServer>> start_rank_metrics(const Topology& topology,
                                                          const ServiceConfig& config);
// The constant labels of this rank's metric families.
MetricsIdentity rank_metrics_identity(const Topology& topology, const ServiceConfig& config);
// One group per rank, in rank order: its scrape target "host:port" (port_base + its node-local
// rank; the bind address as host, or the rank's host name when binding to every interface),
// labelled podserve_rank and podserve_mode. Pure: `endpoints` is Topology::endpoints().
std::vector<ScrapeTargetGroup> rank_scrape_groups(std::span<const RankEndpoint> endpoints,
                                                  const ServiceConfig& config);

}  // namespace podserve
