// LlamaModel against a naive fp64 full-recompute reference (no paging, no chunking, written
// here from the Llama definition), plus chunked prefill, decode, hybrid batches, TP=2 in
// threads and safetensors-loaded weights.
//
// Tolerance: |model - reference| <= 2e-3 + 2e-3 * |reference| per logit (fp32 accumulation over
// hidden 64 / intermediate 96, 2 layers, against fp64). Different chunkings of the same tokens
// agree to 1e-4 + 1e-4 * |logit|.
#include "worker/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>
#include <thread>

#include "kernels/cpu_backend.h"
#include "test_communicators.h"
#include "worker/safetensors.h"

namespace podserve {
namespace {

using testing_support::SingleRankCommunicator;
using testing_support::ThreadCommunicator;
using testing_support::ThreadGroup;

constexpr std::uint64_t kSeed = 1234;
constexpr std::int32_t kPageSize = 4;
constexpr std::int32_t kNumPages = 64;

ModelConfig test_model(bool tied = false) {
  ModelConfig c;
  c.name = "model-test";
  c.vocab_size = 64;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.rope_theta = 10000.0f;
  c.max_position_embeddings = 256;
  c.eos_token_id = 2;
  c.tie_word_embeddings = tied;
  return c;
}

// The naive reference: every position of one token sequence, full recompute in fp64.
// Returns logits [tokens.size(), vocab].
std::vector<double> reference_logits(const ModelConfig& c, WeightSource& weights,
                                     const std::vector<TokenId>& tokens) {
  const auto get = [&](const TensorSpec& spec) {
    auto v = weights.load(spec, 0, 1);
    EXPECT_TRUE(v.ok());
    return std::vector<double>(v->begin(), v->end());
  };
  const auto named = [&](const std::string& name) { return get(*llama_tensor_spec(c, name)); };
  const int n = static_cast<int>(tokens.size()), h = c.hidden_size, d = c.head_dim;
  const int hq = c.num_heads, hkv = c.num_kv_heads, f = c.intermediate_size, vocab = c.vocab_size;
  const auto linear = [](const std::vector<double>& w, const std::vector<double>& x, int out,
                         int in) {
    std::vector<double> y(static_cast<std::size_t>(out), 0.0);
    for (int o = 0; o < out; ++o)
      for (int i = 0; i < in; ++i) y[o] += w[static_cast<std::size_t>(o) * in + i] * x[i];
    return y;
  };
  const auto rms_norm = [&](const std::vector<double>& x, const std::vector<double>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + c.rms_norm_eps);
    std::vector<double> y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  };
  const auto rope = [&](std::vector<double>& x, int heads, int pos) {
    for (int head = 0; head < heads; ++head)
      for (int i = 0; i < d / 2; ++i) {
        const double freq = std::pow(static_cast<double>(c.rope_theta), -2.0 * i / d);
        const double angle = pos * freq;
        double& a = x[static_cast<std::size_t>(head * d + i)];
        double& b = x[static_cast<std::size_t>(head * d + i + d / 2)];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(angle) - b0 * std::sin(angle);
        b = b0 * std::cos(angle) + a0 * std::sin(angle);
      }
  };

