// GPU tests of the NCCL communicator (label gpu): one std::thread per rank, each with its own CUDA
// backend on its own GPU and a communicator joined through one unique id, for a group of two
// ranks and (when the machine has more) a group of every local GPU. Inputs are fresh random
// values (seed printed; PODSERVE_TEST_SEED=<n> replays a run). NVLink multicast is off
// (NCCL_NVLS_ENABLE=0, unless the environment already sets it). Skips with a reason below two
// CUDA devices.
//
// Checks (outputs are poisoned with NaN before each collective, so an unwritten element fails):
//   all_reduce_sum fp32: |got - sum| <= 1e-5 + 1e-5 |sum| per element (sum in fp64 on the host);
//   all_reduce_sum bf16 (inputs bf16-representable): per element
//     |got - sum| <= 4e-3 * size * sum_r |x_r| (one bf16 rounding per reduction step), and
//     ||got - sum|| / ||sum|| <= 1e-2;
//   both reductions: every rank holds bitwise the same result (ring and tree both finish each
//     element on one rank and copy it out);
//   all_gather_last_dim, fp32 and bf16: bitwise the host concatenation in rank order, on every
//     rank, over shapes that make the communicator's scratch grow.
#include "kernels/cuda/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../kernels/test_random.h"
#include "kernels/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace podserve {
namespace {

constexpr std::uint16_t kBf16Nan = 0x7FC0;

std::uint16_t to_bf16(float value) {  // round to nearest even (inputs are finite)
  const auto bits = std::bit_cast<std::uint32_t>(value);
  return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
float from_bf16(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

int cuda_device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

// One collective's tensor: `rows` x `cols` per rank (all-gather: the send side).
struct CollectiveShape {
  std::int64_t rows, cols;
};

// What one rank got back from every collective, in call order, as fp32 host values.
struct RankResults {
  Status status;
  std::vector<std::vector<float>> outputs;
};

// Copies `values` to the device in `dtype` (fp32 raw, bf16 rounded), runs `collective`, and
// returns the output tensor widened to fp32.
class RankRunner {
 public:
  RankRunner(Backend& backend, Communicator& comm) : backend_(backend), comm_(comm) {}

  Result<DeviceBuffer> upload(DType dtype, const std::vector<float>& values) {
    PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer buffer,
                              backend_.allocate(values.size() * dtype_size(dtype)));
    if (dtype == DType::kF32) {
      PODSERVE_RETURN_IF_ERROR(
          backend_.copy_to_device(buffer.data(), values.data(), values.size() * 4));
    } else {
      std::vector<std::uint16_t> bits(values.size());
      for (std::size_t i = 0; i < values.size(); ++i) bits[i] = to_bf16(values[i]);
      PODSERVE_RETURN_IF_ERROR(
          backend_.copy_to_device(buffer.data(), bits.data(), bits.size() * 2));
    }
    return buffer;
  }

  Result<DeviceBuffer> poisoned(DType dtype, std::size_t count) {
    return upload(dtype, std::vector<float>(count, std::numeric_limits<float>::quiet_NaN()));
  }

  Result<std::vector<float>> download(DType dtype, const DeviceBuffer& buffer, std::size_t count) {
    PODSERVE_RETURN_IF_ERROR(backend_.synchronize());
    std::vector<float> out(count);
    if (dtype == DType::kF32) {
      PODSERVE_RETURN_IF_ERROR(backend_.copy_to_host(out.data(), buffer.data(), count * 4));
    } else {
      std::vector<std::uint16_t> bits(count);
      PODSERVE_RETURN_IF_ERROR(backend_.copy_to_host(bits.data(), buffer.data(), count * 2));
      for (std::size_t i = 0; i < count; ++i) out[i] = from_bf16(bits[i]);
    }
    return out;
  }

  // In-place sum of `values` [rows, cols] over the group.
  Result<std::vector<float>> all_reduce(DType dtype, CollectiveShape shape,
                                        const std::vector<float>& values) {
    PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer data, upload(dtype, values));
    PODSERVE_RETURN_IF_ERROR(comm_.all_reduce_sum(data.view(dtype, {shape.rows, shape.cols})));
    return download(dtype, data, values.size());
  }

  // recv [rows, size * cols] from every rank's `values` [rows, cols].
  Result<std::vector<float>> all_gather(DType dtype, CollectiveShape shape,
                                        const std::vector<float>& values) {
    PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer send, upload(dtype, values));
    const std::size_t recv_count = values.size() * static_cast<std::size_t>(comm_.size());
    PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer recv, poisoned(dtype, recv_count));
    PODSERVE_RETURN_IF_ERROR(
        comm_.all_gather_last_dim(send.view(dtype, {shape.rows, shape.cols}),
                                  recv.view(dtype, {shape.rows, shape.cols * comm_.size()})));
    return download(dtype, recv, recv_count);
  }

 private:
  Backend& backend_;
  Communicator& comm_;
};

