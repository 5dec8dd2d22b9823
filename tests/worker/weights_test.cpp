// Random weights (sharding is slicing), fp16/bf16 conversion, and the safetensors reader and
// writer: a tiny random model written to a temp dir loads back bit for bit, sharded or not.
#include "worker/weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/float_convert.h"
#include "worker/safetensors.h"

namespace podserve {
namespace {

ModelConfig small_model() {
  ModelConfig c;
  c.name = "weights-test";
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  c.max_position_embeddings = 64;
  c.eos_token_id = 2;
  return c;
}

class TempDir {
 public:
  TempDir() {
    path_ =
        std::filesystem::temp_directory_path() /
        ("podserve-weights-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// Writes every tensor of `config` (full, from `seed`) split over two files.
void write_random_checkpoint(const ModelConfig& config, std::uint64_t seed, DType dtype,
                             const TempDir& dir) {
  RandomWeightSource random(seed);
  std::vector<SafetensorsTensor> first, second;
  const auto specs = llama_checkpoint_specs(config);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    auto values = random.load(specs[i], 0, 1);
    ASSERT_TRUE(values.ok());
    (i % 2 == 0 ? first : second).push_back({specs[i].name, dtype, specs[i].shape, *values});
  }
  ASSERT_TRUE(write_safetensors(dir.file("model-00001-of-00002.safetensors"), first).ok());
  ASSERT_TRUE(write_safetensors(dir.file("model-00002-of-00002.safetensors"), second).ok());
}

TEST(RandomWeights, ShardsAreSlicesOfTheFullTensor) {
  const ModelConfig config = small_model();
  RandomWeightSource random(42);
  for (const TensorSpec& spec : llama_checkpoint_specs(config)) {
    auto full = random.load(spec, 0, 1);
    ASSERT_TRUE(full.ok());
    for (int rank = 0; rank < 2; ++rank) {
      auto shard = random.load(spec, rank, 2);
      ASSERT_TRUE(shard.ok());
      auto slice = shard_slice(spec, rank, 2);
      ASSERT_TRUE(slice.ok());
      ASSERT_EQ(static_cast<std::int64_t>(shard->size()), slice->numel());
      for (std::int64_t r = 0; r < slice->rows(); ++r)
        for (std::int64_t c = 0; c < slice->cols(); ++c)
          ASSERT_EQ((*shard)[static_cast<std::size_t>(r * slice->cols() + c)],
                    (*full)[static_cast<std::size_t>((slice->row_begin + r) * spec.cols() +
                                                     slice->col_begin + c)])
              << spec.name;
    }
  }
}

// load() spreads rows over threads: every element must still be element()'s, for a tensor large
// enough to be split, sharded by rows and by columns.
TEST(RandomWeights, LoadIsElementwiseWhateverTheThreading) {
  for (const ShardAxis axis : {ShardAxis::kRows, ShardAxis::kColumns}) {
    TensorSpec spec{"model.layers.0.mlp.down_proj.weight", {3000, 700}, axis, 0.05f};
    RandomWeightSource random(11);
    for (int rank = 0; rank < 2; ++rank) {
      auto shard = random.load(spec, rank, 2);
      ASSERT_TRUE(shard.ok());
      auto slice = shard_slice(spec, rank, 2);
      ASSERT_TRUE(slice.ok());
      std::size_t i = 0;
      for (std::int64_t r = slice->row_begin; r < slice->row_end; ++r)
        for (std::int64_t c = slice->col_begin; c < slice->col_end; ++c)
          ASSERT_EQ((*shard)[i++], RandomWeightSource::element(11, spec, r * spec.cols() + c))
              << "row " << r << " col " << c;
      EXPECT_EQ(i, shard->size());
    }
  }
}

TEST(RandomWeights, AmplitudesAndSeeds) {
  const ModelConfig config = small_model();
  RandomWeightSource a(1), b(2);
  for (const TensorSpec& spec : llama_checkpoint_specs(config)) {
    auto va = a.load(spec, 0, 1);
    auto vb = b.load(spec, 0, 1);
    ASSERT_TRUE(va.ok() && vb.ok());
    if (spec.init_amplitude == 0.0f) {
      for (float v : *va) EXPECT_EQ(v, 1.0f) << spec.name;
      continue;
    }
    double sum_sq = 0;
    for (float v : *va) {
      ASSERT_LT(std::fabs(v), spec.init_amplitude) << spec.name;
      sum_sq += double{v} * v;
    }
    // Uniform(-a, a) has variance a^2/3.
    const double expected = double{spec.init_amplitude} * spec.init_amplitude / 3.0;
    EXPECT_NEAR(sum_sq / static_cast<double>(va->size()), expected, 0.35 * expected) << spec.name;
    EXPECT_NE(*va, *vb) << spec.name;
  }
  EXPECT_FALSE(
      shard_slice(*llama_tensor_spec(config, "model.layers.0.mlp.up_proj.weight"), 0, 5).ok());
}

TEST(FloatConvert, HalfFormatsRoundTrip) {
  for (float v :
       {0.0f, 1.0f, -2.5f, 0.333251953125f, 65504.0f, -6.103515625e-05f, 5.960464477539063e-08f}) {
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;
  }
  for (float v : {0.0f, 1.0f, -2.5f, 3.140625f, 0x1p100f})
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(v)), v) << v;
  EXPECT_EQ(f32_to_bf16(1.00390625f), f32_to_bf16(1.0f));   // tie rounds to even
  EXPECT_EQ(f32_to_f16(1.00048828125f), f32_to_f16(1.0f));  // tie rounds to even
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::nanf("")))));
}