  const auto embed = named("model.embed_tokens.weight");
  std::vector<std::vector<double>> x(static_cast<std::size_t>(n));
  for (int t = 0; t < n; ++t)
    x[t].assign(embed.begin() + static_cast<std::ptrdiff_t>(tokens[t]) * h,
                embed.begin() + static_cast<std::ptrdiff_t>(tokens[t] + 1) * h);
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LayerTensorNames names = layer_tensor_names(layer);
    const auto in_norm = named(names.input_norm), wq = named(names.q_proj),
               wk = named(names.k_proj);
    const auto wv = named(names.v_proj), wo = named(names.o_proj),
               post = named(names.post_attention_norm);
    const auto wg = named(names.gate_proj), wu = named(names.up_proj), wd = named(names.down_proj);
    std::vector<std::vector<double>> q(n), k(n), v(n);
    for (int t = 0; t < n; ++t) {
      const auto normed = rms_norm(x[t], in_norm);
      q[t] = linear(wq, normed, hq * d, h);
      k[t] = linear(wk, normed, hkv * d, h);
      v[t] = linear(wv, normed, hkv * d, h);
      rope(q[t], hq, t);
      rope(k[t], hkv, t);
    }
    for (int t = 0; t < n; ++t) {
      std::vector<double> attn(static_cast<std::size_t>(hq * d), 0.0);
      for (int head = 0; head < hq; ++head) {
        const int kv_head = head / (hq / hkv);
        std::vector<double> scores(static_cast<std::size_t>(t + 1));
        double max_score = -1e300;
        for (int s = 0; s <= t; ++s) {
          double dot = 0;
          for (int i = 0; i < d; ++i) dot += q[t][head * d + i] * k[s][kv_head * d + i];
          scores[s] = dot / std::sqrt(static_cast<double>(d));
          max_score = std::max(max_score, scores[s]);
        }
        double denom = 0;
        for (double& sc : scores) denom += (sc = std::exp(sc - max_score));
        for (int s = 0; s <= t; ++s)
          for (int i = 0; i < d; ++i)
            attn[head * d + i] += scores[s] / denom * v[s][kv_head * d + i];
      }
      const auto o = linear(wo, attn, h, hq * d);
      for (int i = 0; i < h; ++i) x[t][i] += o[i];
      const auto normed = rms_norm(x[t], post);
      const auto g = linear(wg, normed, f, h), u = linear(wu, normed, f, h);
      std::vector<double> act(static_cast<std::size_t>(f));
      for (int i = 0; i < f; ++i) act[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const auto down = linear(wd, act, h, f);
      for (int i = 0; i < h; ++i) x[t][i] += down[i];
    }
  }
  const auto final_norm = named("model.norm.weight");
  const auto lm_head = get(lm_head_spec(c));
  std::vector<double> logits;
  for (int t = 0; t < n; ++t) {
    const auto y = linear(lm_head, rms_norm(x[t], final_norm), vocab, h);
    logits.insert(logits.end(), y.begin(), y.end());
  }
  return logits;
}

std::vector<TokenId> random_tokens(int n, std::uint32_t seed, int vocab) {
  std::mt19937 rng(seed);
  std::vector<TokenId> t(static_cast<std::size_t>(n));
  for (auto& token : t) token = static_cast<TokenId>(rng() % static_cast<std::uint32_t>(vocab));
  return t;
}

// Shuffled page ids, so consecutive positions live in scattered pages.
std::vector<std::int32_t> scattered_pages(int count, std::uint32_t seed) {
  std::vector<std::int32_t> pages(kNumPages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(seed));
  pages.resize(static_cast<std::size_t>(count));
  return pages;
}

SequenceWork work_for(RequestId id, const std::vector<TokenId>& tokens, int begin, int end,
                      const std::vector<std::int32_t>& pages, bool prefill) {
  SequenceWork w;
  w.seq_id = id;
  w.num_cached_tokens = begin;
  w.new_tokens.assign(tokens.begin() + begin, tokens.begin() + end);
  w.page_table.assign(pages.begin(), pages.begin() + (end + kPageSize - 1) / kPageSize);
  w.is_prefill = prefill;
  w.sample = true;
  return w;
}

void expect_near_reference(std::span<const float> logits, const std::vector<double>& ref,
                           std::size_t ref_row, const ModelConfig& c, const std::string& what) {
  ASSERT_EQ(logits.size(), static_cast<std::size_t>(c.vocab_size));
  double norm = 0;
  for (int i = 0; i < c.vocab_size; ++i) {
    const double expected = ref[ref_row * c.vocab_size + i];
    ASSERT_FALSE(std::isnan(logits[i])) << what;
    ASSERT_NEAR(logits[i], expected, 2e-3 + 2e-3 * std::fabs(expected)) << what << " logit " << i;
    norm += expected * expected;
  }
  EXPECT_GT(norm, 1e-2) << what << ": reference logits are trivially zero";
}

class ModelTest : public ::testing::Test {
 protected:
  std::unique_ptr<LlamaModel> make_model(const ModelConfig& config, WeightSource& weights) {
    ModelOptions options;
    options.num_pages = kNumPages;
    options.page_size = kPageSize;
    auto model = LlamaModel::create(config, weights, *backend_, comm_, options);
    EXPECT_TRUE(model.ok()) << model.status().to_string();
    return model.ok() ? std::move(model).value() : nullptr;
  }

