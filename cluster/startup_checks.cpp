#include "cluster/startup_checks.h"

#include <fmt/format.h>

#include <string_view>

#include "kernels/backend_factory.h"

namespace podserve {
namespace {

// Whether the CUDA backend of this build takes the attention shape of `group`'s ranks.
Status cuda_takes(const ModelConfig& model, const InstanceGroup& group, int page_size) {
  return backend_supports_attention(BackendKind::kCuda, model.num_heads / group.tp,
                                    model.num_kv_heads / group.tp, model.head_dim, page_size);
}

}  // namespace

Status check_startup(const ServiceConfig& config, const ModelConfig& model) {
  for (const InstanceGroup& group : config.instances) {
    const Status cuda = cuda_takes(model, group, config.kv_cache.page_size);
    if (config.backend == BackendChoice::kCuda && !cuda.ok()) {
      return invalid_argument(
          fmt::format("config key 'backend': cuda cannot serve model '{}' at tp {}: {}", model.name,
                      group.tp, cuda.message()));
    }
    if (config.scheduler.mode != SchedulerMode::kDisaggregated) continue;
    const bool kv_in_host_memory = config.backend == BackendChoice::kCpu ||
                                   (config.backend == BackendChoice::kAuto && !cuda.ok());
    if (config.kv_transfer.backend == "cuda_ipc" && kv_in_host_memory) {
      return invalid_argument(fmt::format(
          "config key 'kv_transfer.backend': cuda_ipc moves GPU pages, and the KV cache will be "
          "in host memory ({}): use ucx or auto",
          config.backend == BackendChoice::kCpu ? "backend: cpu" : cuda.message()));
    }
  }
  if (config.scheduler.mode == SchedulerMode::kDisaggregated &&
      config.kv_transfer.backend == "nccl") {
    return invalid_argument(
        "config key 'kv_transfer.backend': 'nccl' is built and benchmarked "
        "(podserve-kvtransfer-bench) but the service ships KV pages over ucx or cuda_ipc only");
  }
  return Status::Ok();
}

bool is_config_error(const Status& status) {
  return !status.ok() && std::string_view(status.message()).starts_with("config key '");
}

}  // namespace podserve
