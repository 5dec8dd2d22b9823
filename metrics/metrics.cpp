#include "metrics/metrics.h"

#include <exception>
#include <utility>

#include "prometheus/exposer.h"
#include "spdlog/spdlog.h"

namespace podserve {

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& bind_address,
                                                            int port) {
  const std::string listen = bind_address + ":" + std::to_string(port);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/2);
  } catch (const std::exception& e) {
    Status status = unavailable("metrics: cannot serve /metrics on " + listen + ": " + e.what());
    spdlog::error("{}", status.message());
    return status;
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    Status status = internal_error("metrics: no listening port for " + listen);
    spdlog::error("{}", status.message());
    return status;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  exposer->RegisterCollectable(registry);
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(std::move(exposer), std::move(registry), bind_address, ports.front()));
}

MetricsServer::MetricsServer(std::unique_ptr<prometheus::Exposer> exposer,
                             std::shared_ptr<prometheus::Registry> registry,
                             std::string bind_address, int port)
    : registry_(std::move(registry)),
      exposer_(std::move(exposer)),
      bind_address_(std::move(bind_address)),
      port_(port) {}

MetricsServer::~MetricsServer() = default;

std::string MetricsServer::endpoint() const { return bind_address_ + ":" + std::to_string(port_); }

}  // namespace podserve
