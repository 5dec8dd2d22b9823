// GPU tests of the Llama model on the CUDA backend (label gpu): a small head_dim-64 model with
// the same random weights on the CPU backend (fp32) and the CUDA backend (bf16 weights and
// activations), run over the iterations of a hybrid workload (three prompts prefilled in chunks
// of at most 32 tokens, one of them starting an iteration late, then 12 teacher-forced decodes
// each; the order of sequences rotates every iteration, so decodes and prefill chunks
// interleave; pages scattered). Weights, prompts and decode tokens are fresh random values (seed
// printed; PODSERVE_TEST_SEED=<n> replays a run). Skips with a reason without a CUDA device
// (without two for tensor parallelism).
//
// Tolerances, per sampled logits row (vocabulary 512):
//   CUDA (each of POD, serial, streams) vs CPU: ||cuda - cpu|| / ||cpu|| <= 5e-2, and the argmax
//     equal on at least 80% of the rows (bf16 rounding may swap near-tied top logits);
//   POD vs serial vs streams on CUDA: relative L2 error <= 2e-2 per row;
//   TP=2 over NCCL vs TP=1 on CUDA: relative L2 error <= 5e-2 per row, and both TP ranks return
//     bitwise the same logits;
//   every logit finite and no row all zero.
// Every test prints the largest relative error and the argmax agreement it saw.
//
// Real checkpoints (tests/data/hf/*-hd64, made by tools/make_hf_fixtures.py: Llama with GQA and
// llama3 rope scaling, Qwen2 with q/k/v biases; bf16 safetensors): loaded as the service loads
// them and run on the CUDA backend against transformers' logits of the same bf16 weights in fp32,
// at each prompt's last position: the same argmax, a relative L2 error <= 6e-2 per prompt, and
// over the prompts an RMS relative error <= 1.5 x that of transformers' own bf16 run of the
// checkpoint + 1e-2 (these tiny models with large weights lose 1-8% to bf16 there, prompt by
// prompt in no fixed order between implementations); greedy tokens (prefill, then
// one decode step at a time, graphs on) equal to transformers' while the reference's
// best-to-second margin stays >= 0.25 (about 1/16 of the logits' spread; past the first narrower
// step the paths may part, bf16 being allowed to swap near-ties; at least 8 steps over the
// prompts are compared).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../kernels/test_random.h"
#include "../worker/hf_fixtures.h"
#include "../worker/test_communicators.h"
#include "core/model_config.h"
#include "kernels/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/nccl_communicator.h"
#include "worker/model.h"
#include "worker/weights.h"