enum class Op { kAllReduce, kAllGather };

// One collective of the script every rank runs in the same order.
struct Step {
  Op op;
  DType dtype;
  CollectiveShape shape;
  std::vector<std::vector<float>> inputs;  // [rank]: [rows, cols]
  std::string name;
};

std::vector<Step> make_script(int size, std::mt19937_64& rng) {
  std::vector<Step> steps;
  const auto add = [&](Op op, DType dtype, CollectiveShape shape) {
    Step step{op, dtype, shape, {}, {}};
    step.name = std::string(op == Op::kAllReduce ? "all_reduce_sum " : "all_gather_last_dim ") +
                std::string(to_string(dtype)) + " [" + std::to_string(shape.rows) + ", " +
                std::to_string(shape.cols) + "]";
    for (int r = 0; r < size; ++r) {
      std::vector<float> values = podserve::testing::uniform_values(
          rng, static_cast<std::size_t>(shape.rows * shape.cols), -1.0f, 1.0f);
      if (dtype == DType::kBF16) {
        for (float& v : values) v = from_bf16(to_bf16(v));
      }
      step.inputs.push_back(std::move(values));
    }
    steps.push_back(std::move(step));
  };
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    add(Op::kAllReduce, dtype, {37, 1000});
    add(Op::kAllReduce, dtype, {1, 4096});
    add(Op::kAllReduce, dtype, {3, 7});
    // Growing, then shrinking: the communicator's scratch must grow and be reused.
    add(Op::kAllGather, dtype, {5, 96});
    add(Op::kAllGather, dtype, {2, 2048});
    add(Op::kAllGather, dtype, {33, 7});
    add(Op::kAllGather, dtype, {300, 256});
    add(Op::kAllGather, dtype, {1, 16});
  }
  return steps;
}

Status run_script(Backend& backend, Communicator& comm, const std::vector<Step>& steps,
                  RankResults& results) {
  RankRunner runner(backend, comm);
  for (const Step& step : steps) {
    const std::vector<float>& mine = step.inputs[static_cast<std::size_t>(comm.rank())];
    Result<std::vector<float>> out = step.op == Op::kAllReduce
                                         ? runner.all_reduce(step.dtype, step.shape, mine)
                                         : runner.all_gather(step.dtype, step.shape, mine);
    if (!out.ok()) return out.status();
    results.outputs.push_back(std::move(out).value());
  }
  return Status::Ok();
}

