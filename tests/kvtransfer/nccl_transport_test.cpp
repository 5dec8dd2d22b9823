// NCCL channel between two GPUs of this machine (label gpu): scattered pages sent from GPU 0
// arrive exactly at GPU 1, untouched bytes stay poisoned. Skips with fewer than 2 CUDA devices.
#include "kvtransfer/nccl_transport.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "segment_patterns.h"

namespace podserve {
namespace {

using namespace std::chrono_literals;

TEST(NcclKvChannel, ScatteredPagesArriveExactly) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 2) {
    GTEST_SKIP() << "needs 2 CUDA devices, found " << devices;
  }
  const std::vector<int> device_ids = {0, 1};
  auto channels = NcclKvChannel::create_local(device_ids);
  ASSERT_TRUE(channels.ok()) << channels.status().to_string();
  NcclKvChannel& sender = *(*channels)[0];
  NcclKvChannel& receiver = *(*channels)[1];

  std::mt19937_64 rng(std::random_device{}());
  constexpr std::uint64_t kBytes = 4 << 20;
  const std::vector<std::uint8_t> source = testing::random_bytes(rng, kBytes);
  const std::vector<std::uint8_t> poisoned(kBytes, 0xA5);
  const auto local = testing::random_pages(rng, kBytes / testing::kPageBytes, 100);
  const auto remote = testing::random_pages(rng, kBytes / testing::kPageBytes, 100);
  std::vector<PutSegment> segments;
  for (std::size_t i = 0; i < local.size(); ++i) {
    segments.push_back(
        {local[i] * testing::kPageBytes, remote[i] * testing::kPageBytes, testing::kPageBytes});
  }

  void* send_buffer = nullptr;
  void* recv_buffer = nullptr;
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&send_buffer, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(send_buffer, source.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&recv_buffer, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(recv_buffer, poisoned.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);

  ASSERT_TRUE(NcclKvChannel::group_start().ok());
  auto sent = sender.send_segments(1, send_buffer, segments, nullptr, 30s);
  auto received = receiver.recv_segments(0, recv_buffer, segments, nullptr, 30s);
  ASSERT_TRUE(NcclKvChannel::group_end().ok());
  ASSERT_TRUE(sent.ok()) << sent.status().to_string();
  ASSERT_TRUE(received.ok()) << received.status().to_string();
  TransferState send_state = TransferState::kPending;
  TransferState recv_state = TransferState::kPending;
  while (send_state == TransferState::kPending || recv_state == TransferState::kPending) {
    send_state = sender.poll(*sent);
    recv_state = receiver.poll(*received);
  }
  EXPECT_EQ(send_state, TransferState::kDone);
  ASSERT_EQ(recv_state, TransferState::kDone);

  std::vector<std::uint8_t> result(kBytes);
  ASSERT_EQ(cudaMemcpy(result.data(), recv_buffer, kBytes, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(testing::first_difference(result, testing::expected_target(poisoned, source, segments)),
            -1);
  cudaFree(recv_buffer);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  cudaFree(send_buffer);
}

}  // namespace
}  // namespace podserve
