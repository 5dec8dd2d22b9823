#include "core/model_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace podserve {
namespace {

TEST(ModelConfig, EveryPresetIsValid) {
  for (const auto& name : model_preset_names()) {
    auto c = model_preset(name);
    ASSERT_TRUE(c.ok()) << name;
    EXPECT_TRUE(c->validate(1).ok()) << name;
    EXPECT_EQ(c->head_dim * c->num_heads, c->hidden_size) << name;
  }
}

TEST(ModelConfig, PresetShapes) {
  auto llama3 = model_preset("llama3-8b");
  ASSERT_TRUE(llama3.ok());
  EXPECT_EQ(llama3->num_kv_heads, 8);
  EXPECT_EQ(llama3->gqa_group(), 4);
  EXPECT_NEAR(llama3->num_parameters() / 1e9, 8.03, 0.05);
  auto llama2 = model_preset("llama2-7b");
  ASSERT_TRUE(llama2.ok());
  EXPECT_NEAR(llama2->num_parameters() / 1e9, 6.74, 0.05);
  auto tiny = model_preset("tiny");
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->hidden_size, 256);
  EXPECT_EQ(tiny->num_layers, 4);
  EXPECT_EQ(tiny->num_heads, 8);
  EXPECT_EQ(tiny->num_kv_heads, 2);
}

TEST(ModelConfig, UnknownPresetIsNotFound) {
  auto c = model_preset("gpt-5");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
}

TEST(ModelConfig, TpMustDivideHeads) {
  auto tiny = model_preset("tiny");
  ASSERT_TRUE(tiny.ok());
  EXPECT_TRUE(tiny->validate(2).ok());
  EXPECT_FALSE(tiny->validate(4).ok());  // 2 KV heads
  EXPECT_FALSE(tiny->validate(3).ok());
}

TEST(ModelConfig, ReadsHuggingFaceConfigJson) {
  const auto path = std::filesystem::temp_directory_path() / "podserve_model_config_test.json";
  std::ofstream(path) << R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 1000,
    "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "bos_token_id": 1,
    "eos_token_id": [2, 3], "tie_word_embeddings": true})";
  auto c = model_config_from_hf_json(path.string());
  std::filesystem::remove(path);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_FLOAT_EQ(c->rope_theta, 500000.0f);
  EXPECT_EQ(c->eos_token_id, 2);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->validate(2).ok());
}

// deploy/configs/models/tiny-32l.json (tools/layerwise_probe.sh): the tiny preset at Llama depth.
TEST(ModelConfig, Tiny32LayerConfigIsTinyWithLlamaDepth) {
  auto deep = model_config_from_hf_json(PODSERVE_SOURCE_DIR "/deploy/configs/models/tiny-32l.json");
  ASSERT_TRUE(deep.ok()) << deep.status().to_string();
  auto tiny = model_preset("tiny");
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(deep->num_layers, 32);
  EXPECT_EQ(deep->vocab_size, tiny->vocab_size);
  EXPECT_EQ(deep->hidden_size, tiny->hidden_size);
  EXPECT_EQ(deep->intermediate_size, tiny->intermediate_size);
  EXPECT_EQ(deep->num_heads, tiny->num_heads);
  EXPECT_EQ(deep->num_kv_heads, tiny->num_kv_heads);
  EXPECT_EQ(deep->head_dim, tiny->head_dim);
  EXPECT_FLOAT_EQ(deep->rope_theta, tiny->rope_theta);
  EXPECT_FLOAT_EQ(deep->rms_norm_eps, tiny->rms_norm_eps);
  EXPECT_EQ(deep->max_position_embeddings, tiny->max_position_embeddings);
  EXPECT_EQ(deep->bos_token_id, tiny->bos_token_id);
  EXPECT_EQ(deep->eos_token_id, tiny->eos_token_id);
  EXPECT_EQ(deep->tie_word_embeddings, tiny->tie_word_embeddings);
  EXPECT_TRUE(deep->validate(2).ok());
}

TEST(ModelConfig, MissingFieldIsAnError) {
  const auto path = std::filesystem::temp_directory_path() / "podserve_model_config_bad.json";
  std::ofstream(path) << R"({"vocab_size": 10})";
  auto c = model_config_from_hf_json(path.string());
  std::filesystem::remove(path);
  EXPECT_FALSE(c.ok());
}

// A config.json with `fields` merged over a small valid Llama config, read back.
Result<ModelConfig> read_config(const std::string& fields) {
  // A directory of this process's own: ctest runs the tests that call this in parallel.
  static int calls = 0;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("podserve_model_config_fields_" + std::to_string(::getpid()) + "_" +
                    std::to_string(calls++));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"vocab_size": 1000, "hidden_size": 128,
    "intermediate_size": 344, "num_hidden_layers": 3, "num_attention_heads": 4,
    "max_position_embeddings": 2048, )"
                                     << fields << "}";
  auto c = model_config_from_hf_json((dir / "config.json").string());
  std::filesystem::remove_all(dir);
  return c;
}

TEST(ModelConfig, ArchitecturesChecked) {
  for (const auto& arch : supported_architectures()) {
    auto c = read_config(R"("architectures": [")" + arch + R"("])");
    ASSERT_TRUE(c.ok()) << arch << ": " << c.status().to_string();
    EXPECT_EQ(c->architecture, arch);
    EXPECT_EQ(c->attention_bias, arch == "Qwen2ForCausalLM");
  }
  auto gemma = read_config(R"("architectures": ["GemmaForCausalLM"])");
  ASSERT_FALSE(gemma.ok());
  EXPECT_NE(gemma.status().message().find("GemmaForCausalLM"), std::string::npos);
  EXPECT_FALSE(read_config(R"("model_type": "llama")").ok());  // no architectures at all
}

