#include "metrics/metrics.h"

#include <utility>

#include "metrics/http_listen.h"
#include "prometheus/text_serializer.h"
#include "spdlog/spdlog.h"

namespace podserve {

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& bind_address,
                                                            int port) {
  const std::string listen = bind_address + ":" + std::to_string(port);
  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] { return new httplib::ThreadPool(2); };  // scrapes are rare
  server->set_socket_options(http::reuse_address_only);
  const int bound = port == 0 ? server->bind_to_any_port(bind_address)
                    : server->bind_to_port(bind_address, port) ? port
                                                               : -1;
  if (bound <= 0) {
    Status status = unavailable("metrics: cannot serve /metrics on " + listen +
                                ": cannot bind (address in use or not local)");
    spdlog::error("{}", status.message());
    return status;
  }
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(server), bind_address, bound));
}

MetricsServer::MetricsServer(std::unique_ptr<httplib::Server> server, std::string bind_address,
                             int port)
    : registry_(std::make_shared<prometheus::Registry>()),
      server_(std::move(server)),
      bind_address_(std::move(bind_address)),
      port_(port) {
  server_->Get("/metrics", [registry = registry_](const httplib::Request&, httplib::Response& res) {
    res.set_content(prometheus::TextSerializer().Serialize(registry->Collect()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  thread_ = http::listen_in_background(*server_);
}

MetricsServer::~MetricsServer() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string MetricsServer::endpoint() const { return bind_address_ + ":" + std::to_string(port_); }

}  // namespace podserve
