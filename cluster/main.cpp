// podserve: the service binary. Every MPI rank runs it; rank 0 becomes the router, the others
// become instance ranks (see cluster/topology.h). Exit codes: 0 clean shutdown, 1 runtime
// failure, 2 configuration error: found before MPI starts (the config file, the model, and
// cluster/startup_checks.h) on every rank alike, or by one rank at start-up (an error naming a
// config key: a taken port, an instance across hosts), which then ends every rank with
// MPI_Abort(2) so that mpirun exits 2 as well.
#include <mpi.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "cluster/instance_rank.h"
#include "cluster/router_rank.h"
#include "cluster/startup_checks.h"
#include "cluster/topology.h"
#include "core/config.h"
#include "core/logging.h"
#include "core/model_config.h"

namespace {

// The model the config names, checked against every instance's TP degree.
podserve::Result<podserve::ModelConfig> resolve_model(const podserve::ServiceConfig& config) {
  auto model = config.model.config.empty()
                   ? podserve::model_preset(config.model.preset)
                   : podserve::model_config_from_hf_json(config.model.config);
  if (!model.ok()) return model;
  if (config.model.max_model_len > 0) model->max_position_embeddings = config.model.max_model_len;
  for (const auto& group : config.instances) {
    auto valid = model->validate(group.tp);
    if (!valid.ok()) return valid;
  }
  return model;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"podserve: LLM inference testbed service (run under mpirun)"};
  std::string config_path, pid_file, log_level, sd_file;
  bool print_world_size = false, print_config = false;
  app.add_option("--config", config_path, "deployment YAML")->required()->check(CLI::ExistingFile);
  app.add_option("--pid-file", pid_file,
                 "router rank: write its pid here (send it SIGTERM to drain and stop)");
  app.add_option("--log-level", log_level, "overrides logging.level (also env PODSERVE_LOG_LEVEL)");
  app.add_option("--sd-file", sd_file,
                 "overrides metrics.sd_file: where the router writes every rank's /metrics "
                 "target (Prometheus file_sd)");
  app.add_flag("--print-world-size", print_world_size,
               "print the number of ranks the config needs and exit");
  app.add_flag("--print-config", print_config, "print the effective configuration and exit");
  CLI11_PARSE(app, argc, argv);

  podserve::ServiceConfig config;
  try {
    config = podserve::load_config(config_path);
  } catch (const podserve::ConfigError& e) {
    std::fprintf(stderr, "podserve: %s\n", e.what());
    return 2;
  }
  if (!sd_file.empty()) config.metrics.sd_file = sd_file;
  if (log_level.empty()) {
    const char* env_level = std::getenv("PODSERVE_LOG_LEVEL");
    log_level = env_level != nullptr && *env_level != '\0' ? env_level : config.logging.level;
  }
  auto model = resolve_model(config);
  if (!model.ok()) {
    std::fprintf(stderr, "podserve: config key 'model': %s\n", model.status().to_string().c_str());
    return 2;
  }
  if (print_config) {
    std::cout << podserve::to_yaml(config) << "\n";
    return 0;
  }
  if (const auto startup = podserve::check_startup(config, *model); !startup.ok()) {
    std::fprintf(stderr, "podserve: %s\n", startup.message().c_str());
    return 2;
  }
  if (print_world_size) {
    std::cout << config.world_size() << "\n";
    return 0;
  }

  // SIGTERM/SIGINT are handled by the router rank's signal thread (drain, then stop every
  // rank); instance ranks keep them blocked and stop when the router says so. Blocked before
  // MPI starts any thread, so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  // Only each rank's main thread calls MPI.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int exit_code = 0;
  {
    auto topology = podserve::Topology::create(config);
    if (!topology.ok()) {
      int rank = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      if (rank == 0) std::fprintf(stderr, "podserve: %s\n", topology.status().message().c_str());
      MPI_Finalize();
      return 2;
    }
    if (!podserve::setup_logging(log_level, topology->world_rank(), topology->role_name())) {
      std::fprintf(stderr, "podserve: config key 'logging.level': unknown level '%s'\n",
                   log_level.c_str());
      MPI_Finalize();
      return 2;
    }
    if (topology->is_router()) {
      spdlog::info("podserve {} starting: {} ranks, model {} ({:.1f}M parameters)",
                   PODSERVE_VERSION, topology->world_size(), model->name,
                   model->num_parameters() / 1e6);
      spdlog::info("effective configuration:\n{}", podserve::to_yaml(config));
    }
    const auto status = topology->is_router()
                            ? podserve::run_router_rank(*topology, config, *model, pid_file)
                            : podserve::run_instance_rank(*topology, config, *model);
    if (!status.ok()) {
      spdlog::error("{} failed: {}", topology->role_name(), status.to_string());
      exit_code = podserve::is_config_error(status) ? 2 : 1;
    }
  }
  if (exit_code != 0) MPI_Abort(MPI_COMM_WORLD, exit_code);
  MPI_Finalize();
  return exit_code;
}
