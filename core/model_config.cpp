#include "core/model_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>

namespace podserve {
namespace {

ModelConfig make(std::string name, int vocab, int hidden, int inter, int layers, int heads,
                 int kv_heads, float theta, float eps, int max_pos, TokenId bos, TokenId eos) {
  ModelConfig c;
  c.name = std::move(name);
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.rope_theta = theta;
  c.rms_norm_eps = eps;
  c.max_position_embeddings = max_pos;
  c.bos_token_id = bos;
  c.eos_token_id = eos;
  return c;
}

}  // namespace

std::string_view to_string(RopeScalingKind kind) {
  switch (kind) {
    case RopeScalingKind::kNone: return "none";
    case RopeScalingKind::kLinear: return "linear";
    case RopeScalingKind::kLlama3: return "llama3";
  }
  return "?";
}

std::vector<double> rope_inverse_frequencies(float theta, const RopeScaling& scaling,
                                             std::int32_t head_dim) {
  std::vector<double> inv_freq(static_cast<std::size_t>(head_dim / 2));
  const double old_context = scaling.original_max_position_embeddings;
  const double low_wavelength = old_context / scaling.low_freq_factor;
  const double high_wavelength = old_context / scaling.high_freq_factor;
  for (std::size_t i = 0; i < inv_freq.size(); ++i) {
    const double f = std::pow(static_cast<double>(theta),
                              -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    switch (scaling.kind) {
      case RopeScalingKind::kNone: inv_freq[i] = f; break;
      case RopeScalingKind::kLinear: inv_freq[i] = f / scaling.factor; break;
      case RopeScalingKind::kLlama3: {
        const double wavelength = 2.0 * std::numbers::pi / f;
        if (wavelength < high_wavelength) {
          inv_freq[i] = f;
        } else if (wavelength > low_wavelength) {
          inv_freq[i] = f / scaling.factor;
        } else {
          const double smooth = (old_context / wavelength - scaling.low_freq_factor) /
                                (scaling.high_freq_factor - scaling.low_freq_factor);
          inv_freq[i] = (1.0 - smooth) * f / scaling.factor + smooth * f;
        }
        break;
      }
    }
  }
  return inv_freq;
}

bool ModelConfig::is_eos(TokenId token) const {
  if (eos_token_ids.empty()) return token == eos_token_id;
  return std::find(eos_token_ids.begin(), eos_token_ids.end(), token) != eos_token_ids.end();
}

std::vector<TokenId> ModelConfig::stop_token_ids() const {
  return eos_token_ids.empty() ? std::vector<TokenId>{eos_token_id} : eos_token_ids;
}

std::int64_t ModelConfig::num_parameters() const {
  const std::int64_t h = hidden_size, kv = std::int64_t{num_kv_heads} * head_dim;
  const std::int64_t q = std::int64_t{num_heads} * head_dim;
  const std::int64_t biases = attention_bias ? q + 2 * kv : 0;
  const std::int64_t per_layer =
      h * q + 2 * h * kv + q * h + 3 * h * intermediate_size + 2 * h + biases;
  const std::int64_t embed = std::int64_t{vocab_size} * h;
  return num_layers * per_layer + embed * (tie_word_embeddings ? 1 : 2) + h;
}

Status ModelConfig::validate(int tp) const {
  if (vocab_size <= 0 || hidden_size <= 0 || intermediate_size <= 0 || num_layers <= 0 ||
      num_heads <= 0 || num_kv_heads <= 0 || head_dim <= 0) {
    return invalid_argument(fmt::format("model '{}': every dimension must be positive", name));
  }
  if (num_heads % num_kv_heads != 0) {
    return invalid_argument(
        fmt::format("model '{}': num_heads {} not a multiple of num_kv_heads {}", name, num_heads,
                    num_kv_heads));
  }
  if (tp < 1 || num_kv_heads % tp != 0 || num_heads % tp != 0 || intermediate_size % tp != 0 ||
      vocab_size % tp != 0) {
    return invalid_argument(fmt::format(
        "model '{}': tp={} must divide num_heads {}, num_kv_heads {}, intermediate_size {} and "
        "vocab_size {}",
        name, tp, num_heads, num_kv_heads, intermediate_size, vocab_size));
  }
  if (head_dim % 2 != 0) return invalid_argument("head_dim must be even for RoPE");
  for (TokenId eos : stop_token_ids()) {
    if (eos < 0 || eos >= vocab_size) {
      return invalid_argument(fmt::format("eos_token_id {} outside the vocabulary", eos));
    }
  }

  return Status::Ok();
}

std::vector<std::string> model_preset_names() {
  return {"tiny", "llama3-8b", "llama2-7b", "yi-6b", "mistral-7b"};
}

Result<ModelConfig> model_preset(std::string_view name) {
  // tiny: byte-level vocabulary (256 bytes + BOS 256 + EOS 257, padded to 512).
  if (name == "tiny") return make("tiny", 512, 256, 688, 4, 8, 2, 10000.0f, 1e-5f, 4096, 256, 257);
  if (name == "llama3-8b")
    return make("llama3-8b", 128256, 4096, 14336, 32, 32, 8, 500000.0f, 1e-5f, 8192, 128000,
                128001);
  if (name == "llama2-7b")
    return make("llama2-7b", 32000, 4096, 11008, 32, 32, 32, 10000.0f, 1e-5f, 4096, 1, 2);
  if (name == "yi-6b")
    return make("yi-6b", 64000, 4096, 11008, 32, 32, 4, 5000000.0f, 1e-5f, 4096, 1, 2);
  if (name == "mistral-7b")
    return make("mistral-7b", 32000, 4096, 14336, 32, 32, 8, 1000000.0f, 1e-5f, 32768, 1, 2);
  return not_found(fmt::format("unknown model preset '{}' (known: {})", name,
                               fmt::join(model_preset_names(), ", ")));
}

std::vector<std::string> supported_architectures() {
  return {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
}

namespace {

Result<nlohmann::json> read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return not_found(fmt::format("cannot open '{}'", path.string()));
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(fmt::format("'{}': {}", path.string(), e.what()));
  }
}

// An int or a list of ints (eos_token_id); empty when absent or null.
std::vector<TokenId> token_id_list(const nlohmann::json& j, const char* key) {
  std::vector<TokenId> ids;
  if (!j.contains(key)) return ids;
  const auto& value = j[key];
  if (value.is_number_integer()) ids.push_back(value.get<TokenId>());
  if (value.is_array()) {
    for (const auto& id : value) ids.push_back(id.get<TokenId>());
  }
  return ids;
}

// The rope section: 5.x's rope_parameters (theta inside) or 4.x's rope_scaling + rope_theta.
Status read_rope(const nlohmann::json& j, ModelConfig& c) {
  const nlohmann::json* scaling = nullptr;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    scaling = &j["rope_parameters"];
    c.rope_theta = scaling->value("rope_theta", j.value("rope_theta", 10000.0f));
  } else {
    c.rope_theta = j.value("rope_theta", 10000.0f);
    if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) scaling = &j["rope_scaling"];
  }
  if (j.contains("partial_rotary_factor") && j["partial_rotary_factor"].get<double>() != 1.0)
    return invalid_argument("partial_rotary_factor other than 1 is not supported");
  if (scaling == nullptr) return Status::Ok();
  const std::string type = scaling->value("rope_type", scaling->value("type", "default"));
  if (type == "default") return Status::Ok();
  RopeScaling& r = c.rope_scaling;
  r.factor = scaling->at("factor").get<float>();
  if (!(r.factor > 0.0f)) return invalid_argument("rope scaling factor must be > 0");
  if (type == "linear") {
    r.kind = RopeScalingKind::kLinear;
    return Status::Ok();
  }
  if (type == "llama3") {
    r.kind = RopeScalingKind::kLlama3;
    r.low_freq_factor = scaling->at("low_freq_factor").get<float>();
    r.high_freq_factor = scaling->at("high_freq_factor").get<float>();
    r.original_max_position_embeddings =
        scaling->at("original_max_position_embeddings").get<std::int32_t>();
    if (!(r.high_freq_factor > r.low_freq_factor) || r.original_max_position_embeddings < 1) {
      return invalid_argument(
          "llama3 rope scaling needs high_freq_factor > low_freq_factor and "
          "original_max_position_embeddings >= 1");
    }
    return Status::Ok();
  }
  return invalid_argument(
      fmt::format("rope type '{}' is not supported (supported: default, linear, llama3)", type));
}