namespace podserve {
namespace {

using testing_support::SingleRankCommunicator;

constexpr std::int32_t kPageSize = 16;
constexpr std::int32_t kNumPages = 64;
constexpr std::int32_t kChunkTokens = 32;
constexpr std::int32_t kDecodeSteps = 12;

int cuda_device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

// Hidden 512 = 8 query heads x 64; 2 KV heads (group 4); TP=2 gives 4 + 1 heads per rank.
ModelConfig small_model() {
  ModelConfig c;
  c.name = "cuda-model-test";
  c.vocab_size = 512;
  c.hidden_size = 512;
  c.intermediate_size = 1024;
  c.num_layers = 2;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.rope_theta = 10000.0f;
  c.max_position_embeddings = 4096;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  return c;
}

// The workload: the plans of every iteration and a label for every sampled row, in order.
struct Script {
  std::vector<BatchPlan> plans;
  std::vector<std::string> row_labels;
};

Script hybrid_script(const ModelConfig& config, std::mt19937_64& rng) {
  struct Sequence {
    RequestId id;
    std::int32_t prompt_tokens;
    std::int32_t first_iteration;
    std::vector<TokenId> tokens;  // prompt, then the teacher-forced decode inputs
    std::vector<std::int32_t> pages;
    std::int32_t done = 0;  // tokens already in the cache
  };
  std::vector<std::int32_t> free_pages(kNumPages);
  std::iota(free_pages.begin(), free_pages.end(), 0);
  std::shuffle(free_pages.begin(), free_pages.end(), rng);
  std::vector<Sequence> seqs = {{1, 100, 0, {}, {}}, {2, 45, 0, {}, {}}, {3, 70, 1, {}, {}}};
  for (Sequence& s : seqs) {
    const std::int32_t total = s.prompt_tokens + kDecodeSteps;
    s.tokens.resize(static_cast<std::size_t>(total));
    for (TokenId& t : s.tokens) {
      t = static_cast<TokenId>(rng() % static_cast<std::uint64_t>(config.vocab_size));
    }
    const std::int32_t pages = (total + kPageSize - 1) / kPageSize;
    s.pages.assign(free_pages.end() - pages, free_pages.end());
    free_pages.resize(free_pages.size() - static_cast<std::size_t>(pages));
  }
  Script script;
  for (std::uint64_t iteration = 0;; ++iteration) {
    BatchPlan plan;
    plan.iteration = iteration;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      Sequence& s = seqs[(i + iteration) % seqs.size()];
      const auto total = static_cast<std::int32_t>(s.tokens.size());
      if (static_cast<std::int64_t>(iteration) < s.first_iteration || s.done == total) continue;
      const bool prefill = s.done < s.prompt_tokens;
      const std::int32_t end =
          prefill ? std::min(s.prompt_tokens, s.done + kChunkTokens) : s.done + 1;
      SequenceWork work;
      work.seq_id = s.id;
      work.num_cached_tokens = s.done;
      work.new_tokens.assign(s.tokens.begin() + s.done, s.tokens.begin() + end);
      work.page_table.assign(s.pages.begin(), s.pages.begin() + (end + kPageSize - 1) / kPageSize);
      work.is_prefill = prefill;
      work.sample = !prefill || end == s.prompt_tokens;
      if (work.sample) {
        script.row_labels.push_back("iteration " + std::to_string(iteration) + " sequence " +
                                    std::to_string(s.id) + " position " + std::to_string(end - 1));
      }
      plan.sequences.push_back(std::move(work));
      s.done = end;
    }
    if (plan.sequences.empty()) break;
    script.plans.push_back(std::move(plan));
  }
  return script;
}

// Runs every plan; returns the sampled rows of all iterations, concatenated [rows, vocab].
Result<std::vector<float>> run_script(LlamaModel& model, const Script& script) {
  std::vector<float> logits;
  for (const BatchPlan& plan : script.plans) {
    PODSERVE_ASSIGN_OR_RETURN(const std::vector<float> rows, model.forward_logits(plan));
    logits.insert(logits.end(), rows.begin(), rows.end());
  }
  return logits;
}

Result<std::vector<float>> run_model(const ModelConfig& config, std::uint64_t weight_seed,
                                     Backend& backend, Communicator& comm, AttentionKind kind,
                                     const Script& script) {
  RandomWeightSource weights(weight_seed);
  ModelOptions options;
  options.num_pages = kNumPages;
  options.page_size = kPageSize;
  options.attention = kind;
  PODSERVE_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                            LlamaModel::create(config, weights, backend, comm, options));
  return run_script(*model, script);
}

struct Agreement {
  double max_relative_error = 0;
  std::size_t argmax_equal = 0;
  std::size_t rows = 0;
};

