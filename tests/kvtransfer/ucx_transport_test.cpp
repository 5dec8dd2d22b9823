// UCX transport in one process: two transports (two workers) connected to each other. ctest runs
// this binary once per transport (see CMakeLists.txt): --ucx-tls=LIST sets UCX_TLS before any
// UCX context exists, --ucx-peer-errors=0 turns UcxOptions::peer_error_handling off (needed for
// UCX 1.13's shared memory).
#include "kvtransfer/ucx_transport.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "segment_patterns.h"

namespace podserve {
namespace {

using namespace std::chrono_literals;
using testing::expected_target;
using testing::first_difference;
using testing::fresh_seed;
using testing::random_bytes;

constexpr int kInitiator = 0;
constexpr int kTarget = 1;
constexpr std::uint8_t kPoison = 0xA5;
bool use_peer_error_handling = true;  // --ucx-peer-errors=0 clears it

class UcxPairTest : public ::testing::Test {
 protected:
  static bool peer_error_handling() { return use_peer_error_handling; }

  void SetUp() override {
    UcxOptions options;
    options.fence_timeout = 300ms;
    options.peer_error_handling = peer_error_handling();
    auto initiator = make_ucx_transport(options);
    ASSERT_TRUE(initiator.ok()) << initiator.status().to_string();
    auto target = make_ucx_transport(options);
    ASSERT_TRUE(target.ok()) << target.status().to_string();
    initiator_ = std::move(*initiator);
    target_ = std::move(*target);
    ASSERT_TRUE(initiator_->connect(kTarget, target_->local_address()).ok());
    ASSERT_TRUE(target_->connect(kInitiator, initiator_->local_address()).ok());
  }

  // Registers `source` on the initiator and `target` on the target; returns (local id, handle).
  std::pair<int, int> register_pair(std::vector<std::uint8_t>& source,
                                    std::vector<std::uint8_t>& target) {
    auto local = initiator_->register_region(source.data(), source.size(), MemoryKind::kHost);
    EXPECT_TRUE(local.ok()) << local.status().to_string();
    auto remote_local = target_->register_region(target.data(), target.size(), MemoryKind::kHost);
    EXPECT_TRUE(remote_local.ok()) << remote_local.status().to_string();
    auto descriptor = target_->region_descriptor(*remote_local);
    EXPECT_TRUE(descriptor.ok());
    auto handle = initiator_->add_remote_region(kTarget, *descriptor);
    EXPECT_TRUE(handle.ok()) << handle.status().to_string();
    return {*local, *handle};
  }

  // Progresses both sides (or only the initiator) until the transfer is final.
  TransferState wait(std::uint64_t id, bool progress_target = true,
                     std::chrono::seconds limit = 60s) {
    return testing::wait_final(*initiator_, progress_target ? target_.get() : nullptr, id, limit);
  }
  void progress_for(std::chrono::milliseconds duration) {
    testing::progress_both(*initiator_, *target_, duration);
  }