  std::unique_ptr<Backend> backend_ = make_cpu_backend();
  SingleRankCommunicator comm_;
  RandomWeightSource weights_{kSeed};
};

TEST_F(ModelTest, SinglePromptOneChunkMatchesReference) {
  for (bool tied : {false, true}) {
    const ModelConfig config = test_model(tied);
    auto model = make_model(config, weights_);
    ASSERT_NE(model, nullptr);
    const auto tokens = random_tokens(23, 1, config.vocab_size);
    const auto ref = reference_logits(config, weights_, tokens);
    BatchPlan plan;
    plan.sequences.push_back(work_for(1, tokens, 0, 23, scattered_pages(6, 1), true));
    auto logits = model->forward_logits(plan);
    ASSERT_TRUE(logits.ok()) << logits.status().to_string();
    expect_near_reference(*logits, ref, 22, config, tied ? "tied" : "untied");
  }
}

class ChunkedPrefillTest : public ModelTest, public ::testing::WithParamInterface<int> {};

TEST_P(ChunkedPrefillTest, ChunksGiveTheSameLastTokenLogits) {
  const int chunk = GetParam();
  const ModelConfig config = test_model();
  auto model = make_model(config, weights_);
  const auto tokens = random_tokens(37, 2, config.vocab_size);
  const auto pages = scattered_pages(10, 2);
  const auto ref = reference_logits(config, weights_, tokens);

  BatchPlan whole;
  whole.sequences.push_back(work_for(1, tokens, 0, 37, pages, true));
  auto whole_logits = model->forward_logits(whole);
  ASSERT_TRUE(whole_logits.ok());

  std::vector<float> last;
  for (int begin = 0; begin < 37; begin += chunk) {
    const int end = std::min(37, begin + chunk);
    BatchPlan plan;
    plan.sequences.push_back(work_for(2, tokens, begin, end, pages, true));
    plan.sequences.back().sample = end == 37;
    auto logits = model->forward_logits(plan);
    ASSERT_TRUE(logits.ok()) << logits.status().to_string();
    if (end < 37) {
      EXPECT_TRUE(logits->empty());
    } else {
      last = *logits;
    }
  }
  expect_near_reference(last, ref, 36, config, "chunked");
  for (int i = 0; i < config.vocab_size; ++i)
    EXPECT_NEAR(last[i], (*whole_logits)[i], 1e-4 + 1e-4 * std::fabs((*whole_logits)[i]));
}

INSTANTIATE_TEST_SUITE_P(Chunks, ChunkedPrefillTest, ::testing::Values(3, 5, 16),
                         [](const auto& info) { return "chunk" + std::to_string(info.param); });

TEST_F(ModelTest, DecodeStepsAfterPrefill) {
  const ModelConfig config = test_model();
  auto model = make_model(config, weights_);
  const auto tokens = random_tokens(18, 3, config.vocab_size);  // 12 prompt + 6 decoded
  const auto pages = scattered_pages(5, 3);
  const auto ref = reference_logits(config, weights_, tokens);
  BatchPlan prefill;
  prefill.sequences.push_back(work_for(1, tokens, 0, 12, pages, true));
  auto logits = model->forward_logits(prefill);
  ASSERT_TRUE(logits.ok());
  expect_near_reference(*logits, ref, 11, config, "prefill");
  for (int pos = 12; pos < 18; ++pos) {
    BatchPlan decode;
    decode.sequences.push_back(work_for(1, tokens, pos, pos + 1, pages, false));
    logits = model->forward_logits(decode);
    ASSERT_TRUE(logits.ok());
    expect_near_reference(*logits, ref, static_cast<std::size_t>(pos), config,
                          "decode at " + std::to_string(pos));
  }
}

TEST_F(ModelTest, HybridBatchMatchesEachSequenceAlone) {
  const ModelConfig config = test_model();
  auto model = make_model(config, weights_);
  const auto a = random_tokens(14, 4, config.vocab_size);
  const auto b = random_tokens(9, 5, config.vocab_size);
  const auto c = random_tokens(20, 6, config.vocab_size);
  const auto pages = scattered_pages(16, 4);
  const std::vector<std::int32_t> pages_a(pages.begin(), pages.begin() + 4);
  const std::vector<std::int32_t> pages_b(pages.begin() + 4, pages.begin() + 7);
  const std::vector<std::int32_t> pages_c(pages.begin() + 7, pages.begin() + 12);
  const auto ref_a = reference_logits(config, weights_, a);
  const auto ref_b = reference_logits(config, weights_, b);
  const auto ref_c = reference_logits(config, weights_, c);

  BatchPlan first;  // a: prefill 13 tokens; c: first chunk of 8 (no sampling)
  first.sequences.push_back(work_for(1, a, 0, 13, pages_a, true));
  first.sequences.push_back(work_for(3, c, 0, 8, pages_c, true));
  first.sequences.back().sample = false;
  auto logits = model->forward_logits(first);
  ASSERT_TRUE(logits.ok());
  ASSERT_EQ(logits->size(), static_cast<std::size_t>(config.vocab_size));
  expect_near_reference(*logits, ref_a, 12, config, "a prefill");

  BatchPlan hybrid;  // a: decode; b: whole prompt; c: last chunk of 12
  hybrid.sequences.push_back(work_for(1, a, 13, 14, pages_a, false));
  hybrid.sequences.push_back(work_for(2, b, 0, 9, pages_b, true));
  hybrid.sequences.push_back(work_for(3, c, 8, 20, pages_c, true));
  logits = model->forward_logits(hybrid);
  ASSERT_TRUE(logits.ok());
  ASSERT_EQ(logits->size(), 3u * static_cast<std::size_t>(config.vocab_size));
  const std::span<const float> rows(*logits);
  const auto v = static_cast<std::size_t>(config.vocab_size);
  expect_near_reference(rows.subspan(0, v), ref_a, 13, config, "a decode");
  expect_near_reference(rows.subspan(v, v), ref_b, 8, config, "b prefill");
  expect_near_reference(rows.subspan(2 * v, v), ref_c, 19, config, "c last chunk");
}

TEST_F(ModelTest, RejectsBadPlans) {
  const ModelConfig config = test_model();
  auto model = make_model(config, weights_);
  const auto tokens = random_tokens(8, 7, config.vocab_size);
  BatchPlan short_table;
  short_table.sequences.push_back(work_for(1, tokens, 0, 8, scattered_pages(2, 7), true));
  short_table.sequences.back().page_table.pop_back();
  EXPECT_FALSE(model->forward_logits(short_table).ok());
  BatchPlan bad_token;
  bad_token.sequences.push_back(work_for(1, tokens, 0, 8, scattered_pages(2, 7), true));
  bad_token.sequences.back().new_tokens[3] = config.vocab_size;
  EXPECT_FALSE(model->forward_logits(bad_token).ok());
  EXPECT_TRUE(model->forward_logits(BatchPlan{})->empty());
}

TEST_F(ModelTest, TensorParallelTwoRanksInThreadsMatchOneRank) {
  const ModelConfig config = test_model();
  auto single = make_model(config, weights_);
  const auto a = random_tokens(15, 8, config.vocab_size);
  const auto b = random_tokens(6, 9, config.vocab_size);
  const auto pages = scattered_pages(8, 8);
  BatchPlan plan;
  plan.sequences.push_back(work_for(1, a, 0, 15, pages, true));
  plan.sequences.push_back(
      work_for(2, b, 0, 6, std::vector<std::int32_t>(pages.begin() + 4, pages.end()), true));
  auto expected = single->forward_logits(plan);
  ASSERT_TRUE(expected.ok());

  ThreadGroup group(2);
  std::vector<std::vector<float>> logits(2);
  std::vector<Status> statuses(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      auto backend = make_cpu_backend();
      ThreadCommunicator comm(group, rank);
      RandomWeightSource weights(kSeed);
      ModelOptions options;
      options.num_pages = kNumPages;
      options.page_size = kPageSize;
      auto model = LlamaModel::create(config, weights, *backend, comm, options);
      if (!model.ok()) {
        statuses[rank] = model.status();
        return;
      }
      auto out = (*model)->forward_logits(plan);
      statuses[rank] = out.status();
      if (out.ok()) logits[rank] = *out;
    });
  }
  for (auto& t : threads) t.join();
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(statuses[rank].ok()) << statuses[rank].to_string();
    ASSERT_EQ(logits[rank].size(), expected->size());
    for (std::size_t i = 0; i < expected->size(); ++i)
      ASSERT_NEAR(logits[rank][i], (*expected)[i], 1e-4 + 1e-4 * std::fabs((*expected)[i]))
          << "rank " << rank << " logit " << i;
  }
  EXPECT_EQ(logits[0], logits[1]) << "TP ranks must return identical logits";
}

