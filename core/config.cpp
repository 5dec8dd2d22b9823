#include "core/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <initializer_list>
#include <set>
#include <sstream>
#include <utility>

namespace podserve {
namespace {

[[noreturn]] void fail(const std::string& key, const std::string& what) {
  throw ConfigError(fmt::format("config key '{}': {}", key, what));
}

void check_keys(const YAML::Node& node, const std::string& path,
                std::initializer_list<const char*> allowed) {
  if (!node.IsMap()) fail(path, "expected a mapping");
  std::set<std::string> known(allowed.begin(), allowed.end());
  for (const auto& kv : node) {
    const auto key = kv.first.as<std::string>();
    if (!known.contains(key)) {
      fail(path.empty() ? key : path + "." + key,
           fmt::format("unknown key (known: {})", fmt::join(known, ", ")));
    }
  }
}

std::string join_key(const std::string& path, const char* key) {
  return path.empty() ? key : path + "." + key;
}

template <typename T>
void read(const YAML::Node& node, const std::string& path, const char* key, T& out) {
  const auto child = node[key];
  if (!child) return;
  try {
    out = child.as<T>();
  } catch (const YAML::Exception&) {
    fail(join_key(path, key),
         fmt::format("cannot read '{}' as the expected type", YAML::Dump(child)));
  }
}

template <typename E>
void read_enum(const YAML::Node& node, const std::string& path, const char* key, E& out,
               std::initializer_list<std::pair<const char*, E>> names) {
  std::string text;
  read(node, path, key, text);
  if (text.empty()) return;
  for (const auto& [name, value] : names) {
    if (text == name) {
      out = value;
      return;
    }
  }
  std::vector<std::string> options;
  for (const auto& [name, value] : names) options.emplace_back(name);
  fail(join_key(path, key), fmt::format("'{}' is not one of: {}", text, fmt::join(options, ", ")));
}

void require_positive(std::int64_t value, const std::string& key) {
  if (value <= 0) fail(key, fmt::format("must be positive, got {}", value));
}

constexpr std::initializer_list<std::pair<const char*, InstanceRole>> kRoles = {
    {"colocated", InstanceRole::kColocated},
    {"prefill", InstanceRole::kPrefill},
    {"decode", InstanceRole::kDecode}};

}  // namespace

std::string_view to_string(BackendChoice v) {
  switch (v) {
    case BackendChoice::kAuto: return "auto";
    case BackendChoice::kCpu: return "cpu";
    case BackendChoice::kCuda: return "cuda";
  }
  return "?";
}
std::string_view to_string(SchedulerMode v) {
  switch (v) {
    case SchedulerMode::kColocated: return "colocated";
    case SchedulerMode::kDisaggregated: return "disaggregated";
  }
  return "?";
}
std::string_view to_string(AttentionImpl v) {
  switch (v) {
    case AttentionImpl::kAuto: return "auto";
    case AttentionImpl::kPod: return "pod";
    case AttentionImpl::kSerial: return "serial";
    case AttentionImpl::kStreams: return "streams";
    case AttentionImpl::kCpu: return "cpu";
  }
  return "?";
}
std::string_view to_string(RouterPolicy v) {
  switch (v) {
    case RouterPolicy::kRoundRobin: return "round_robin";
    case RouterPolicy::kLeastOutstandingTokens: return "least_outstanding_tokens";
    case RouterPolicy::kKvLoadAware: return "kv_load_aware";
  }
  return "?";
}

std::int32_t ServiceConfig::world_size() const {
  std::int32_t n = 1;
  for (const auto& g : instances) n += g.count * g.tp;
  return n;
}

void ServiceConfig::validate() const {
  if (instances.empty()) fail("instances", "at least one instance group is required");
  bool has_prefill = false, has_decode = false, has_colocated = false;
  for (std::size_t i = 0; i < instances.size(); ++i) {
    const auto key = fmt::format("instances[{}]", i);
    require_positive(instances[i].tp, key + ".tp");
    require_positive(instances[i].count, key + ".count");
    has_prefill |= instances[i].role == InstanceRole::kPrefill;
    has_decode |= instances[i].role == InstanceRole::kDecode;
    has_colocated |= instances[i].role == InstanceRole::kColocated;
  }
  if (scheduler.mode == SchedulerMode::kColocated && (has_prefill || has_decode)) {
    fail("scheduler.mode", "colocated mode takes only instances with role: colocated");
  }
  if (scheduler.mode == SchedulerMode::kDisaggregated &&
      (has_colocated || !has_prefill || !has_decode)) {
    fail("scheduler.mode",
         "disaggregated mode needs at least one prefill and one decode instance and no colocated "
         "ones");
  }
  require_positive(scheduler.token_budget, "scheduler.token_budget");
  require_positive(scheduler.max_running, "scheduler.max_running");
  if (engine.max_graph_batch < 0) fail("engine.max_graph_batch", "must be >= 0");
  require_positive(kv_cache.page_size, "kv_cache.page_size");
  if (kv_cache.num_pages < 0) fail("kv_cache.num_pages", "must be >= 0 (0 = derived)");
  require_positive(kv_cache.cpu_memory_mb, "kv_cache.cpu_memory_mb");
  if (kv_cache.memory_fraction <= 0.0 || kv_cache.memory_fraction > 1.0)
    fail("kv_cache.memory_fraction", "must be in (0, 1]");
  if (kv_transfer.backend != "auto" && kv_transfer.backend != "ucx" &&
      kv_transfer.backend != "cuda_ipc" && kv_transfer.backend != "nccl") {
    fail("kv_transfer.backend",
         fmt::format("'{}' is not one of: auto, ucx, cuda_ipc, nccl", kv_transfer.backend));
  }
  require_positive(kv_transfer.timeout_ms, "kv_transfer.timeout_ms");
  if (kv_transfer.retries < 0) fail("kv_transfer.retries", "must be >= 0");
  if (kv_transfer.peer_error_handling != "auto" && kv_transfer.peer_error_handling != "on" &&
      kv_transfer.peer_error_handling != "off") {
    fail("kv_transfer.peer_error_handling",
         fmt::format("'{}' is not one of: auto, on, off", kv_transfer.peer_error_handling));
  }
  if (kv_transfer.inject_drop_rate < 0.0 || kv_transfer.inject_drop_rate > 1.0)
    fail("kv_transfer.inject_drop_rate", "must be in [0, 1]");
  if (kv_transfer.inject_stall_rate < 0.0 || kv_transfer.inject_stall_rate > 1.0)
    fail("kv_transfer.inject_stall_rate", "must be in [0, 1]");
  if (router.listen.find(':') == std::string::npos) fail("router.listen", "expected HOST:PORT");
  require_positive(router.max_queue, "router.max_queue");
  require_positive(router.http_threads, "router.http_threads");
  require_positive(router.max_tokens_limit, "router.max_tokens_limit");
  if (router.drain_timeout_s < 0) fail("router.drain_timeout_s", "must be >= 0");
  if (metrics.port_base <= 0 || metrics.port_base > 65535) fail("metrics.port_base", "not a port");
  if (model.max_model_len < 0) fail("model.max_model_len", "must be >= 0 (0 = the model's)");
  if (model.dtype != "auto" && model.dtype != "fp32" && model.dtype != "bf16")
    fail("model.dtype", fmt::format("'{}' is not one of: auto, fp32, bf16", model.dtype));
}

ServiceConfig parse_config(const std::string& yaml_text) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("config: YAML syntax error: {}", e.what()));
  }
  ServiceConfig c;
  if (!root || root.IsNull()) {
    c.validate();
    return c;
  }
  check_keys(root, "",
             {"model", "backend", "instances", "scheduler", "engine", "kv_cache", "kv_transfer",
              "router", "metrics", "logging"});
  if (const auto m = root["model"]) {
    check_keys(m, "model",
               {"path", "preset", "config", "weights", "seed", "dtype", "max_model_len"});
    read(m, "model", "path", c.model.path);
    read(m, "model", "preset", c.model.preset);
    read(m, "model", "config", c.model.config);
    read(m, "model", "weights", c.model.weights);
    read(m, "model", "seed", c.model.seed);
    read(m, "model", "dtype", c.model.dtype);
    read(m, "model", "max_model_len", c.model.max_model_len);
    if (!c.model.path.empty()) {
      if (m["config"] || m["weights"]) {
        fail("model.path", "sets model.config and model.weights; give one or the others");
      }
      const std::string dir = c.model.path;
      c.model.config = dir + "/config.json";
      c.model.weights = dir;
    }
  }
  read_enum(root, "", "backend", c.backend,
            {{"auto", BackendChoice::kAuto},
             {"cpu", BackendChoice::kCpu},
             {"cuda", BackendChoice::kCuda}});
  if (const auto list = root["instances"]) {
    if (!list.IsSequence()) fail("instances", "expected a list of {role, tp, count}");
    c.instances.clear();
    for (std::size_t i = 0; i < list.size(); ++i) {
      const auto path = fmt::format("instances[{}]", i);
      check_keys(list[i], path, {"role", "tp", "count"});
      InstanceGroup g;
      read_enum(list[i], path, "role", g.role, kRoles);
      read(list[i], path, "tp", g.tp);
      read(list[i], path, "count", g.count);
      c.instances.push_back(g);
    }
  }
  if (const auto s = root["scheduler"]) {
    check_keys(s, "scheduler", {"mode", "attention", "token_budget", "max_running"});
    read_enum(s, "scheduler", "mode", c.scheduler.mode,
              {{"colocated", SchedulerMode::kColocated},
               {"disaggregated", SchedulerMode::kDisaggregated}});
    read_enum(s, "scheduler", "attention", c.scheduler.attention,
              {{"auto", AttentionImpl::kAuto},
               {"pod", AttentionImpl::kPod},
               {"serial", AttentionImpl::kSerial},
               {"streams", AttentionImpl::kStreams},
               {"cpu", AttentionImpl::kCpu}});
    read(s, "scheduler", "token_budget", c.scheduler.token_budget);
    read(s, "scheduler", "max_running", c.scheduler.max_running);
  }
  if (const auto k = root["kv_cache"]) {
    check_keys(k, "kv_cache", {"page_size", "memory_fraction", "num_pages", "cpu_memory_mb"});
    read(k, "kv_cache", "page_size", c.kv_cache.page_size);
    read(k, "kv_cache", "memory_fraction", c.kv_cache.memory_fraction);
    read(k, "kv_cache", "num_pages", c.kv_cache.num_pages);
    read(k, "kv_cache", "cpu_memory_mb", c.kv_cache.cpu_memory_mb);
  }
  if (const auto t = root["kv_transfer"]) {
    check_keys(t, "kv_transfer",
               {"backend", "layerwise", "timeout_ms", "retries", "inject_drop_rate",
                "inject_stall_rate", "peer_error_handling"});
    read(t, "kv_transfer", "backend", c.kv_transfer.backend);
    read(t, "kv_transfer", "layerwise", c.kv_transfer.layerwise);
    read(t, "kv_transfer", "timeout_ms", c.kv_transfer.timeout_ms);
    read(t, "kv_transfer", "retries", c.kv_transfer.retries);
    read(t, "kv_transfer", "inject_drop_rate", c.kv_transfer.inject_drop_rate);
    read(t, "kv_transfer", "inject_stall_rate", c.kv_transfer.inject_stall_rate);
    read(t, "kv_transfer", "peer_error_handling", c.kv_transfer.peer_error_handling);
  }
  if (const auto r = root["router"]) {
    check_keys(r, "router",
               {"listen", "policy", "max_queue", "http_threads", "max_tokens_limit",
                "served_model_name", "drain_timeout_s"});
    read(r, "router", "listen", c.router.listen);
    read_enum(r, "router", "policy", c.router.policy,
              {{"round_robin", RouterPolicy::kRoundRobin},
               {"least_outstanding_tokens", RouterPolicy::kLeastOutstandingTokens},
               {"least_tokens", RouterPolicy::kLeastOutstandingTokens},
               {"kv_load_aware", RouterPolicy::kKvLoadAware}});
    read(r, "router", "max_queue", c.router.max_queue);
    read(r, "router", "http_threads", c.router.http_threads);
    read(r, "router", "max_tokens_limit", c.router.max_tokens_limit);
    read(r, "router", "served_model_name", c.router.served_model_name);
    read(r, "router", "drain_timeout_s", c.router.drain_timeout_s);
  }
  if (const auto m = root["metrics"]) {
    check_keys(m, "metrics", {"port_base", "bind", "sd_file"});
    read(m, "metrics", "port_base", c.metrics.port_base);
    read(m, "metrics", "bind", c.metrics.bind);
    read(m, "metrics", "sd_file", c.metrics.sd_file);
  }
  if (const auto e = root["engine"]) {
    check_keys(e, "engine", {"cuda_graphs", "max_graph_batch", "small_batch_kernels"});
    read(e, "engine", "cuda_graphs", c.engine.cuda_graphs);
    read(e, "engine", "max_graph_batch", c.engine.max_graph_batch);
    read(e, "engine", "small_batch_kernels", c.engine.small_batch_kernels);
  }
  if (const auto l = root["logging"]) {
    check_keys(l, "logging", {"level"});
    read(l, "logging", "level", c.logging.level);
  }
  c.validate();
  return c;
}

