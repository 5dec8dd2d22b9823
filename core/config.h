// The deployment configuration: one YAML file describes a whole service (model, backend,
// instances, scheduler, KV cache, KV transfer, router, metrics, logging). Every key has a typed
// default; unknown keys and bad values are errors that name the key. Loading is done once at
// start-up (an edge: load_config throws ConfigError); the result is an immutable value.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/types.h"

namespace podserve {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class BackendChoice : std::uint8_t { kAuto, kCpu, kCuda };
enum class SchedulerMode : std::uint8_t { kColocated, kDisaggregated };
// How a hybrid batch's attention runs (docs/design.md section 4). kAuto: pod on CUDA, cpu on CPU.
enum class AttentionImpl : std::uint8_t { kAuto, kPod, kSerial, kStreams, kCpu };
enum class RouterPolicy : std::uint8_t { kRoundRobin, kLeastOutstandingTokens, kKvLoadAware };

struct ModelSection {
  // A Hugging Face checkpoint directory (config.json, generation_config.json, *.safetensors):
  // sets config and weights from it (giving those as well is an error).
  std::string path;
  std::string preset = "tiny";     // used when `config` is empty
  std::string config;              // path to a Hugging Face config.json
  std::string weights = "random";  // "random" or a path / glob of .safetensors files
  std::uint64_t seed = 1;          // seed of random weights
  std::string dtype = "auto";      // auto | fp32 | bf16 (CPU computes in fp32)
  std::int32_t max_model_len = 0;  // 0: the model's max_position_embeddings
};

struct InstanceGroup {
  InstanceRole role = InstanceRole::kColocated;
  std::int32_t tp = 1;
  std::int32_t count = 1;
};

struct SchedulerSection {
  SchedulerMode mode = SchedulerMode::kColocated;
  AttentionImpl attention = AttentionImpl::kAuto;
  std::int32_t token_budget = 512;  // new tokens per iteration (decodes + prefill chunks)
  std::int32_t max_running = 64;    // sequences in the running set
};

// The model executor. cuda_graphs: decode-only steps replay CUDA graphs captured per batch-size
// bucket (CUDA backend, TP 1); false runs every step eagerly (A/B, debugging). Decode batches
// above max_graph_batch (0: scheduler.max_running, at most 256) run eagerly.
// small_batch_kernels: GEMMs of few rows may run on podserve's own kernel where it times faster
// than cuBLASLt on the device (false: cuBLASLt only, the baseline of an A/B).
struct EngineSection {
  bool cuda_graphs = true;
  std::int32_t max_graph_batch = 0;
  bool small_batch_kernels = true;
};

struct KvCacheSection {
  std::int32_t page_size = 16;       // tokens per page
  double memory_fraction = 0.9;      // CUDA: fraction of free GPU memory after weights
  std::int32_t num_pages = 0;        // 0: derived (CUDA: memory_fraction; CPU: cpu_memory_mb)
  std::int32_t cpu_memory_mb = 512;  // CPU backend: KV cache size per rank
};

struct KvTransferSection {
  // auto (cuda_ipc for GPU KV caches on one host, else ucx) | ucx | cuda_ipc | nccl (refused)
  std::string backend = "auto";
  bool layerwise = false;          // ship layer l's pages while layer l+1 computes
  std::int32_t timeout_ms = 5000;  // per transfer
  std::int32_t retries = 1;        // then the decode instance prefills locally
  // UCX peer failure detection: auto = on when the KV fabric spans several hosts, off on one
  // host (UCX 1.13's shared-memory transports refuse it, which would force TCP).
  std::string peer_error_handling = "auto";  // auto | on | off
  // Fault injection for tests and drills: the share of transfers that fail at once (drop) or
  // never complete (stall, so they hit timeout_ms). 0 in production.
  double inject_drop_rate = 0.0;
  double inject_stall_rate = 0.0;
};

struct RouterSection {
  std::string listen = "127.0.0.1:8000";
  RouterPolicy policy = RouterPolicy::kLeastOutstandingTokens;
  std::int32_t max_queue = 4096;         // requests admitted but not finished, beyond: 429
  std::int32_t http_threads = 128;       // each in-flight request holds one
  std::int32_t max_tokens_limit = 4096;  // largest max_tokens a request may ask for
  std::string served_model_name;         // default: the model's name
  std::int32_t drain_timeout_s = 30;     // SIGTERM: time to finish in-flight requests
};

struct MetricsSection {
  std::int32_t port_base = 9400;  // rank r serves /metrics on port_base + node-local rank
  std::string bind = "127.0.0.1";
  std::string sd_file;  // Prometheus file_sd target list, written by rank 0; empty: none
};

struct LoggingSection {
  std::string level = "info";  // trace | debug | info | warn | error
};

struct ServiceConfig {
  ModelSection model;
  BackendChoice backend = BackendChoice::kAuto;
  std::vector<InstanceGroup> instances{InstanceGroup{}};
  SchedulerSection scheduler;
  EngineSection engine;
  KvCacheSection kv_cache;
  KvTransferSection kv_transfer;
  RouterSection router;
  MetricsSection metrics;
  LoggingSection logging;

  // Ranks the deployment needs: 1 (router) + sum(count * tp).
  std::int32_t world_size() const;
  // Cross-key checks (roles vs mode, positive sizes); throws ConfigError naming the key.
  void validate() const;
};

// Parses YAML text / a file. Throws ConfigError("key.path: what is wrong").
ServiceConfig parse_config(const std::string& yaml_text);
ServiceConfig load_config(const std::string& path);
// The effective configuration as YAML (logged at start-up).
std::string to_yaml(const ServiceConfig& config);

std::string_view to_string(BackendChoice v);
std::string_view to_string(SchedulerMode v);
std::string_view to_string(AttentionImpl v);
std::string_view to_string(RouterPolicy v);

}  // namespace podserve