void check_all_reduce(const Step& step, const std::vector<float>& got, int rank) {
  const std::size_t n = step.inputs[0].size();
  ASSERT_EQ(got.size(), n);
  const int size = static_cast<int>(step.inputs.size());
  std::size_t bad = 0, non_finite = 0;
  double err2 = 0, ref2 = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double sum = 0, abs_sum = 0;
    for (const auto& input : step.inputs) {
      sum += input[i];
      abs_sum += std::fabs(input[i]);
    }
    if (!std::isfinite(got[i])) {
      ++non_finite;
      continue;
    }
    const double diff = std::fabs(got[i] - sum);
    err2 += diff * diff;
    ref2 += sum * sum;
    const double tolerance =
        step.dtype == DType::kF32 ? 1e-5 + 1e-5 * std::fabs(sum) : 4e-3 * size * abs_sum;
    if (diff > tolerance && bad++ < 5) {
      ADD_FAILURE() << step.name << " rank " << rank << " element " << i << ": got " << got[i]
                    << " want " << sum;
    }
  }
  EXPECT_EQ(non_finite, 0u) << step.name << " rank " << rank << ": NaN or infinite outputs";
  EXPECT_EQ(bad, 0u) << step.name << " rank " << rank;
  EXPECT_GT(ref2, 0.0) << step.name << ": trivially zero reference";
  EXPECT_LE(std::sqrt(err2 / ref2), step.dtype == DType::kF32 ? 1e-6 : 1e-2)
      << step.name << " rank " << rank << ": relative L2 error";
}

void check_all_gather(const Step& step, const std::vector<float>& got, int rank) {
  const int size = static_cast<int>(step.inputs.size());
  const std::int64_t rows = step.shape.rows, cols = step.shape.cols;
  ASSERT_EQ(got.size(), static_cast<std::size_t>(rows * cols * size));
  std::size_t bad = 0;
  for (std::int64_t row = 0; row < rows; ++row) {
    for (int r = 0; r < size; ++r) {
      for (std::int64_t col = 0; col < cols; ++col) {
        const float want = step.inputs[static_cast<std::size_t>(r)][row * cols + col];
        const float value = got[(row * size + r) * cols + col];
        if (std::bit_cast<std::uint32_t>(value) != std::bit_cast<std::uint32_t>(want) &&
            bad++ < 5) {
          ADD_FAILURE() << step.name << " rank " << rank << ": recv[" << row << ", "
                        << r * cols + col << "] (from rank " << r << ") is " << value << ", want "
                        << want;
        }
      }
    }
  }
  EXPECT_EQ(bad, 0u) << step.name << " rank " << rank;
}

// Group sizes: 2, and 0 for "every local GPU".
class NcclCommunicatorTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    // Off for the shared machines; a value already in the environment wins.
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    const int devices = cuda_device_count();
    if (devices < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << devices;
    size_ = GetParam() == 0 ? devices : GetParam();
    if (GetParam() == 0 && devices == 2) GTEST_SKIP() << "only 2 CUDA devices: the 2-rank case";
    if (size_ > devices) GTEST_SKIP() << "needs " << size_ << " CUDA devices, found " << devices;
  }
  int size_ = 0;
};

