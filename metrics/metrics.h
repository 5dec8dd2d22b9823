// The per-rank Prometheus endpoint: a MetricsServer owns a Registry and serves it as
// `GET /metrics` (text exposition format) on bind:port from prometheus-cpp's own HTTP threads.
// Build the rank's metric families into registry() (metrics/families.h) right after start.
//
// Contract: start() binds synchronously and reports a bind failure as a Status (no exceptions
// escape). Port 0 picks a free port; port() tells which. Scrapes run concurrently with metric
// updates (both thread-safe). The destructor stops serving; the Registry, and every metric
// reference taken from it, dies with the MetricsServer, so it must outlive their users.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace podserve {

class MetricsServer {
 public:
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& bind_address, int port);
  ~MetricsServer();

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  prometheus::Registry& registry() { return *registry_; }
  int port() const { return port_; }
  // "bind_address:port", the scrape target of this rank.
  std::string endpoint() const;

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer,
                std::shared_ptr<prometheus::Registry> registry, std::string bind_address, int port);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string bind_address_;
  int port_;
};

}  // namespace podserve
