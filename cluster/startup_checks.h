// What the configuration and this build alone say about starting a deployment, checked by main
// before MPI starts: `podserve --print-world-size`, which deploy/mpirun.sh asks first, refuses
// such a config with one line and exit code 2 before any rank runs. The ranks check again what
// depends on them (ports, hosts, visible GPUs, GPU memory); their errors that name a config key
// are configuration errors too (is_config_error: exit code 2).
// Pure functions of their arguments; thread-safe.
#pragma once

#include "core/config.h"
#include "core/model_config.h"
#include "core/status.h"

namespace podserve {

// kInvalidArgument naming the config key when the deployment cannot start on this build:
// `backend: cuda` on a build without the CUDA backend or for a model shape its attention kernels
// refuse (per instance group, after the TP split); in disaggregated mode, `kv_transfer.backend:
// nccl` (the service does not run its two-sided protocol) and `cuda_ipc` where the KV cache will
// be in host memory (`backend: cpu`, or `auto` where the CUDA backend cannot take the model).
Status check_startup(const ServiceConfig& config, const ModelConfig& model);

// Whether a start-up failure is a configuration error: its message names a config key
// ("config key '...': ..."), the form every such error in podserve takes.
bool is_config_error(const Status& status);

}  // namespace podserve
