// Model architecture description (Llama family): from a preset name or a Hugging Face
// config.json. Pure data plus loaders; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/types.h"

namespace podserve {

struct ModelConfig {
  std::string name;  // preset name or the config's directory
  std::int32_t vocab_size = 0;
  std::int32_t hidden_size = 0;
  std::int32_t intermediate_size = 0;
  std::int32_t num_layers = 0;
  std::int32_t num_heads = 0;     // query heads
  std::int32_t num_kv_heads = 0;  // key/value heads (GQA when < num_heads)
  std::int32_t head_dim = 0;
  float rope_theta = 10000.0f;
  float rms_norm_eps = 1e-5f;
  std::int32_t max_position_embeddings = 0;
  TokenId bos_token_id = 1;
  TokenId eos_token_id = 2;
  bool tie_word_embeddings = false;

  std::int32_t gqa_group() const { return num_heads / num_kv_heads; }
  // Parameter count of the whole (unsharded) model.
  std::int64_t num_parameters() const;
  // Checks internal consistency and that `tp` shards heads and MLP evenly.
  Status validate(int tp) const;
};

// Presets: tiny, llama3-8b, llama2-7b, yi-6b, mistral-7b.
Result<ModelConfig> model_preset(std::string_view name);
std::vector<std::string> model_preset_names();
// Reads a Hugging Face config.json (LlamaForCausalLM / MistralForCausalLM fields).
Result<ModelConfig> model_config_from_hf_json(const std::string& path);

}  // namespace podserve