TEST(ModelConfig, UnsupportedVariantsRefusedWithTheReason) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("architectures": ["LlamaForCausalLM"], "attention_bias": true)", "attention_bias"},
      {R"("architectures": ["LlamaForCausalLM"], "mlp_bias": true)", "mlp_bias"},
      {R"("architectures": ["LlamaForCausalLM"], "hidden_act": "gelu")", "gelu"},
      {R"("architectures": ["Qwen2ForCausalLM"], "use_sliding_window": true)", "sliding"},
      {R"("architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "yarn",
         "factor": 4.0})",
       "yarn"},
      {R"("architectures": ["LlamaForCausalLM"], "rope_parameters": {"rope_type": "dynamic",
         "factor": 2.0, "rope_theta": 10000.0})",
       "dynamic"},
  };
  for (const auto& [fields, reason] : cases) {
    auto c = read_config(fields);
    ASSERT_FALSE(c.ok()) << fields;
    EXPECT_NE(c.status().message().find(reason), std::string::npos) << c.status().to_string();
  }
}

TEST(ModelConfig, RopeBothLayouts) {
  // transformers 4.x: rope_theta and rope_scaling ("type" in older files) at the top level.
  auto v4 = read_config(R"("architectures": ["LlamaForCausalLM"], "rope_theta": 500000.0,
    "rope_scaling": {"type": "linear", "factor": 4.0})");
  ASSERT_TRUE(v4.ok()) << v4.status().to_string();
  EXPECT_EQ(v4->rope_scaling.kind, RopeScalingKind::kLinear);
  EXPECT_FLOAT_EQ(v4->rope_scaling.factor, 4.0f);
  EXPECT_FLOAT_EQ(v4->rope_theta, 500000.0f);
  // 5.x: rope_parameters holds both.
  auto v5 = read_config(R"("architectures": ["LlamaForCausalLM"], "rope_parameters": {
    "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
  ASSERT_TRUE(v5.ok()) << v5.status().to_string();
  EXPECT_EQ(v5->rope_scaling.kind, RopeScalingKind::kLlama3);
  EXPECT_FLOAT_EQ(v5->rope_theta, 500000.0f);
  EXPECT_EQ(v5->rope_scaling.original_max_position_embeddings, 8192);
}

// Llama-3.1's published scaling (factor 8, low 1, high 4, original 8192, theta 500000, D 128)
// against the formula written out here: high frequencies kept, low ones divided by 8, the band
// between blended.
TEST(ModelConfig, Llama3RopeFrequencies) {
  RopeScaling s{RopeScalingKind::kLlama3, 8.0f, 1.0f, 4.0f, 8192};
  const auto scaled = rope_inverse_frequencies(500000.0f, s, 128);
  const auto plain = rope_inverse_frequencies(500000.0f, RopeScaling{}, 128);
  ASSERT_EQ(scaled.size(), 64u);
  int kept = 0, divided = 0, blended = 0;
  for (std::size_t i = 0; i < 64; ++i) {
    EXPECT_DOUBLE_EQ(plain[i], std::pow(500000.0, -2.0 * static_cast<double>(i) / 128.0));
    const double wavelength = 2 * M_PI / plain[i];
    if (wavelength < 8192.0 / 4) {
      EXPECT_DOUBLE_EQ(scaled[i], plain[i]);
      ++kept;
    } else if (wavelength > 8192.0) {
      EXPECT_DOUBLE_EQ(scaled[i], plain[i] / 8);
      ++divided;
    } else {
      const double smooth = (8192.0 / wavelength - 1.0) / 3.0;
      EXPECT_NEAR(scaled[i], (1 - smooth) * plain[i] / 8 + smooth * plain[i], 1e-15);
      ++blended;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
  RopeScaling linear{RopeScalingKind::kLinear, 4.0f};
  EXPECT_DOUBLE_EQ(rope_inverse_frequencies(10000.0f, linear, 64)[5],
                   rope_inverse_frequencies(10000.0f, RopeScaling{}, 64)[5] / 4);
}

TEST(ModelConfig, MistralSlidingWindowCapsTheContext) {
  auto c = read_config(R"("architectures": ["MistralForCausalLM"], "sliding_window": 1024)");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->max_position_embeddings, 1024);
  auto none = read_config(R"("architectures": ["MistralForCausalLM"], "sliding_window": null)");
  ASSERT_TRUE(none.ok()) << none.status().to_string();
  EXPECT_EQ(none->max_position_embeddings, 2048);
}

TEST(ModelConfig, EosListAndGenerationConfig) {
  const auto dir = std::filesystem::temp_directory_path() / "podserve_generation_config";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"architectures": ["LlamaForCausalLM"],
    "vocab_size": 1000, "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 3,
    "num_attention_heads": 4, "eos_token_id": 7})";
  std::ofstream(dir / "generation_config.json")
      << R"({"eos_token_id": [9, 7, 8], "do_sample": false, "temperature": 0.6})";
  auto c = model_config_from_hf_json((dir / "config.json").string());
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->eos_token_ids, (std::vector<TokenId>{9, 7, 8}));
  EXPECT_EQ(c->eos_token_id, 9);
  EXPECT_TRUE(c->is_eos(8));
  EXPECT_FALSE(c->is_eos(6));
  EXPECT_FALSE(c->generation.temperature.has_value());  // do_sample false: greedy
  c->eos_token_ids = {9, 1000};
  EXPECT_FALSE(c->validate(1).ok());  // every EOS id must be in the vocabulary
}

}  // namespace
}  // namespace podserve