// Per row: finite, not all zero, ||got - want|| / ||want|| <= max_relative_error.
Agreement compare_rows(const std::vector<float>& got, const std::vector<float>& want,
                       const Script& script, std::int32_t vocab, double max_relative_error,
                       const std::string& what) {
  Agreement agreement;
  const std::size_t v = static_cast<std::size_t>(vocab);
  EXPECT_EQ(got.size(), want.size()) << what;
  EXPECT_EQ(want.size(), script.row_labels.size() * v) << what;
  agreement.rows = std::min(got.size(), want.size()) / v;
  std::size_t bad = 0;
  for (std::size_t row = 0; row < agreement.rows; ++row) {
    const float* g = got.data() + row * v;
    const float* w = want.data() + row * v;
    double err2 = 0, ref2 = 0, got2 = 0;
    bool finite = true;
    for (std::size_t i = 0; i < v; ++i) {
      finite = finite && std::isfinite(g[i]);
      err2 += (static_cast<double>(g[i]) - w[i]) * (static_cast<double>(g[i]) - w[i]);
      ref2 += static_cast<double>(w[i]) * w[i];
      got2 += static_cast<double>(g[i]) * g[i];
    }
    const std::string label = what + ", " + script.row_labels[row];
    EXPECT_TRUE(finite) << label << ": NaN or infinite logits";
    EXPECT_GT(got2, 0.0) << label << ": all-zero logits";
    EXPECT_GT(ref2, 0.0) << label << ": all-zero reference logits";
    const double relative = std::sqrt(err2 / ref2);
    agreement.max_relative_error = std::max(agreement.max_relative_error, finite ? relative : 1e9);
    if (!(relative <= max_relative_error) && bad++ < 5) {
      ADD_FAILURE() << label << ": relative L2 error " << relative << " > " << max_relative_error;
    }
    if (std::max_element(g, g + v) - g == std::max_element(w, w + v) - w) {
      ++agreement.argmax_equal;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": rows over the relative error bound";
  std::cout << "[ agree    ] " << what << ": " << agreement.rows << " rows, max relative L2 error "
            << agreement.max_relative_error << ", argmax equal on " << agreement.argmax_equal
            << "\n";
  return agreement;
}

void expect_most_argmax_equal(const Agreement& agreement, const std::string& what) {
  EXPECT_GE(static_cast<double>(agreement.argmax_equal), 0.8 * agreement.rows)
      << what << ": argmax equal on only " << agreement.argmax_equal << " of " << agreement.rows
      << " rows";
}

class CudaModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() < 1) GTEST_SKIP() << "no CUDA device";
    seed_ = podserve::testing::test_seed();
    trace_ = podserve::testing::seed_trace(seed_);
    rng_.seed(seed_);
    weight_seed_ = rng_();
    script_ = hybrid_script(config_, rng_);
  }

  // The fp32 CPU model's logits for script_.
  Result<std::vector<float>> cpu_logits() {
    auto backend = make_cpu_backend();
    SingleRankCommunicator comm;
    return run_model(config_, weight_seed_, *backend, comm, AttentionKind::kCpu, script_);
  }

  const ModelConfig config_ = small_model();
  std::uint64_t seed_ = 0, weight_seed_ = 0;
  std::string trace_;
  std::mt19937_64 rng_;
  Script script_;
};

TEST_F(CudaModelTest, EveryAttentionKindMatchesTheCpuModelAndTheOthers) {
  SCOPED_TRACE(trace_);
  auto want = cpu_logits();
  ASSERT_TRUE(want.ok()) << want.status().to_string();
  auto backend = make_cuda_backend(0);
  ASSERT_TRUE(backend.ok()) << backend.status().to_string();
  SingleRankCommunicator comm;
  std::vector<std::vector<float>> per_kind;
  for (AttentionKind kind :
       {AttentionKind::kPod, AttentionKind::kSerial, AttentionKind::kStreams}) {
    const std::string what = std::string(to_string(kind)) + " vs cpu";
    auto got = run_model(config_, weight_seed_, **backend, comm, kind, script_);
    ASSERT_TRUE(got.ok()) << std::string(to_string(kind)) << ": " << got.status().to_string();
    const Agreement agreement = compare_rows(*got, *want, script_, config_.vocab_size, 5e-2, what);
    expect_most_argmax_equal(agreement, what);
    per_kind.push_back(std::move(got).value());
  }
  compare_rows(per_kind[1], per_kind[0], script_, config_.vocab_size, 2e-2, "serial vs pod");
  compare_rows(per_kind[2], per_kind[0], script_, config_.vocab_size, 2e-2, "streams vs pod");
}