TEST_F(ModelTest, SafetensorsLoadedModelEqualsRandomModel) {
  const ModelConfig config = test_model();
  const auto dir = std::filesystem::temp_directory_path() / "podserve-model-test-safetensors";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<SafetensorsTensor> first, second;
  const auto specs = llama_checkpoint_specs(config);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    auto values = weights_.load(specs[i], 0, 1);
    ASSERT_TRUE(values.ok());
    (i < specs.size() / 2 ? first : second)
        .push_back({specs[i].name, DType::kF32, specs[i].shape, *values});
  }
  ASSERT_TRUE(write_safetensors((dir / "model-00001-of-00002.safetensors").string(), first).ok());
  ASSERT_TRUE(write_safetensors((dir / "model-00002-of-00002.safetensors").string(), second).ok());
  auto loaded = open_weight_source((dir / "*.safetensors").string(), 0);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();

  auto random_model = make_model(config, weights_);
  auto file_model = make_model(config, **loaded);
  ASSERT_NE(file_model, nullptr);
  const auto tokens = random_tokens(11, 10, config.vocab_size);
  BatchPlan plan;
  plan.sequences.push_back(work_for(1, tokens, 0, 11, scattered_pages(3, 10), true));
  auto expected = random_model->forward_logits(plan);
  auto actual = file_model->forward_logits(plan);
  ASSERT_TRUE(expected.ok() && actual.ok());
  EXPECT_EQ(*actual, *expected);
  std::filesystem::remove_all(dir);
}

TEST(ModelSizing, PagesThatFit) {
  const ModelConfig config = test_model();
  // 2 layers * K,V * 4 tokens * 2 kv heads * 16 dims * 4 bytes = 2048 bytes per page at TP=1.
  EXPECT_EQ(LlamaModel::kv_page_bytes(config, 1, 4, DType::kF32), 2048u);
  EXPECT_EQ(LlamaModel::pages_that_fit(config, 1, 10000, 4, DType::kF32), 4);
  EXPECT_EQ(LlamaModel::pages_that_fit(config, 2, 10000, 4, DType::kF32), 9);
  EXPECT_EQ(LlamaModel::pages_that_fit(config, 1, 10000, 4, DType::kBF16), 9);
}

}  // namespace
}  // namespace podserve
