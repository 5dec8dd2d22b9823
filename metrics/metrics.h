// The per-rank Prometheus endpoint: a MetricsServer owns a prometheus-cpp Registry and serves it
// as `GET /metrics` (text exposition format 0.0.4, prometheus-cpp's serializer) on bind:port from
// a cpp-httplib server thread. (Not prometheus-cpp's civetweb Exposer: civetweb starts its threads
// with a fixed 100 KiB stack, which fails once a library with a large static TLS block is loaded,
// as cuBLAS Lt is, at 94 KiB.)
// Build the rank's metric families into registry() (metrics/families.h) right after start.
//
// Contract: start() binds synchronously and reports a bind failure as a Status (no exceptions
// escape). Port 0 picks a free port; port() tells which. Scrapes run concurrently with metric
// updates (both thread-safe). The destructor stops serving; the Registry, and every metric
// reference taken from it, dies with the MetricsServer, so it must outlive their users.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "core/status.h"
#include "prometheus/registry.h"

namespace httplib {
class Server;
}  // namespace httplib

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
  MetricsServer(std::unique_ptr<httplib::Server> server, std::string bind_address, int port);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<httplib::Server> server_;
  std::string bind_address_;
  int port_;
  std::thread thread_;  // runs server_->listen_after_bind()
};

}  // namespace podserve