TEST_F(CudaModelTest, TensorParallelTwoGpusMatchOneGpu) {
  SCOPED_TRACE(trace_);
  const int devices = cuda_device_count();
  if (devices < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << devices;
  setenv("NCCL_NVLS_ENABLE", "0", 0);  // off for the shared machines; the environment wins

  std::vector<float> single;
  {
    auto backend = make_cuda_backend(0);
    ASSERT_TRUE(backend.ok()) << backend.status().to_string();
    SingleRankCommunicator comm;
    auto logits = run_model(config_, weight_seed_, **backend, comm, AttentionKind::kPod, script_);
    ASSERT_TRUE(logits.ok()) << logits.status().to_string();
    single = std::move(logits).value();
  }

  auto id = make_nccl_unique_id();
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  // Backends first (not collective), so a failure cannot leave the other rank waiting.
  std::vector<std::unique_ptr<Backend>> backends;
  for (int rank = 0; rank < 2; ++rank) {
    auto backend = make_cuda_backend(rank);
    ASSERT_TRUE(backend.ok()) << "device " << rank << ": " << backend.status().to_string();
    backends.push_back(std::move(backend).value());
  }
  std::vector<Status> statuses(2);
  std::vector<std::vector<float>> logits(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      const auto r = static_cast<std::size_t>(rank);
      auto comm = make_nccl_communicator(*id, 2, rank, *backends[r]);
      if (!comm.ok()) {
        statuses[r] = comm.status();
        return;
      }
      auto out =
          run_model(config_, weight_seed_, *backends[r], **comm, AttentionKind::kPod, script_);
      statuses[r] = out.status();
      if (out.ok()) logits[r] = std::move(out).value();
    });
  }
  for (auto& thread : threads) thread.join();
  for (int rank = 0; rank < 2; ++rank) {
    const auto r = static_cast<std::size_t>(rank);
    ASSERT_TRUE(statuses[r].ok()) << "rank " << rank << ": " << statuses[r].to_string();
  }
  EXPECT_TRUE(logits[0] == logits[1]) << "TP ranks must return bitwise the same logits";
  compare_rows(logits[0], single, script_, config_.vocab_size, 5e-2, "tp2 vs tp1");

  auto want = cpu_logits();
  ASSERT_TRUE(want.ok()) << want.status().to_string();
  const Agreement agreement =
      compare_rows(logits[0], *want, script_, config_.vocab_size, 5e-2, "tp2 vs cpu");
  expect_most_argmax_equal(agreement, "tp2 vs cpu");
}