// The architecture's own fields: biases, sliding windows, activation.
Status read_architecture(const nlohmann::json& j, ModelConfig& c) {
  if (!j.contains("architectures") || !j["architectures"].is_array() ||
      j["architectures"].size() != 1) {
    return invalid_argument(fmt::format("needs \"architectures\" naming one of: {}",
                                        fmt::join(supported_architectures(), ", ")));
  }
  c.architecture = j["architectures"][0].get<std::string>();
  const auto supported = supported_architectures();
  if (std::find(supported.begin(), supported.end(), c.architecture) == supported.end()) {
    return invalid_argument(fmt::format("architecture {} is not supported (supported: {})",
                                        c.architecture, fmt::join(supported, ", ")));
  }
  const std::string act = j.value("hidden_act", "silu");
  if (act != "silu") {
    return invalid_argument(fmt::format("hidden_act '{}' is not supported (only silu)", act));
  }
  if (j.value("mlp_bias", false)) return invalid_argument("mlp_bias is not supported");
  if (c.architecture == "Qwen2ForCausalLM") {
    c.attention_bias = true;  // Qwen2's q/k/v projections always have biases
    if (j.value("use_sliding_window", false)) {
      return invalid_argument("Qwen2 use_sliding_window is not supported");
    }
  } else if (j.value("attention_bias", false)) {
    return invalid_argument(
        fmt::format("{} with attention_bias (an o_proj bias besides q/k/v ones) is not supported",
                    c.architecture));
  }
  if (c.architecture == "MistralForCausalLM" && j.contains("sliding_window") &&
      j["sliding_window"].is_number_integer()) {
    // Within the window, sliding-window attention is causal attention.
    c.max_position_embeddings =
        std::min(c.max_position_embeddings, j["sliding_window"].get<std::int32_t>());
  }
  return Status::Ok();
}

