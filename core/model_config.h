// Model architecture description (Llama family): from a preset name or a Hugging Face
// checkpoint's config.json (plus generation_config.json beside it). Pure data plus loaders;
// thread-compatible.
//
// Hugging Face configs: `architectures` must name LlamaForCausalLM, MistralForCausalLM or
// Qwen2ForCausalLM (anything else is refused, naming it). Both layouts transformers writes are
// read: 4.x (`rope_theta` and `rope_scaling` at the top level) and 5.x (`rope_parameters`
// holding both). Refused, with the reason in the message: rope types other than default,
// linear and llama3; Llama's attention_bias (an o_proj bias) and mlp_bias; Qwen2 with
// use_sliding_window. A sliding window (Mistral) no smaller than the context is plain causal
// attention; a smaller one caps the context at the window, where both agree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/types.h"

namespace podserve {

// RoPE frequency scaling (transformers' rope_type). kLinear divides every frequency by
// `factor`; kLlama3 divides the low frequencies (wavelength above original_max_position /
// low_freq_factor) by `factor`, keeps the high ones (wavelength below original_max_position /
// high_freq_factor) and blends in between.
enum class RopeScalingKind : std::uint8_t { kNone, kLinear, kLlama3 };
std::string_view to_string(RopeScalingKind kind);

struct RopeScaling {
  RopeScalingKind kind = RopeScalingKind::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  std::int32_t original_max_position_embeddings = 8192;
};

// The rotary inverse frequencies [head_dim / 2]: theta^(-2i / head_dim), scaled.
std::vector<double> rope_inverse_frequencies(float theta, const RopeScaling& scaling,
                                             std::int32_t head_dim);

// Sampling defaults from generation_config.json, for requests that leave them out.
struct GenerationDefaults {
  std::optional<float> temperature;  // absent (or do_sample false): the API default
  std::optional<float> top_p;
};

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
  TokenId eos_token_id = 2;  // the first of eos_token_ids
  // Every id that ends generation (config.json's and generation_config.json's eos_token_id,
  // an int or a list); empty means {eos_token_id}.
  std::vector<TokenId> eos_token_ids;
  bool tie_word_embeddings = false;
  std::string architecture = "LlamaForCausalLM";
  bool attention_bias = false;  // q, k and v projections have biases (Qwen2)
  RopeScaling rope_scaling;
  GenerationDefaults generation;

  // Whether `token` ends generation.
  bool is_eos(TokenId token) const;
  // eos_token_ids, or {eos_token_id} when that is empty.
  std::vector<TokenId> stop_token_ids() const;

  std::int32_t gqa_group() const { return num_heads / num_kv_heads; }
  // Parameter count of the whole (unsharded) model.
  std::int64_t num_parameters() const;
  // Checks internal consistency and that `tp` shards heads and MLP evenly.
  Status validate(int tp) const;
};

// Presets: tiny, llama3-8b, llama2-7b, yi-6b, mistral-7b.
Result<ModelConfig> model_preset(std::string_view name);
std::vector<std::string> model_preset_names();
// The architectures model_config_from_hf_json accepts.
std::vector<std::string> supported_architectures();
// Reads a Hugging Face config.json, and generation_config.json from the same directory when
// present (its eos_token_id list replaces the config's; its temperature and top_p, with
// do_sample, become `generation`).
Result<ModelConfig> model_config_from_hf_json(const std::string& path);

}  // namespace podserve