TEST_P(NcclCommunicatorTest, CollectivesMatchHostReference) {
  const std::uint64_t seed = podserve::testing::test_seed();
  SCOPED_TRACE(podserve::testing::seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::vector<Step> steps = make_script(size_, rng);

  auto id = make_nccl_unique_id();
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  ASSERT_FALSE(id->empty());
  // Backends first (not collective), so a failure cannot leave other ranks waiting in a join.
  std::vector<std::unique_ptr<Backend>> backends;
  for (int rank = 0; rank < size_; ++rank) {
    auto backend = make_cuda_backend(rank);
    ASSERT_TRUE(backend.ok()) << "device " << rank << ": " << backend.status().to_string();
    backends.push_back(std::move(backend).value());
  }
  std::vector<RankResults> results(static_cast<std::size_t>(size_));
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size_; ++rank) {
    threads.emplace_back([&, rank] {
      RankResults& mine = results[static_cast<std::size_t>(rank)];
      Backend& backend = *backends[static_cast<std::size_t>(rank)];
      auto comm = make_nccl_communicator(*id, size_, rank, backend);
      if (!comm.ok()) {
        mine.status = comm.status();
        return;
      }
      if ((*comm)->rank() != rank || (*comm)->size() != size_) {
        mine.status =
            internal_error("communicator reports rank " + std::to_string((*comm)->rank()) + " of " +
                           std::to_string((*comm)->size()));
        return;
      }
      mine.status = run_script(backend, **comm, steps, mine);
    });
  }
  for (auto& thread : threads) thread.join();

  for (int rank = 0; rank < size_; ++rank) {
    const RankResults& mine = results[static_cast<std::size_t>(rank)];
    ASSERT_TRUE(mine.status.ok()) << "rank " << rank << ": " << mine.status.to_string();
    ASSERT_EQ(mine.outputs.size(), steps.size());
    for (std::size_t s = 0; s < steps.size(); ++s) {
      if (steps[s].op == Op::kAllReduce) {
        check_all_reduce(steps[s], mine.outputs[s], rank);
      } else {
        check_all_gather(steps[s], mine.outputs[s], rank);
      }
      if (rank > 0) {
        const std::vector<float>& first = results[0].outputs[s];
        EXPECT_EQ(std::memcmp(mine.outputs[s].data(), first.data(), first.size() * 4), 0)
            << steps[s].name << ": rank " << rank << " holds a different result than rank 0";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Groups, NcclCommunicatorTest, ::testing::Values(2, 0),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == 0 ? std::string("all_devices")
                                                  : std::to_string(info.param) + "_ranks";
                         });

TEST(NcclCommunicatorErrors, RejectsBadArgumentsWithoutJoining) {
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  if (cuda_device_count() < 1) GTEST_SKIP() << "no CUDA device";
  auto id = make_nccl_unique_id();
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  auto backend = make_cuda_backend(0);
  ASSERT_TRUE(backend.ok()) << backend.status().to_string();
  EXPECT_FALSE(make_nccl_communicator(*id, 2, 2, **backend).ok()) << "rank outside the group";
  EXPECT_FALSE(make_nccl_communicator(*id, 2, -1, **backend).ok()) << "negative rank";
  EXPECT_FALSE(make_nccl_communicator(std::vector<std::uint8_t>(3), 1, 0, **backend).ok())
      << "a unique id of the wrong size";
  auto cpu = make_cpu_backend();
  EXPECT_FALSE(make_nccl_communicator(*id, 1, 0, *cpu).ok()) << "a CPU backend";
}

TEST(NcclCommunicatorErrors, SingleRankGroupRejectsOtherDtypes) {
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  if (cuda_device_count() < 1) GTEST_SKIP() << "no CUDA device";
  auto id = make_nccl_unique_id();
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  auto backend = make_cuda_backend(0);
  ASSERT_TRUE(backend.ok()) << backend.status().to_string();
  auto comm = make_nccl_communicator(*id, 1, 0, **backend);
  ASSERT_TRUE(comm.ok()) << comm.status().to_string();
  EXPECT_EQ((*comm)->size(), 1);
  auto buffer = (*backend)->allocate(1024);
  ASSERT_TRUE(buffer.ok());
  EXPECT_FALSE((*comm)->all_reduce_sum(buffer->view(DType::kI32, {16, 16})).ok()) << "int32";
  EXPECT_FALSE((*comm)
                   ->all_gather_last_dim(buffer->view(DType::kBF16, {4, 8}),
                                         buffer->view(DType::kBF16, {4, 16}))
                   .ok())
      << "recv [4, 16] for a group of 1 and send [4, 8]";
  // A valid single-rank all-gather copies send into recv.
  RankRunner runner(**backend, **comm);
  const std::vector<float> values = {1.0f, -2.0f, 3.5f, 0.25f, 8.0f, -0.5f};
  auto got = runner.all_gather(DType::kBF16, {2, 3}, values);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(*got, values);
}

}  // namespace
}  // namespace podserve