Status read_generation_config(const std::filesystem::path& path, ModelConfig& c) {
  if (!std::filesystem::exists(path)) return Status::Ok();
  PODSERVE_ASSIGN_OR_RETURN(const nlohmann::json j, read_json(path));
  try {
    const std::vector<TokenId> eos = token_id_list(j, "eos_token_id");
    if (!eos.empty()) c.eos_token_ids = eos;
    if (j.value("do_sample", false)) {
      c.generation.temperature = j.value("temperature", 1.0f);
      c.generation.top_p = j.value("top_p", 1.0f);
    }
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(fmt::format("'{}': {}", path.string(), e.what()));
  }
  return Status::Ok();
}

}  // namespace

Result<ModelConfig> model_config_from_hf_json(const std::string& path) {
  auto parsed = read_json(path);
  if (!parsed.ok()) {
    if (parsed.status().code() == StatusCode::kNotFound)
      return not_found(fmt::format("cannot open model config '{}'", path));
    return parsed.status();
  }
  const nlohmann::json& j = *parsed;
  ModelConfig c;
  c.name = path;
  const auto fail = [&](const Status& status) {
    return Status(status.code(), fmt::format("'{}': {}", path, status.message()));
  };
  try {
    c.vocab_size = j.at("vocab_size").get<int>();
    c.hidden_size = j.at("hidden_size").get<int>();
    c.intermediate_size = j.at("intermediate_size").get<int>();
    c.num_layers = j.at("num_hidden_layers").get<int>();
    c.num_heads = j.at("num_attention_heads").get<int>();
    c.num_kv_heads = j.value("num_key_value_heads", c.num_heads);
    c.head_dim = j.contains("head_dim") && !j["head_dim"].is_null() ? j["head_dim"].get<int>()
                                                                    : c.hidden_size / c.num_heads;
    c.rms_norm_eps = j.value("rms_norm_eps", 1e-5f);
    c.max_position_embeddings = j.value("max_position_embeddings", 4096);
    c.tie_word_embeddings = j.value("tie_word_embeddings", false);
    if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
      c.bos_token_id = j["bos_token_id"].get<int>();
    c.eos_token_ids = token_id_list(j, "eos_token_id");
    if (Status s = read_architecture(j, c); !s.ok()) return fail(s);
    if (Status s = read_rope(j, c); !s.ok()) return fail(s);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(fmt::format("'{}': {}", path, e.what()));
  }
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (Status s = read_generation_config(dir / "generation_config.json", c); !s.ok()) return s;
  if (!c.eos_token_ids.empty()) c.eos_token_id = c.eos_token_ids.front();
  return c;
}

}  // namespace podserve
