#include "core/model_config.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace podserve
