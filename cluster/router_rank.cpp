#include "cluster/router_rank.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <fstream>
#include <thread>

#include "cluster/kv_fabric_mpi.h"
#include "cluster/rank_metrics.h"
#include "cluster/router_link.h"
#include "metrics/service_discovery.h"
#include "router/router.h"

namespace podserve {
namespace {

Status write_service_discovery(const Topology& topology, const ServiceConfig& config) {
  if (config.metrics.sd_file.empty()) return Status::Ok();
  const auto groups = rank_scrape_groups(topology.endpoints(), config);
  PODSERVE_RETURN_IF_ERROR(write_file_sd(config.metrics.sd_file, groups));
  spdlog::info("Prometheus file_sd targets written to {}", config.metrics.sd_file);
  return Status::Ok();
}

Status write_pid_file(const std::string& path) {
  if (path.empty()) return Status::Ok();
  std::ofstream out(path);
  out << getpid() << "\n";
  if (!out) return unavailable(fmt::format("cannot write pid file '{}'", path));
  return Status::Ok();
}

// Waits for SIGTERM/SIGINT (blocked in every thread by main), then drains the router and asks
// the link to stop the instances. Returns when a signal came or `done` was set.
void watch_signals(Router& router, RouterLink& link, const std::atomic<bool>& done) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  const timespec poll_interval{0, 200'000'000};
  while (!done) {
    const int signal_number = sigtimedwait(&stop_signals, nullptr, &poll_interval);
    if (signal_number < 0) continue;
    spdlog::info("{} received: draining {} in-flight requests", strsignal(signal_number),
                 router.in_flight());
    router.begin_drain();
    if (!router.wait_drained()) {
      spdlog::warn("drain deadline passed with {} requests in flight; aborting them",
                   router.in_flight());
    }
    link.request_shutdown();
    return;
  }
}

}  // namespace

Status run_router_rank(const Topology& topology, const ServiceConfig& config,
                       const ModelConfig& model, const std::string& pid_file) {
  // Collective with the instance ranks' fabric set-up (the router offers no memory).
  PODSERVE_RETURN_IF_ERROR(exchange_kv_fabric(nullptr, topology, config, {}));
  PODSERVE_ASSIGN_OR_RETURN(auto metrics_server, start_rank_metrics(topology, config));
  auto router_metrics =
      make_router_metrics(metrics_server->registry(), rank_metrics_identity(topology, config));
  RouterLink link(topology);
  Router router(config, model, link, router_metrics);
  if (const Status started = router.start(); !started.ok()) {
    return Status(started.code(), "config key 'router.listen': " + started.message());
  }
  PODSERVE_RETURN_IF_ERROR(write_service_discovery(topology, config));
  PODSERVE_RETURN_IF_ERROR(write_pid_file(pid_file));
  spdlog::info("serving {} on http://{} ({} instances)", model.name, config.router.listen,
               topology.instances().size());

  std::atomic<bool> link_done{false};
  std::thread signal_thread([&] { watch_signals(router, link, link_done); });
  // Leaders finish their current iteration and stop; allow for a slow one.
  const auto status = link.run(router, 30'000);
  link_done = true;
  signal_thread.join();
  router.stop();
  if (!pid_file.empty()) unlink(pid_file.c_str());
  if (status.ok()) spdlog::info("router stopped cleanly");
  return status;
}

}  // namespace podserve
