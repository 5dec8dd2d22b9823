// podserve-sim: the cost model's features and least-squares fit (known coefficients recovered
// from synthetic samples), profile files, and the virtual-clock loop over the real scheduler,
// block manager and router policy (exact timings for hand-computed cases; invariants on random
// traces: every request finishes with its output length, no page leaks, time never goes back).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/config.h"
#include "core/model_config.h"
#include "sim/calibrate.h"
#include "sim/cost_model.h"
#include "sim/simulator.h"
#include "tools/bench/trace.h"

namespace podserve::sim {
namespace {

std::uint64_t fresh_seed() {
  const std::uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

SequenceWork work(std::int32_t cached, std::int32_t new_tokens, bool is_prefill) {
  SequenceWork w;
  w.num_cached_tokens = cached;
  w.new_tokens.assign(static_cast<std::size_t>(new_tokens), 1);
  w.is_prefill = is_prefill;
  return w;
}

TEST(CostModel, FeaturesOfAHybridPlan) {
  BatchPlan plan;
  plan.sequences = {work(9, 1, false), work(99, 1, false), work(0, 16, true), work(32, 8, true)};
  const BatchFeatures f = features_of(plan);
  EXPECT_EQ(f.prefill_tokens, 24.0);
  EXPECT_EQ(f.prefill_attention_pairs, 16.0 * 16.0 + 8.0 * 40.0);
  EXPECT_EQ(f.num_decodes, 2.0);
  EXPECT_EQ(f.decode_context_tokens, 10.0 + 100.0);
}

std::vector<CostSample> synthetic_samples(const std::array<double, kNumCostFeatures>& truth,
                                          double noise_s, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tokens(0, 256), decodes(0, 64), context(1, 512);
  std::normal_distribution<double> noise(0.0, noise_s);
  std::vector<CostSample> samples;
  for (int i = 0; i < 200; ++i) {
    CostSample s;
    s.features.prefill_tokens = tokens(rng);
    s.features.prefill_attention_pairs = s.features.prefill_tokens * context(rng);
    s.features.num_decodes = decodes(rng);
    s.features.decode_context_tokens = s.features.num_decodes * context(rng);
    const auto row = s.features.row();
    for (std::size_t j = 0; j < kNumCostFeatures; ++j) s.seconds += truth[j] * row[j];
    s.seconds += noise_s > 0 ? noise(rng) : 0.0;
    samples.push_back(s);
  }
  return samples;
}

TEST(CostModel, FitRecoversKnownCoefficientsExactly) {
  const std::array<double, kNumCostFeatures> truth = {3e-4, 3.5e-4, 3e-7, 4e-4, 5e-7};
  const auto samples = synthetic_samples(truth, 0.0, fresh_seed());
  const auto profile = fit_cost_profile(samples);
  ASSERT_TRUE(profile.ok()) << profile.status().to_string();
  for (std::size_t j = 0; j < kNumCostFeatures; ++j) {
    EXPECT_NEAR(profile->coefficients[j], truth[j], 1e-9 * std::abs(truth[j]) + 1e-15) << j;
  }
  EXPECT_LT(profile->rms_residual_s, 1e-12);
  EXPECT_EQ(profile->num_samples, 200);
}

TEST(CostModel, FitWithNoiseStatesItsResiduals) {
  const std::array<double, kNumCostFeatures> truth = {1e-3, 2e-4, 1e-7, 3e-4, 1e-6};
  const double noise_s = 2e-5;
  const auto samples = synthetic_samples(truth, noise_s, fresh_seed());
  const auto profile = fit_cost_profile(samples);
  ASSERT_TRUE(profile.ok()) << profile.status().to_string();
  EXPECT_NEAR(profile->coefficients[1], truth[1], 0.05 * truth[1]);
  EXPECT_NEAR(profile->coefficients[3], truth[3], 0.1 * truth[3]);
  // 200 samples, 5 parameters: the rms residual is close to the noise's standard deviation
  // (its own spread is about 5 %).
  EXPECT_GT(profile->rms_residual_s, 0.75 * noise_s);
  EXPECT_LT(profile->rms_residual_s, 1.25 * noise_s);
  EXPECT_GE(profile->max_abs_residual_s, profile->rms_residual_s);
}

TEST(CostModel, FitRefusesTooFewSamplesAndAFeatureThatNeverVaries) {
  std::vector<CostSample> few(3);
  EXPECT_EQ(fit_cost_profile(few).status().code(), StatusCode::kInvalidArgument);
  auto samples = synthetic_samples({1e-3, 1e-4, 1e-7, 1e-4, 1e-7}, 0.0, 1);
  for (CostSample& s : samples) s.features.num_decodes = 0.0;
  EXPECT_EQ(fit_cost_profile(samples).status().code(), StatusCode::kInvalidArgument);
}

// An engine bench CSV whose wall times follow a known linear model: the rows' shapes become the
// features the header comment of calibrate_from_engine_bench states, the other variants are
// skipped, and the fit recovers the model.
TEST(EngineBenchCalibration, RowsBecomeFeaturesAndTheFitRecoversTheModel) {
  const std::array<double, kNumCostFeatures> truth = {4e-3, 2e-5, 1e-9, 2e-5, 3e-8};
  const auto wall_ms = [&](double b, double l, double c, double p) {
    return 1e3 *
           (truth[0] + truth[1] * c + truth[2] * c * (p + c) + truth[3] * b + truth[4] * b * l);
  };
  std::string csv =
      "card,read_tbps,gemm_tflops,kind,variant,batch,context,chunk,prefix,wall_ms,gpu_ms,graph,"
      "flops,bytes,bound_ms,wall_over_bound\n";
  int kept = 0;
  for (const int b : {1, 8, 32, 128}) {
    for (const int l : {512, 2048, 8192}) {
      for (const char* variant : {"graph", "eager"}) {
        const double ms = wall_ms(b, l, 0, 0) * (std::string(variant) == "eager" ? 1.3 : 1.0);
        csv += fmt::format("\"GPU X\",4.4,780,decode,{},{},{},1,{},{:.6f},0,1,0,0,1,1\n", variant,
                           b, l, l - 1, ms);
      }
      ++kept;
    }
  }
  for (const int c : {512, 2048}) {
    for (const int p : {0, 8192}) {
      csv += fmt::format("\"GPU X\",4.4,780,prefill,pod,0,0,{},{},{:.6f},0,0,0,0,1,1\n", c, p,
                         wall_ms(0, 0, c, p));
      ++kept;
    }
  }
  for (const int b : {32, 128}) {
    csv += fmt::format("\"GPU X\",4.4,780,hybrid,pod,{},2048,512,0,{:.6f},0,0,0,0,1,1\n", b,
                       wall_ms(b, 2048, 512, 0));
    csv += fmt::format("\"GPU X\",4.4,780,hybrid,serial,{},2048,512,0,{:.6f},0,0,0,0,1,1\n", b,
                       2.0 * wall_ms(b, 2048, 512, 0));
    ++kept;
  }
  const std::vector<std::string> texts = {csv};
  auto calibration = sim::calibrate_from_engine_bench(texts, {});
  ASSERT_TRUE(calibration.ok()) << calibration.status().to_string();
  EXPECT_EQ(calibration->samples.size(), static_cast<std::size_t>(kept));
  EXPECT_EQ(calibration->profile.card, "GPU X");
  for (std::size_t j = 0; j < kNumCostFeatures; ++j)
    EXPECT_NEAR(calibration->profile.coefficients[j], truth[j], 1e-6 * std::abs(truth[j]) + 1e-12)
        << "coefficient " << j;
  const auto hybrid = std::find_if(
      calibration->samples.begin(), calibration->samples.end(), [](const CostSample& s) {
        return s.features.num_decodes == 128 && s.features.prefill_tokens == 512;
      });
  ASSERT_NE(hybrid, calibration->samples.end());
  EXPECT_EQ(hybrid->features.decode_context_tokens, 128.0 * 2048);
  EXPECT_EQ(hybrid->features.prefill_attention_pairs, 512.0 * 512);
}

TEST(EngineBenchCalibration, MalformedInputsAreRefused) {
  const std::string header = "card,kind,variant,batch,context,chunk,prefix,wall_ms\n";
  const auto refused = [](const std::string& csv) {
    const std::vector<std::string> texts = {csv};
    return !sim::calibrate_from_engine_bench(texts, {}).ok();
  };
  EXPECT_TRUE(refused(""));
  EXPECT_TRUE(refused("card,kind,variant,batch,context,chunk,prefix\n"));  // no wall_ms
  EXPECT_TRUE(refused(header + "A,decode,graph,1,512,1,511,x\n"));         // not a number
  EXPECT_TRUE(refused(header + "A,decode,graph,1,512,1,511\n"));           // a field short
  EXPECT_TRUE(refused(header + "A,other,graph,1,512,1,511,5\n"));          // unknown kind
  std::string two_cards = header;
  for (int b = 1; b <= 8; ++b) two_cards += fmt::format("A,decode,graph,{},512,1,511,{}\n", b, b);
  two_cards += "B,decode,graph,9,512,1,511,9\n";
  EXPECT_TRUE(refused(two_cards));
}

TEST(CostModel, ProfileFileRoundTrips) {
  const auto fitted = fit_cost_profile(synthetic_samples({1e-3, 2e-4, 1e-7, 3e-4, 1e-6}, 1e-5, 2));
  ASSERT_TRUE(fitted.ok());
  CostProfile profile = *fitted;
  profile.model = "tiny";
  profile.backend = "cpu";
  profile.card = "test card";
  profile.tp = 2;
  profile.date = "2026-12-02T00:00:00Z";
  const auto path = (std::filesystem::temp_directory_path() /
                     ("podserve_sim_profile_" + std::to_string(fresh_seed()) + ".json"))
                        .string();
  ASSERT_TRUE(save_cost_profile(profile, path).ok());
  const auto loaded = load_cost_profile(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  EXPECT_EQ(loaded->model, "tiny");
  EXPECT_EQ(loaded->card, "test card");
  EXPECT_EQ(loaded->tp, 2);
  EXPECT_EQ(loaded->date, profile.date);
  for (std::size_t j = 0; j < kNumCostFeatures; ++j) {
    EXPECT_EQ(loaded->coefficients[j], profile.coefficients[j]);
  }
  EXPECT_EQ(loaded->rms_residual_s, profile.rms_residual_s);
  EXPECT_EQ(loaded->num_samples, profile.num_samples);
}

// Every iteration lasts `seconds`, whatever it holds.
CostProfile constant_profile(double seconds) {
  CostProfile profile;
  profile.coefficients = {seconds, 0.0, 0.0, 0.0, 0.0};
  return profile;
}

SimOptions options_for(std::int32_t num_instances, std::int32_t num_pages, RouterPolicy policy) {
  SimOptions options;
  options.instances.assign(static_cast<std::size_t>(num_instances),
                           SimInstance{.tp = 1, .num_pages = num_pages});
  options.token_budget = 16;
  options.max_running = 8;
  options.page_size = 4;
  options.max_model_len = 128;
  options.policy = policy;
  options.profiles[1] = constant_profile(0.010);
  return options;
}

TEST(Simulator, ChunkedPrefillThenDecodesOnTheVirtualClock) {
  // 40 prompt tokens under a budget of 16: chunks 16, 16, 8; the third iteration samples the
  // first token at 30 ms; four more decodes, 10 ms each.
  const auto result =
      simulate(options_for(1, 64, RouterPolicy::kRoundRobin),
               {SimRequest{.arrival_s = 0.0, .prompt_tokens = 40, .output_tokens = 5}});
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  const SimRequestResult& r = result->requests[0];
  ASSERT_TRUE(r.finished);
  EXPECT_NEAR(r.first_token_s, 0.030, 1e-12);
  EXPECT_NEAR(r.finish_s, 0.070, 1e-12);
  EXPECT_EQ(r.output_tokens, 5);
  ASSERT_EQ(r.itl_s.size(), 4u);
  for (double gap : r.itl_s) EXPECT_NEAR(gap, 0.010, 1e-12);
  EXPECT_EQ(result->iterations, 7);
  EXPECT_NEAR(result->end_s, 0.070, 1e-12);
  const auto& kinds = result->iterations_by_kind;
  EXPECT_EQ(kinds[static_cast<std::size_t>(BatchKind::kPrefill)].count, 3);
  EXPECT_EQ(kinds[static_cast<std::size_t>(BatchKind::kDecode)].count, 4);
  EXPECT_EQ(kinds[static_cast<std::size_t>(BatchKind::kHybrid)].count, 0);
  EXPECT_NEAR(kinds[static_cast<std::size_t>(BatchKind::kDecode)].seconds, 0.040, 1e-12);
}

TEST(Simulator, ConcurrencyLimitSendsTheNextRequestWhenOneFinishes) {
  // Three requests due at 0, one slot: each is sent when the one before it finishes (prompt 8 =
  // one 10 ms prefill iteration that samples the first token, then one 10 ms decode).
  SimOptions options = options_for(1, 64, RouterPolicy::kRoundRobin);
  options.concurrency_limit = 1;
  const std::vector<SimRequest> requests(
      3, SimRequest{.arrival_s = 0.0, .prompt_tokens = 8, .output_tokens = 2});
  const auto result = simulate(options, requests);
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  for (std::size_t i = 0; i < 3; ++i) {
    const SimRequestResult& r = result->requests[i];
    ASSERT_TRUE(r.finished) << i;
    EXPECT_NEAR(r.arrival_s, 0.020 * static_cast<double>(i), 1e-12) << i;
    EXPECT_NEAR(r.first_token_s - r.arrival_s, 0.010, 1e-12) << i;
    EXPECT_NEAR(r.finish_s, 0.020 * static_cast<double>(i + 1), 1e-12) << i;
  }
  // Two slots: the first two run together, the third is sent when one of them finishes.
  options.concurrency_limit = 2;
  const auto two = simulate(options, requests);
  ASSERT_TRUE(two.ok());
  EXPECT_NEAR(two->requests[1].arrival_s, 0.0, 1e-12);
  EXPECT_NEAR(two->requests[2].arrival_s, two->requests[0].finish_s, 1e-12);
  EXPECT_EQ(two->pages_in_use_at_end, 0);
}

TEST(Simulator, ArrivalDuringAnIterationJoinsTheNextOne) {
  // Request 1 arrives at 5 ms while request 0's first iteration runs until 10 ms; it is
  // scheduled with request 0's first decode at 10 ms and samples its first token at 20 ms.
  const auto result =
      simulate(options_for(1, 64, RouterPolicy::kRoundRobin),
               {SimRequest{.arrival_s = 0.0, .prompt_tokens = 8, .output_tokens = 3},
                SimRequest{.arrival_s = 0.005, .prompt_tokens = 4, .output_tokens = 1}});
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  EXPECT_NEAR(result->requests[0].first_token_s, 0.010, 1e-12);
  EXPECT_NEAR(result->requests[0].finish_s, 0.030, 1e-12);
  EXPECT_NEAR(result->requests[1].first_token_s, 0.020, 1e-12);
  EXPECT_NEAR(result->requests[1].finish_s, 0.020, 1e-12);
  EXPECT_TRUE(result->requests[1].itl_s.empty());
  // Iterations: request 0's prefill, the hybrid at 10 ms, request 0's last decode.
  const auto& kinds = result->iterations_by_kind;
  EXPECT_EQ(kinds[static_cast<std::size_t>(BatchKind::kPrefill)].count, 1);
  EXPECT_EQ(kinds[static_cast<std::size_t>(BatchKind::kHybrid)].count, 1);
  EXPECT_EQ(kinds[static_cast<std::size_t>(BatchKind::kDecode)].count, 1);
}

TEST(Simulator, RoundRobinSpreadsRequestsInTurn) {
  std::vector<SimRequest> requests;
  for (int i = 0; i < 9; ++i) {
    requests.push_back(SimRequest{.arrival_s = 0.001 * i, .prompt_tokens = 4, .output_tokens = 2});
  }
  const auto result = simulate(options_for(3, 64, RouterPolicy::kRoundRobin), requests);
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  for (int i = 0; i < 9; ++i)
    EXPECT_EQ(result->requests[static_cast<std::size_t>(i)].instance, i % 3);
}

TEST(Simulator, UnsortedArrivalsAreRefused) {
  const auto result =
      simulate(options_for(1, 64, RouterPolicy::kRoundRobin),
               {SimRequest{.arrival_s = 0.5, .prompt_tokens = 4, .output_tokens = 1},
                SimRequest{.arrival_s = 0.1, .prompt_tokens = 4, .output_tokens = 1}});
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
}

TEST(Simulator, MissingProfileAndDisaggregatedModeAreRefused) {
  SimOptions options = options_for(1, 64, RouterPolicy::kRoundRobin);
  options.instances[0].tp = 2;
  EXPECT_EQ(simulate(options, {}).status().code(), StatusCode::kInvalidArgument);
  ServiceConfig config;
  config.scheduler.mode = SchedulerMode::kDisaggregated;
  const auto tiny = model_preset("tiny");
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(sim_options_from_config(config, *tiny).status().code(), StatusCode::kInvalidArgument);
}

TEST(SimulatorConfig, ValidationConfigHasTheServicesPageCount) {
  const auto config = load_config(PODSERVE_SOURCE_DIR "/sim/configs/tiny-colocated-1x.yaml");
  const auto tiny = model_preset("tiny");
  ASSERT_TRUE(tiny.ok());
  const auto options = sim_options_from_config(config, *tiny);
  ASSERT_TRUE(options.ok()) << options.status().to_string();
  ASSERT_EQ(options->instances.size(), 1u);
  // The service logged "2048 KV pages of 16 tokens" for this config on the CPU backend.
  EXPECT_EQ(options->instances[0].num_pages, 2048);
  EXPECT_EQ(options->token_budget, 256);
  EXPECT_EQ(options->max_running, 64);
  EXPECT_EQ(options->page_size, 16);
  EXPECT_EQ(options->max_model_len, 4096);
  EXPECT_EQ(options->policy, RouterPolicy::kLeastOutstandingTokens);
}

TEST(SimulatorConfig, PagesPerRankScaleWithTpAndGpuNeedsAPageCount) {
  auto config = load_config(PODSERVE_SOURCE_DIR "/deploy/configs/tiny-colocated.yaml");
  const auto tiny = model_preset("tiny");
  ASSERT_TRUE(tiny.ok());
  const auto options = sim_options_from_config(config, *tiny);
  ASSERT_TRUE(options.ok()) << options.status().to_string();
  ASSERT_EQ(options->instances.size(), 2u);
  EXPECT_EQ(options->instances[0].tp, 2);
  EXPECT_EQ(options->instances[1].tp, 1);
  // Each rank holds cpu_memory_mb of its half of the KV heads.
  EXPECT_EQ(options->instances[0].num_pages, 2 * options->instances[1].num_pages);
  config.backend = BackendChoice::kCuda;
  EXPECT_EQ(sim_options_from_config(config, *tiny).status().code(), StatusCode::kInvalidArgument);
  config.kv_cache.num_pages = 1000;
  const auto explicit_pages = sim_options_from_config(config, *tiny);
  ASSERT_TRUE(explicit_pages.ok());
  EXPECT_EQ(explicit_pages->instances[0].num_pages, 1000);
}

// The quickstart workload from the repository's trace, with the committed profile: every request
// finishes with its output length, no page leaks, and the clock ends at the last finish.
TEST(SimulatorEndToEnd, QuickstartWorkloadWithTheCommittedProfile) {
  std::ifstream csv(PODSERVE_SOURCE_DIR "/tools/data/azure-llm-2023-code.csv");
  ASSERT_TRUE(csv) << "missing trace";
  auto workload = bench::parse_azure_trace(csv, 0, 300);
  ASSERT_TRUE(workload.ok()) << workload.status().to_string();
  bench::scale_lengths(
      *workload,
      bench::ScaleOptions{
          .prompt_scale = 0.05, .output_scale = 1.0, .max_prompt = 384, .max_output = 32});
  bench::schedule_arrivals(*workload, 6.0, 1.0, fresh_seed());
  std::vector<SimRequest> requests;
  std::int64_t output_tokens = 0;
  for (const auto& r : *workload) {
    requests.push_back(SimRequest{.arrival_s = r.arrival_s,
                                  .prompt_tokens = r.prompt_tokens,
                                  .output_tokens = r.output_tokens});
    output_tokens += r.output_tokens;
  }
  const auto config = load_config(PODSERVE_SOURCE_DIR "/sim/configs/tiny-colocated-1x.yaml");
  const auto tiny = model_preset("tiny");
  ASSERT_TRUE(tiny.ok());
  auto options = sim_options_from_config(config, *tiny);
  ASSERT_TRUE(options.ok());
  const auto profile = load_cost_profile(PODSERVE_SOURCE_DIR "/sim/profiles/tiny-cpu-tp1.json");
  ASSERT_TRUE(profile.ok()) << profile.status().to_string();
  EXPECT_EQ(profile->model, "tiny");
  EXPECT_EQ(profile->tp, 1);
  options->profiles[1] = *profile;
  const auto result = simulate(*options, requests);
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  EXPECT_TRUE(result->clock_monotonic);
  EXPECT_EQ(result->pages_in_use_at_end, 0);
  std::int64_t simulated_tokens = 0;
  double last_finish = 0.0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const SimRequestResult& r = result->requests[i];
    ASSERT_TRUE(r.finished) << i;
    EXPECT_EQ(r.output_tokens, requests[i].output_tokens) << i;
    EXPECT_GT(r.first_token_s, r.arrival_s) << i;
    simulated_tokens += r.output_tokens;
    last_finish = std::max(last_finish, r.finish_s);
  }
  EXPECT_EQ(simulated_tokens, output_tokens);
  EXPECT_DOUBLE_EQ(result->end_s, last_finish);
  EXPECT_GE(result->end_s, requests.back().arrival_s);
}

struct PolicyCase {
  const char* name;
  RouterPolicy policy;
};

class SimulatorInvariants : public ::testing::TestWithParam<PolicyCase> {};

// A random trace on three instances with small page pools (so preemption happens): every
// request finishes with exactly its output length, times are ordered, no page leaks.
TEST_P(SimulatorInvariants, RandomTraceFinishesEverythingWithoutLeaks) {
  std::mt19937_64 rng(fresh_seed());
  std::uniform_int_distribution<int> prompt(1, 100), output(1, 24);
  std::exponential_distribution<double> gap(200.0);
  std::vector<SimRequest> requests;
  double t = 0.0;
  for (int i = 0; i < 400; ++i) {
    t += gap(rng);
    requests.push_back(
        SimRequest{.arrival_s = t, .prompt_tokens = prompt(rng), .output_tokens = output(rng)});
  }
  SimOptions options = options_for(3, 40, GetParam().policy);
  options.profiles[1].coefficients = {2e-3, 1e-4, 1e-7, 2e-4, 1e-7};
  const auto result = simulate(options, requests);
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  EXPECT_TRUE(result->clock_monotonic);
  EXPECT_EQ(result->pages_in_use_at_end, 0);
  EXPECT_GT(result->preemptions, 0) << "the page pools are meant to force preemption";
  double last_finish = 0.0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const SimRequestResult& r = result->requests[i];
    ASSERT_TRUE(r.finished) << i;
    EXPECT_EQ(r.output_tokens, requests[i].output_tokens) << i;
    EXPECT_EQ(r.itl_s.size(), static_cast<std::size_t>(requests[i].output_tokens - 1)) << i;
    EXPECT_GT(r.first_token_s, r.arrival_s) << i;
    EXPECT_GE(r.finish_s, r.first_token_s) << i;
    for (double g : r.itl_s) EXPECT_GT(g, 0.0) << i;
    last_finish = std::max(last_finish, r.finish_s);
  }
  EXPECT_DOUBLE_EQ(result->end_s, last_finish);
}

INSTANTIATE_TEST_SUITE_P(Policies, SimulatorInvariants,
                         ::testing::Values(PolicyCase{"round_robin", RouterPolicy::kRoundRobin},
                                           PolicyCase{"least_outstanding_tokens",
                                                      RouterPolicy::kLeastOutstandingTokens},
                                           PolicyCase{"kv_load_aware", RouterPolicy::kKvLoadAware}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace podserve::sim