  std::unique_ptr<UcxTransport> initiator_;
  std::unique_ptr<UcxTransport> target_;
};

class UcxPatternTest : public UcxPairTest,
                       public ::testing::WithParamInterface<testing::SegmentPattern> {};

TEST_P(UcxPatternTest, PutsExactBytesAndLeavesTheRestUntouched) {
  const testing::SegmentPattern& pattern = GetParam();
  std::mt19937_64 rng(fresh_seed());
  std::vector<std::uint8_t> source = random_bytes(rng, pattern.region_bytes);
  std::vector<std::uint8_t> target(pattern.region_bytes, kPoison);
  const auto [local, remote] = register_pair(source, target);
  const std::vector<PutSegment> segments = pattern.generate(rng);
  const std::vector<std::uint8_t> expected = expected_target(target, source, segments);
  std::uint64_t bytes = 0;
  for (const PutSegment& segment : segments) bytes += segment.bytes;

  auto id = initiator_->post_put(local, remote, segments, 30s);
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  ASSERT_EQ(wait(*id), TransferState::kDone);
  EXPECT_EQ(first_difference(target, expected), -1);
  EXPECT_EQ(initiator_->stats().bytes_completed, bytes);
  EXPECT_EQ(initiator_->stats().transfers_completed, 1u);
  initiator_->release(*id);
  EXPECT_EQ(initiator_->poll(*id), TransferState::kFailed) << "released ids are forgotten";
}

// The same into memory the target's transport allocated (single-copy shared memory over posix).
TEST_P(UcxPatternTest, PutsExactBytesIntoTransportAllocatedMemory) {
  const testing::SegmentPattern& pattern = GetParam();
  std::mt19937_64 rng(fresh_seed());
  std::vector<std::uint8_t> source = random_bytes(rng, pattern.region_bytes);
  auto local = initiator_->register_region(source.data(), source.size(), MemoryKind::kHost);
  ASSERT_TRUE(local.ok()) << local.status().to_string();
  auto allocated = target_->allocate_region(pattern.region_bytes);
  ASSERT_TRUE(allocated.ok()) << allocated.status().to_string();
  const std::span<std::uint8_t> target(static_cast<std::uint8_t*>(allocated->base),
                                       pattern.region_bytes);
  std::memset(target.data(), kPoison, target.size());
  auto remote = initiator_->add_remote_region(kTarget, *target_->region_descriptor(allocated->id));
  ASSERT_TRUE(remote.ok()) << remote.status().to_string();
  const std::vector<PutSegment> segments = pattern.generate(rng);
  const auto expected =
      expected_target(std::vector<std::uint8_t>(target.size(), kPoison), source, segments);

  auto id = initiator_->post_put(*local, *remote, segments, 30s);
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  ASSERT_EQ(wait(*id), TransferState::kDone);
  EXPECT_EQ(first_difference(target, expected), -1);
}

INSTANTIATE_TEST_SUITE_P(Patterns, UcxPatternTest, ::testing::ValuesIn(testing::segment_patterns()),
                         [](const auto& info) { return info.param.name; });

TEST_F(UcxPairTest, ManyTransfersInFlightAtOnce) {
  std::mt19937_64 rng(fresh_seed());
  constexpr std::uint64_t kPages = 64;
  std::vector<std::uint8_t> source = random_bytes(rng, kPages * testing::kPageBytes);
  std::vector<std::uint8_t> target(source.size(), kPoison);
  const auto [local, remote] = register_pair(source, target);
  const auto order = testing::random_pages(rng, kPages, kPages);
  std::vector<std::uint64_t> ids;
  for (std::uint64_t page = 0; page < kPages; ++page) {
    const PutSegment segment{page * testing::kPageBytes, order[page] * testing::kPageBytes,
                             testing::kPageBytes};
    auto id = initiator_->post_put(local, remote, std::span(&segment, 1), 30s);
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
  }
  std::vector<PutSegment> all;
  for (std::uint64_t page = 0; page < kPages; ++page) {
    all.push_back(
        {page * testing::kPageBytes, order[page] * testing::kPageBytes, testing::kPageBytes});
  }
  for (std::uint64_t id : ids) EXPECT_EQ(wait(id), TransferState::kDone);
  EXPECT_EQ(
      first_difference(
          target, expected_target(std::vector<std::uint8_t>(target.size(), kPoison), source, all)),
      -1);
}

TEST_F(UcxPairTest, RejectsBadArguments) {
  std::vector<std::uint8_t> source(4096, 1);
  std::vector<std::uint8_t> target(4096, kPoison);
  const auto [local, remote] = register_pair(source, target);
  const PutSegment past_target{0, 4000, 200};
  EXPECT_EQ(initiator_->post_put(local, remote, std::span(&past_target, 1), 1s).status().code(),
            StatusCode::kOutOfRange);
  const PutSegment past_source{4090, 0, 10};
  EXPECT_EQ(initiator_->post_put(local, remote, std::span(&past_source, 1), 1s).status().code(),
            StatusCode::kOutOfRange);
  const PutSegment fine{0, 0, 8};
  EXPECT_EQ(initiator_->post_put(local + 100, remote, std::span(&fine, 1), 1s).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(initiator_->post_put(local, remote + 100, std::span(&fine, 1), 1s).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(initiator_->add_remote_region(kTarget, RemoteRegion{{1, 2, 3}}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(initiator_->add_remote_region(42, RemoteRegion{{1, 2, 3}}).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(initiator_->connect(kTarget, target_->local_address()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(initiator_->register_region(nullptr, 16, MemoryKind::kHost).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(first_difference(target, std::vector<std::uint8_t>(4096, kPoison)), -1);
}

TEST_F(UcxPairTest, DeviceMemoryWithoutCudaSupportAsksForStaging) {
  if (initiator_->supports_device_memory())
    GTEST_SKIP() << "this UCX build has CUDA memory support";
  std::vector<std::uint8_t> buffer(4096);
  auto region = initiator_->register_region(buffer.data(), buffer.size(), MemoryKind::kDevice);
  ASSERT_EQ(region.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(region.status().message().find("stage through host memory"), std::string::npos);
}

TEST_F(UcxPairTest, DroppedTransferFailsWithoutWriting) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<std::uint8_t> source = random_bytes(rng, 1 << 20);
  std::vector<std::uint8_t> target(source.size(), kPoison);
  const auto [local, remote] = register_pair(source, target);
  const PutSegment segment{0, 0, source.size()};
  initiator_->set_fault_injection({.drop_probability = 1.0});
  auto dropped = initiator_->post_put(local, remote, std::span(&segment, 1), 30s);
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(wait(*dropped), TransferState::kFailed);
  progress_for(50ms);
  EXPECT_EQ(first_difference(target, std::vector<std::uint8_t>(target.size(), kPoison)), -1);
  EXPECT_EQ(initiator_->stats().transfers_failed, 1u);

  initiator_->set_fault_injection({});
  auto retry = initiator_->post_put(local, remote, std::span(&segment, 1), 30s);
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(wait(*retry), TransferState::kDone);
  EXPECT_EQ(first_difference(target, source), -1);
}

TEST_F(UcxPairTest, StalledTransferTimesOutThenThePeerStillWorks) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<std::uint8_t> source = random_bytes(rng, 1 << 20);
  std::vector<std::uint8_t> target(source.size(), kPoison);
  const auto [local, remote] = register_pair(source, target);
  const PutSegment segment{0, 0, source.size()};
  initiator_->set_fault_injection({.stall_probability = 1.0});
  const auto posted = std::chrono::steady_clock::now();
  auto stalled = initiator_->post_put(local, remote, std::span(&segment, 1), 200ms);
  ASSERT_TRUE(stalled.ok());
  EXPECT_EQ(wait(*stalled), TransferState::kTimedOut);
  EXPECT_GE(std::chrono::steady_clock::now() - posted, 200ms);
  EXPECT_EQ(initiator_->stats().transfers_timed_out, 1u);
  initiator_->release(*stalled);

  // Timed out means fenced: poison the target again; nothing of the stalled transfer lands.
  std::memset(target.data(), kPoison, target.size());
  progress_for(100ms);
  EXPECT_EQ(first_difference(target, std::vector<std::uint8_t>(target.size(), kPoison)), -1);

  initiator_->set_fault_injection({});
  auto fresh = initiator_->post_put(local, remote, std::span(&segment, 1), 30s);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(wait(*fresh), TransferState::kDone);
  EXPECT_EQ(first_difference(target, source), -1);
}

TEST_F(UcxPairTest, CancelledLargeTransferNoLongerWritesAfterItsFence) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<std::uint8_t> source = random_bytes(rng, 64 << 20);
  std::vector<std::uint8_t> target(source.size(), kPoison);
  const auto [local, remote] = register_pair(source, target);
  // Scattered pages, so the transfer is many puts and still moving when cancelled.
  const auto order = testing::random_pages(rng, source.size() / testing::kPageBytes,
                                           source.size() / testing::kPageBytes);
  std::vector<PutSegment> segments;
  for (std::uint64_t page = 0; page < order.size(); ++page) {
    segments.push_back(
        {page * testing::kPageBytes, order[page] * testing::kPageBytes, testing::kPageBytes});
  }
  auto id = initiator_->post_put(local, remote, segments, 30s);
  ASSERT_TRUE(id.ok());
  const bool in_flight = initiator_->poll(*id) == TransferState::kPending;
  initiator_->cancel(*id);
  const TransferState state = wait(*id);
  if (in_flight) {
    EXPECT_TRUE(state == TransferState::kCancelled || state == TransferState::kFailed)
        << to_string(state);
  } else {
    EXPECT_EQ(state, TransferState::kDone) << "cancel of a finished transfer changes nothing";
  }
  std::memset(target.data(), kPoison, target.size());
  progress_for(200ms);
  EXPECT_EQ(first_difference(target, std::vector<std::uint8_t>(target.size(), kPoison)), -1);

  const PutSegment first_page{0, 0, testing::kPageBytes};
  auto fresh = initiator_->post_put(local, remote, std::span(&first_page, 1), 30s);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(wait(*fresh), TransferState::kDone);
  EXPECT_EQ(std::memcmp(target.data(), source.data(), testing::kPageBytes), 0);
}

// A target that stops progressing: over TCP the flush can't complete, so the fence gives up
// after fence_timeout, force-closes the endpoint and reports kFailed; the next transfer
// reconnects. Transports whose writes need no target progress (shared memory) finish instead.
TEST_F(UcxPairTest, FenceGivesUpOnAPeerThatStoppedProgressing) {
  if (!peer_error_handling())
    GTEST_SKIP() << "without peer error handling a fence waits for its flush";
  std::mt19937_64 rng(fresh_seed());
  std::vector<std::uint8_t> source = random_bytes(rng, 8 << 20);
  std::vector<std::uint8_t> target(source.size(), kPoison);
  const auto [local, remote] = register_pair(source, target);
  const PutSegment first_half{0, 0, 4 << 20};
  auto id = initiator_->post_put(local, remote, std::span(&first_half, 1), 100ms);
  ASSERT_TRUE(id.ok());
  const TransferState state = wait(*id, /*progress_target=*/false, 10s);
  if (state == TransferState::kDone) {
    GTEST_SKIP() << "this transport writes without the target's progress: nothing to fence";
  }
  EXPECT_EQ(state, TransferState::kFailed) << to_string(state);

  // Reconnects; the second half of the target is untouched by the abandoned transfer.
  const PutSegment second_half{4 << 20, 4 << 20, 4 << 20};
  auto fresh = initiator_->post_put(local, remote, std::span(&second_half, 1), 30s);
  ASSERT_TRUE(fresh.ok()) << fresh.status().to_string();
  EXPECT_EQ(wait(*fresh), TransferState::kDone);
  EXPECT_EQ(std::memcmp(target.data() + (4 << 20), source.data() + (4 << 20), 4 << 20), 0);
}

}  // namespace
}  // namespace podserve

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  podserve::use_peer_error_handling = podserve::testing::apply_ucx_test_flags(argc, argv);
  return RUN_ALL_TESTS();
}