TEST(Safetensors, ShardedCheckpointLoadsBitwise) {
  const ModelConfig config = small_model();
  TempDir dir;
  write_random_checkpoint(config, 7, DType::kF32, dir);
  auto source = SafetensorsWeightSource::open(dir.file("model-*.safetensors"));
  ASSERT_TRUE(source.ok()) << source.status().to_string();
  RandomWeightSource random(7);
  for (const TensorSpec& spec : llama_checkpoint_specs(config)) {
    for (int tp : {1, 2}) {
      for (int rank = 0; rank < tp; ++rank) {
        auto loaded = (*source)->load(spec, rank, tp);
        auto expected = random.load(spec, rank, tp);
        ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
        ASSERT_EQ(*loaded, *expected) << spec.name << " tp=" << tp << " rank=" << rank;
      }
    }
  }
  auto by_directory = SafetensorsWeightSource::open(dir.str());
  ASSERT_TRUE(by_directory.ok());
  EXPECT_TRUE((*by_directory)->load(lm_head_spec(config), 1, 2).ok());
}

class HalfCheckpoint : public ::testing::TestWithParam<DType> {};

TEST_P(HalfCheckpoint, ValuesComeBackRounded) {
  const DType dtype = GetParam();
  const ModelConfig config = small_model();
  TempDir dir;
  write_random_checkpoint(config, 9, dtype, dir);
  auto source = SafetensorsWeightSource::open(dir.str());
  ASSERT_TRUE(source.ok());
  RandomWeightSource random(9);
  for (const TensorSpec& spec : llama_checkpoint_specs(config)) {
    auto loaded = (*source)->load(spec, 1, 2);
    auto exact = random.load(spec, 1, 2);
    ASSERT_TRUE(loaded.ok() && exact.ok());
    for (std::size_t i = 0; i < exact->size(); ++i) {
      const float rounded = dtype == DType::kBF16 ? bf16_to_f32(f32_to_bf16((*exact)[i]))
                                                  : f16_to_f32(f32_to_f16((*exact)[i]));
      ASSERT_EQ((*loaded)[i], rounded) << spec.name << "[" << i << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, HalfCheckpoint, ::testing::Values(DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST(Safetensors, RejectsBrokenFilesAndMismatches) {
  const ModelConfig config = small_model();
  TempDir dir;
  EXPECT_EQ(SafetensorsWeightSource::open(dir.file("none-*.safetensors")).status().code(),
            StatusCode::kNotFound);

  const std::string short_file = dir.file("short.safetensors");
  std::ofstream(short_file, std::ios::binary) << "abc";
  EXPECT_FALSE(SafetensorsFile::open(short_file).ok());

  // Header length past the end of the file.
  const std::string bad_length = dir.file("bad_length.safetensors");
  {
    std::ofstream out(bad_length, std::ios::binary);
    const std::uint64_t n = 1000;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << "{}";
  }
  EXPECT_FALSE(SafetensorsFile::open(bad_length).ok());

  // data_offsets that do not match the shape.
  const std::string bad_offsets = dir.file("bad_offsets.safetensors");
  {
    const std::string header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})";
    std::ofstream out(bad_offsets, std::ios::binary);
    const std::uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header << std::string(16, '\0');
  }
  EXPECT_EQ(SafetensorsFile::open(bad_offsets).status().code(), StatusCode::kInvalidArgument);

  // Wrong shape for the model, and a missing tensor.
  const std::vector<SafetensorsTensor> wrong{{"model.norm.weight", DType::kF32, {3}, {1, 2, 3}}};
  ASSERT_TRUE(write_safetensors(dir.file("wrong.safetensors"), wrong).ok());
  auto source = SafetensorsWeightSource::open(dir.file("wrong.safetensors"));
  ASSERT_TRUE(source.ok());
  EXPECT_EQ((*source)->load(*llama_tensor_spec(config, "model.norm.weight"), 0, 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*source)->load(lm_head_spec(config), 0, 1).status().code(), StatusCode::kNotFound);

  // The same tensor in two files.
  ASSERT_TRUE(write_safetensors(dir.file("dup-1.safetensors"), wrong).ok());
  ASSERT_TRUE(write_safetensors(dir.file("dup-2.safetensors"), wrong).ok());
  EXPECT_EQ(SafetensorsWeightSource::open(dir.file("dup-*.safetensors")).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace podserve
