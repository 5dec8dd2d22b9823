#include "core/model_config.h"

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

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

std::int64_t ModelConfig::num_parameters() const {
  const std::int64_t h = hidden_size, kv = std::int64_t{num_kv_heads} * head_dim;
  const std::int64_t q = std::int64_t{num_heads} * head_dim;
  const std::int64_t per_layer = h * q + 2 * h * kv + q * h + 3 * h * intermediate_size + 2 * h;
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
  if (eos_token_id < 0 || eos_token_id >= vocab_size) {
    return invalid_argument(fmt::format("eos_token_id {} outside the vocabulary", eos_token_id));
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

Result<ModelConfig> model_config_from_hf_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found(fmt::format("cannot open model config '{}'", path));
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(fmt::format("'{}': {}", path, e.what()));
  }
  ModelConfig c;
  c.name = path;
  try {
    c.vocab_size = j.at("vocab_size").get<int>();
    c.hidden_size = j.at("hidden_size").get<int>();
    c.intermediate_size = j.at("intermediate_size").get<int>();
    c.num_layers = j.at("num_hidden_layers").get<int>();
    c.num_heads = j.at("num_attention_heads").get<int>();
    c.num_kv_heads = j.value("num_key_value_heads", c.num_heads);
    c.head_dim = j.contains("head_dim") && !j["head_dim"].is_null() ? j["head_dim"].get<int>()
                                                                    : c.hidden_size / c.num_heads;
    c.rope_theta = j.value("rope_theta", 10000.0f);
    c.rms_norm_eps = j.value("rms_norm_eps", 1e-5f);
    c.max_position_embeddings = j.value("max_position_embeddings", 4096);
    c.tie_word_embeddings = j.value("tie_word_embeddings", false);
    if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
      c.bos_token_id = j["bos_token_id"].get<int>();
    if (j.contains("eos_token_id")) {
      const auto& eos = j["eos_token_id"];
      if (eos.is_number_integer())
        c.eos_token_id = eos.get<int>();
      else if (eos.is_array() && !eos.empty())
        c.eos_token_id = eos[0].get<int>();
    }
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(fmt::format("'{}': {}", path, e.what()));
  }
  return c;
}

}  // namespace podserve