// Decode steps on the CUDA backend: greedy and sampled tokens with graphs on equal those with
// graphs off (the same padded shapes, so bitwise), and the graph's greedy tokens equal the argmax
// of forward_logits() wherever the batch fills its bucket (same GEMM shapes). Teacher-forced
// decode inputs; the batch size changes every step (buckets 1, 2, 4, 8, 16, padded and not).
TEST_F(CudaModelTest, GraphDecodeStepsMatchEagerSteps) {
  SCOPED_TRACE(trace_);
  constexpr int kSequences = 11;
  const std::vector<int> batch_sizes = {1, 2, 3, 4, 5, 8, 11, 7, 1, 9, 16 - 5, 2};
  struct Seq {
    std::vector<TokenId> tokens;  // prompt then teacher-forced decode inputs
    std::vector<std::int32_t> pages;
    std::int32_t prompt = 0, done = 0;
  };
  std::vector<std::int32_t> free_pages(kNumPages);
  std::iota(free_pages.begin(), free_pages.end(), 0);
  std::shuffle(free_pages.begin(), free_pages.end(), rng_);
  std::vector<Seq> seqs(kSequences);
  for (Seq& q : seqs) {
    q.prompt = 5 + static_cast<std::int32_t>(rng_() % 46);
    q.tokens.resize(static_cast<std::size_t>(q.prompt) + batch_sizes.size());
    for (TokenId& t : q.tokens) t = static_cast<TokenId>(rng_() % config_.vocab_size);
    const auto pages = static_cast<std::size_t>(
        (static_cast<std::int32_t>(q.tokens.size()) + kPageSize - 1) / kPageSize);
    q.pages.assign(free_pages.end() - static_cast<std::ptrdiff_t>(pages), free_pages.end());
    free_pages.resize(free_pages.size() - pages);
  }
  // Plans: one prefill step of every prompt, then the decode steps.
  std::vector<BatchPlan> plans(1);
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    SequenceWork work;
    work.seq_id = static_cast<RequestId>(i + 1);
    work.new_tokens.assign(seqs[i].tokens.begin(), seqs[i].tokens.begin() + seqs[i].prompt);
    work.page_table = seqs[i].pages;
    work.is_prefill = true;
    work.sample = true;
    seqs[i].done = seqs[i].prompt;
    plans[0].sequences.push_back(std::move(work));
  }
  for (std::size_t step = 0; step < batch_sizes.size(); ++step) {
    BatchPlan plan;
    plan.iteration = step + 1;
    for (int i = 0; i < batch_sizes[step]; ++i) {
      Seq& q = seqs[static_cast<std::size_t>((i + static_cast<int>(step)) % kSequences)];
      SequenceWork work;
      work.seq_id = static_cast<RequestId>(&q - seqs.data() + 1);
      work.num_cached_tokens = q.done;
      work.new_tokens = {q.tokens[static_cast<std::size_t>(q.done)]};
      work.page_table = q.pages;
      work.sample = true;
      ++q.done;
      plan.sequences.push_back(std::move(work));
    }
    plans.push_back(std::move(plan));
  }

  auto backend = make_cuda_backend(0);
  ASSERT_TRUE(backend.ok()) << backend.status().to_string();
  SingleRankCommunicator comm;
  const auto make_model = [&](bool graphs) {
    RandomWeightSource weights(weight_seed_);
    ModelOptions options;
    options.num_pages = kNumPages;
    options.page_size = kPageSize;
    options.attention = AttentionKind::kPod;
    options.graphs = graphs;
    options.max_graph_batch = 16;
    return LlamaModel::create(config_, weights, **backend, comm, options);
  };
  for (const float temperature : {0.0f, 0.8f}) {
    const std::string what = temperature == 0.0f ? "greedy" : "temperature 0.8, top_p 0.9";
    std::vector<std::vector<TokenId>> tokens[2];  // [graphs off, graphs on][step]
    for (const bool graphs : {false, true}) {
      auto model = make_model(graphs);
      ASSERT_TRUE(model.ok()) << model.status().to_string();
      for (const BatchPlan& plan : plans) {
        std::vector<SamplingRow> rows(plan.sequences.size());
        for (std::size_t r = 0; r < rows.size(); ++r) {
          rows[r].temperature = temperature;
          rows[r].top_p = 0.9f;
          rows[r].seed = 100 + plan.sequences[r].seq_id;
          rows[r].generated_index = static_cast<std::int32_t>(plan.iteration);
        }
        auto got = (*model)->forward(plan, rows);
        ASSERT_TRUE(got.ok()) << what << ": " << got.status().to_string();
        ASSERT_EQ(got->size(), plan.sequences.size());
        const bool decode = plan.iteration > 0;
        EXPECT_EQ((*model)->last_step_used_graph(), decode && graphs)
            << what << " iteration " << plan.iteration;
        tokens[graphs].push_back(std::move(got).value());
      }
    }
    EXPECT_EQ(tokens[1], tokens[0]) << what << ": graphs on and off differ";
    if (temperature != 0.0f) continue;
    auto model = make_model(false);
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    std::size_t padded_rows = 0, padded_equal = 0;
    for (std::size_t p = 0; p < plans.size(); ++p) {
      auto logits = (*model)->forward_logits(plans[p]);
      ASSERT_TRUE(logits.ok()) << logits.status().to_string();
      const auto n = static_cast<int>(plans[p].sequences.size());
      const bool fills_bucket = p == 0 || n == 1 || n == 2 || n == 4 || n == 8 || n == 16;
      for (int r = 0; r < n; ++r) {
        const float* row = logits->data() + static_cast<std::size_t>(r) * config_.vocab_size;
        const auto argmax =
            static_cast<TokenId>(std::max_element(row, row + config_.vocab_size) - row);
        if (fills_bucket) {
          EXPECT_EQ(tokens[1][p][static_cast<std::size_t>(r)], argmax)
              << "iteration " << p << " row " << r;
        } else {
          ++padded_rows;
          padded_equal += tokens[1][p][static_cast<std::size_t>(r)] == argmax;
        }
      }
    }
    EXPECT_GE(padded_equal * 10, padded_rows * 8)
        << "padded steps: greedy token equals the eager argmax on " << padded_equal << " of "
        << padded_rows << " rows";
  }
}

class HfCheckpointOnCudaTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (cuda_device_count() < 1) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(HfCheckpointOnCudaTest, MatchesTransformers) {
  const std::string dir = testing_support::hf_fixture_dir(GetParam());
  const nlohmann::json reference = testing_support::read_hf_reference(GetParam());
  auto config = model_config_from_hf_json(dir + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  auto weights = open_weight_source(dir, 0);
  ASSERT_TRUE(weights.ok()) << weights.status().to_string();
  auto backend = make_cuda_backend(0);
  ASSERT_TRUE(backend.ok()) << backend.status().to_string();
  SingleRankCommunicator comm;
  ModelOptions options;
  options.num_pages = kNumPages;
  options.page_size = kPageSize;
  options.attention = AttentionKind::kPod;
  auto model = LlamaModel::create(*config, **weights, **backend, comm, options);
  ASSERT_TRUE(model.ok()) << model.status().to_string();

  const auto work = [](const std::vector<TokenId>& tokens, int cached) {
    return testing_support::hf_sequence_work(tokens, cached, kPageSize, kNumPages, 2);  // gaps
  };
  const auto& prompts = reference.at("prompts");
  ASSERT_FALSE(prompts.empty());
  int compared_steps = 0;
  double squared_errors = 0, squared_bf16_errors = 0;
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    const auto prompt = prompts[p].get<std::vector<TokenId>>();
    const std::string what = GetParam() + " prompt " + std::to_string(p);
    BatchPlan plan;
    plan.sequences.push_back(work(prompt, 0));
    auto logits = (*model)->forward_logits(plan);
    ASSERT_TRUE(logits.ok()) << logits.status().to_string();
    const auto want = reference.at("logits")[p].get<std::vector<double>>();
    const auto in_bf16 = reference.at("bf16_logits")[p].get<std::vector<double>>();
    ASSERT_EQ(logits->size(), want.size()) << what;
    ASSERT_EQ(in_bf16.size(), want.size()) << what;
    double diff = 0, bf16_diff = 0, norm = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      ASSERT_TRUE(std::isfinite((*logits)[i])) << what << " logit " << i;
      diff += ((*logits)[i] - want[i]) * ((*logits)[i] - want[i]);
      bf16_diff += (in_bf16[i] - want[i]) * (in_bf16[i] - want[i]);
      norm += want[i] * want[i];
    }
    ASSERT_GT(norm, 1.0) << what << ": reference logits are trivially small";
    const double relative = std::sqrt(diff / norm), bf16_relative = std::sqrt(bf16_diff / norm);
    std::cout << "[ hf-cuda  ] " << what << ": relative L2 error " << relative
              << " (transformers in bf16: " << bf16_relative << ")\n";
    EXPECT_LE(relative, 6e-2) << what;
    squared_errors += relative * relative;
    squared_bf16_errors += bf16_relative * bf16_relative;
    EXPECT_EQ(std::max_element(logits->begin(), logits->end()) - logits->begin(),
              std::max_element(want.begin(), want.end()) - want.begin())
        << what;

    // Greedy decoding on the engine's path (graphs on for the decode steps).
    const SamplingRow greedy{};
    const auto expected = reference.at("greedy")[p].get<std::vector<TokenId>>();
    const auto margins = reference.at("margins")[p].get<std::vector<double>>();
    std::vector<TokenId> tokens = prompt;
    int cached = 0, compared = 0;
    for (std::size_t step = 0; step < expected.size() && margins[step] >= 0.25; ++step) {
      BatchPlan decode;
      decode.iteration = step + 1;
      decode.sequences.push_back(work(tokens, cached));
      auto next = (*model)->forward(decode, std::span<const SamplingRow>(&greedy, 1));
      ASSERT_TRUE(next.ok()) << next.status().to_string();
      ASSERT_EQ(next->size(), 1u);
      ASSERT_EQ(next->front(), expected[step]) << what << " greedy step " << step;
      cached = static_cast<int>(tokens.size());
      tokens.push_back(next->front());
      ++compared;
    }
    std::cout << "[ hf-cuda  ] " << what << ": " << compared << " greedy tokens equal\n";
    compared_steps += compared;
  }
  EXPECT_GE(compared_steps, 8) << "the reference's margins leave too few greedy steps to compare";
  const auto count = static_cast<double>(prompts.size());
  EXPECT_LE(std::sqrt(squared_errors / count), 1.5 * std::sqrt(squared_bf16_errors / count) + 1e-2)
      << GetParam() << ": RMS relative error over the prompts, against transformers in bf16";
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, HfCheckpointOnCudaTest,
                         ::testing::Values("llama-hd64", "qwen2-hd64"),
                         testing_support::hf_test_name);

}  // namespace
}  // namespace podserve