ServiceConfig load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("config: cannot open '{}'", path));
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str());
}

std::string to_yaml(const ServiceConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << YAML::Flow << YAML::BeginMap;
  if (c.model.path.empty()) {
    out << YAML::Key << "config" << YAML::Value << c.model.config << YAML::Key << "weights"
        << YAML::Value << c.model.weights;
  } else {
    out << YAML::Key << "path" << YAML::Value << c.model.path;
  }
  out << YAML::Key << "preset" << YAML::Value << c.model.preset << YAML::Key << "seed"
      << YAML::Value << c.model.seed << YAML::Key << "dtype" << YAML::Value << c.model.dtype
      << YAML::Key << "max_model_len" << YAML::Value << c.model.max_model_len << YAML::EndMap;
  out << YAML::Key << "backend" << YAML::Value << std::string(to_string(c.backend));
  out << YAML::Key << "instances" << YAML::Value << YAML::BeginSeq;
  for (const auto& g : c.instances) {
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "role" << YAML::Value
        << std::string(to_string(g.role)) << YAML::Key << "tp" << YAML::Value << g.tp << YAML::Key
        << "count" << YAML::Value << g.count << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::Key << "scheduler" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
      << "mode" << YAML::Value << std::string(to_string(c.scheduler.mode)) << YAML::Key
      << "attention" << YAML::Value << std::string(to_string(c.scheduler.attention)) << YAML::Key
      << "token_budget" << YAML::Value << c.scheduler.token_budget << YAML::Key << "max_running"
      << YAML::Value << c.scheduler.max_running << YAML::EndMap;
  out << YAML::Key << "engine" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
      << "cuda_graphs" << YAML::Value << c.engine.cuda_graphs << YAML::Key << "max_graph_batch"
      << YAML::Value << c.engine.max_graph_batch << YAML::Key << "small_batch_kernels"
      << YAML::Value << c.engine.small_batch_kernels << YAML::EndMap;
  out << YAML::Key << "kv_cache" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
      << "page_size" << YAML::Value << c.kv_cache.page_size << YAML::Key << "memory_fraction"
      << YAML::Value << c.kv_cache.memory_fraction << YAML::Key << "num_pages" << YAML::Value
      << c.kv_cache.num_pages << YAML::Key << "cpu_memory_mb" << YAML::Value
      << c.kv_cache.cpu_memory_mb << YAML::EndMap;
  out << YAML::Key << "kv_transfer" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
      << "backend" << YAML::Value << c.kv_transfer.backend << YAML::Key << "layerwise"
      << YAML::Value << c.kv_transfer.layerwise << YAML::Key << "timeout_ms" << YAML::Value
      << c.kv_transfer.timeout_ms << YAML::Key << "retries" << YAML::Value << c.kv_transfer.retries
      << YAML::Key << "inject_drop_rate" << YAML::Value << c.kv_transfer.inject_drop_rate
      << YAML::Key << "inject_stall_rate" << YAML::Value << c.kv_transfer.inject_stall_rate
      << YAML::Key << "peer_error_handling" << YAML::Value << c.kv_transfer.peer_error_handling
      << YAML::EndMap;
  out << YAML::Key << "router" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
      << "listen" << YAML::Value << c.router.listen << YAML::Key << "policy" << YAML::Value
      << std::string(to_string(c.router.policy)) << YAML::Key << "max_queue" << YAML::Value
      << c.router.max_queue << YAML::Key << "http_threads" << YAML::Value << c.router.http_threads
      << YAML::Key << "max_tokens_limit" << YAML::Value << c.router.max_tokens_limit << YAML::Key
      << "served_model_name" << YAML::Value << c.router.served_model_name << YAML::Key
      << "drain_timeout_s" << YAML::Value << c.router.drain_timeout_s << YAML::EndMap;
  out << YAML::Key << "metrics" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
      << "port_base" << YAML::Value << c.metrics.port_base << YAML::Key << "bind" << YAML::Value
      << c.metrics.bind << YAML::Key << "sd_file" << YAML::Value << c.metrics.sd_file
      << YAML::EndMap;
  out << YAML::Key << "logging" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
      << "level" << YAML::Value << c.logging.level << YAML::EndMap;
  out << YAML::EndMap;
  return out.c_str();
}

}  // namespace podserve
