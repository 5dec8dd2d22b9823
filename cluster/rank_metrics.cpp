#include "cluster/rank_metrics.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace podserve {

Result<std::unique_ptr<MetricsServer>> start_rank_metrics(const Topology& topology,
                                                          const ServiceConfig& config) {
  const int port = config.metrics.port_base + topology.node_local_rank();
  auto server = MetricsServer::start(config.metrics.bind, port);
  if (!server.ok()) {
    return unavailable(
        fmt::format("config key 'metrics.port_base': rank {} cannot serve metrics "
                    "on {}:{}: {}",
                    topology.world_rank(), config.metrics.bind, port, server.status().message()));
  }
  spdlog::info("metrics on http://{}/metrics", (*server)->endpoint());
  return server;
}

MetricsIdentity rank_metrics_identity(const Topology& topology, const ServiceConfig& config) {
  MetricsIdentity id;
  id.mode = std::string(to_string(config.scheduler.mode));
  id.rank = topology.world_rank();
  if (topology.is_router()) {
    id.instance = "router";
    id.role = "router";
  } else {
    id.instance = std::to_string(topology.instance_id());
    id.role = std::string(to_string(topology.instance().role));
  }
  return id;
}

std::vector<ScrapeTargetGroup> rank_scrape_groups(std::span<const RankEndpoint> endpoints,
                                                  const ServiceConfig& config) {
  const bool all_interfaces = config.metrics.bind == "0.0.0.0" || config.metrics.bind == "::";
  std::vector<ScrapeTargetGroup> groups;
  for (std::size_t rank = 0; rank < endpoints.size(); ++rank) {
    const RankEndpoint& endpoint = endpoints[rank];
    ScrapeTargetGroup group;
    group.targets.push_back(fmt::format("{}:{}",
                                        all_interfaces ? endpoint.host : config.metrics.bind,
                                        config.metrics.port_base + endpoint.node_local_rank));
    group.labels["podserve_rank"] = std::to_string(rank);
    group.labels["podserve_mode"] = std::string(to_string(config.scheduler.mode));
    groups.push_back(std::move(group));
  }
  return groups;
}

}  // namespace podserve
