// Tensor parallelism over real MPI (run under `mpirun -np 2`): the collectives of
// MpiCommunicator, and TP=2 logits of the tiny model equal TP=1 logits for the same seed.
// Every rank runs every test; rank 0 also runs the TP=1 reference on MPI_COMM_SELF.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <numeric>
#include <random>

#include "cluster/mpi_communicator.h"
#include "core/model_config.h"
#include "kernels/cpu_backend.h"
#include "worker/model.h"
#include "worker/weights.h"

namespace podserve {
namespace {

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

TEST(MpiCommunicator, AllReduceSumsAndAllGatherConcatenatesInRankOrder) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  ASSERT_EQ(comm.size(), 2) << "run under mpirun -np 2";
  std::vector<float> values(37);
  std::iota(values.begin(), values.end(), static_cast<float>(comm.rank() * 100));
  ASSERT_TRUE(comm.all_reduce_sum(make_view(values.data(), DType::kF32, {37})).ok());
  for (int i = 0; i < 37; ++i) EXPECT_FLOAT_EQ(values[i], static_cast<float>(2 * i + 100));

  // send [3, 4] per rank -> recv [3, 8]
  std::vector<float> send(12), recv(24, std::nanf(""));
  for (int i = 0; i < 12; ++i) send[i] = static_cast<float>(comm.rank() * 1000 + i);
  ASSERT_TRUE(comm.all_gather_last_dim(make_view(send.data(), DType::kF32, {3, 4}),
                                       make_view(recv.data(), DType::kF32, {3, 8}))
                  .ok());
  for (int row = 0; row < 3; ++row) {
    for (int r = 0; r < 2; ++r) {
      for (int col = 0; col < 4; ++col) {
        EXPECT_FLOAT_EQ(recv[row * 8 + r * 4 + col], static_cast<float>(r * 1000 + row * 4 + col));
      }
    }
  }
}

// A hybrid plan: one prompt prefilled in two chunks, a second prompt whole, then decodes.
std::vector<BatchPlan> tiny_plans() {
  std::mt19937 rng(11);
  auto tokens = [&](int n) {
    std::vector<TokenId> t(n);
    for (auto& x : t) x = static_cast<TokenId>(rng() % 256);
    return t;
  };
  std::vector<BatchPlan> plans(3);
  plans[0].sequences.push_back({1, 0, tokens(20), {0, 1}, true, false});
  plans[1].sequences.push_back({1, 20, tokens(13), {0, 1, 2}, true, true});
  plans[1].sequences.push_back({2, 0, tokens(40), {3, 4, 5}, true, true});
  plans[2].sequences.push_back({1, 33, tokens(1), {0, 1, 2}, false, true});
  plans[2].sequences.push_back({2, 40, tokens(1), {3, 4, 5}, false, true});
  return plans;
}

std::vector<std::vector<float>> run_model(MPI_Comm comm_handle) {
  auto config = model_preset("tiny");
  EXPECT_TRUE(config.ok());
  auto backend = make_cpu_backend();
  MpiCommunicator comm(comm_handle);
  RandomWeightSource weights(1234);
  ModelOptions options;
  options.num_pages = 16;
  options.page_size = 16;
  auto model = LlamaModel::create(*config, weights, *backend, comm, options);
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  std::vector<std::vector<float>> logits;
  for (const auto& plan : tiny_plans()) {
    auto out = (*model)->forward_logits(plan);
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    logits.push_back(std::move(*out));
  }
  return logits;
}

TEST(MpiTensorParallel, TinyModelLogitsAtTp2EqualTp1) {
  const auto tp2 = run_model(MPI_COMM_WORLD);
  if (world_rank() != 0) return;  // rank 1 took part in the collectives; rank 0 checks
  const auto tp1 = run_model(MPI_COMM_SELF);
  ASSERT_EQ(tp1.size(), tp2.size());
  // fp32, different reduction order across the TP split: 1e-4 absolute + relative.
  double max_abs = 0.0, norm = 0.0;
  for (std::size_t p = 0; p < tp1.size(); ++p) {
    ASSERT_EQ(tp1[p].size(), tp2[p].size());
    for (std::size_t i = 0; i < tp1[p].size(); ++i) {
      ASSERT_FALSE(std::isnan(tp2[p][i]));
      EXPECT_NEAR(tp2[p][i], tp1[p][i], 1e-4 + 1e-4 * std::fabs(tp1[p][i]))
          << "plan " << p << " logit " << i;
      max_abs = std::max(max_abs, static_cast<double>(std::fabs(tp2[p][i] - tp1[p][i])));
      norm += static_cast<double>(tp1[p][i]) * tp1[p][i];
    }
  }
  EXPECT_GT(norm, 1.0) << "logits trivially small";
  RecordProperty("max_abs_difference", std::to_string(max_abs));
}

}  // namespace
}  // namespace podserve

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  // Only rank 0 prints gtest's report; every rank's failures still fail the exit code.
  if (podserve::world_rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return failed;
}
