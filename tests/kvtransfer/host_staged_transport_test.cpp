// Host staging (label gpu): two UCX transports in one process, each wrapped with host staging,
// move GPU pages from device 0 into device 1 (device 0 again with one GPU) through their pinned
// host mirrors: post, progress both sides to kDone, deliver on the target, copy back and compare
// every byte (untouched bytes stay poisoned). Also host regions passing through, a cancel and a
// deadline before the inner put (nothing sent), a cancel mid-way (nothing lands after the fence),
// an inner stall timing out from the outer post, and argument checks. ctest runs the binary per
// UCX transport like ucx_transport_test (--ucx-tls, --ucx-peer-errors). Skips without a GPU.
#include "kvtransfer/host_staged_transport.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "device_bytes.h"
#include "kvtransfer/ucx_transport.h"
#include "segment_patterns.h"

namespace podserve {
namespace {

using namespace std::chrono_literals;
using testing::DeviceBytes;
using testing::expected_target;
using testing::first_difference;
using testing::fresh_seed;
using testing::random_bytes;

constexpr int kInitiator = 0;
constexpr int kTarget = 1;
constexpr std::uint8_t kPoison = 0xA5;
bool use_peer_error_handling = true;  // --ucx-peer-errors=0 clears it

int cuda_devices() {
  int devices = 0;
  return cudaGetDeviceCount(&devices) == cudaSuccess ? devices : 0;
}

std::vector<PutSegment> shuffled_pages(std::mt19937_64& rng, std::uint64_t pages) {
  const auto order = testing::random_pages(rng, pages, pages);
  std::vector<PutSegment> segments;
  for (std::uint64_t page = 0; page < pages; ++page) {
    segments.push_back(
        {page * testing::kPageBytes, order[page] * testing::kPageBytes, testing::kPageBytes});
  }
  return segments;
}

class HostStagedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const int devices = cuda_devices();
    if (devices < 1) GTEST_SKIP() << "needs a CUDA device, found none";
    initiator_device_ = 0;
    target_device_ = devices > 1 ? 1 : 0;
    UcxOptions options;
    options.fence_timeout = 300ms;
    options.peer_error_handling = use_peer_error_handling;
    auto initiator = make_ucx_transport(options);
    ASSERT_TRUE(initiator.ok()) << initiator.status().to_string();
    auto target = make_ucx_transport(options);
    ASSERT_TRUE(target.ok()) << target.status().to_string();
    initiator_ucx_ = initiator->get();
    auto wrapped_initiator =
        make_host_staged_transport(std::move(*initiator), {.cuda_device = initiator_device_});
    ASSERT_TRUE(wrapped_initiator.ok()) << wrapped_initiator.status().to_string();
    auto wrapped_target =
        make_host_staged_transport(std::move(*target), {.cuda_device = target_device_});
    ASSERT_TRUE(wrapped_target.ok()) << wrapped_target.status().to_string();
    initiator_ = std::move(*wrapped_initiator);
    target_ = std::move(*wrapped_target);
    ASSERT_TRUE(initiator_->connect(kTarget, target_->local_address()).ok());
    ASSERT_TRUE(target_->connect(kInitiator, initiator_->local_address()).ok());
  }

  // Registers a source region on the initiator and a target region on the target (device
  // memory, or host vectors), returning (local id, remote handle).
  std::pair<int, int> register_pair(void* source, std::size_t source_bytes, MemoryKind source_kind,
                                    void* target, std::size_t target_bytes,
                                    MemoryKind target_kind) {
    auto local = initiator_->register_region(source, source_bytes, source_kind);
    EXPECT_TRUE(local.ok()) << local.status().to_string();
    auto target_region = target_->register_region(target, target_bytes, target_kind);
    EXPECT_TRUE(target_region.ok()) << target_region.status().to_string();
    target_region_ = target_region.ok() ? *target_region : -1;
    auto descriptor = target_->region_descriptor(target_region_);
    EXPECT_TRUE(descriptor.ok()) << descriptor.status().to_string();
    auto handle = initiator_->add_remote_region(kTarget, *descriptor);
    EXPECT_TRUE(handle.ok()) << handle.status().to_string();
    return {local.ok() ? *local : -1, handle.ok() ? *handle : -1};
  }

  TransferState wait(std::uint64_t id, std::chrono::seconds limit = 60s) {
    return testing::wait_final(*initiator_, target_.get(), id, limit);
  }
  void progress_for(std::chrono::milliseconds duration) {
    testing::progress_both(*initiator_, *target_, duration);
  }

  // Puts `segments` and delivers them on the target; false when the transfer did not finish.
  bool put_and_deliver(int local, int remote, std::span<const PutSegment> segments) {
    auto id = initiator_->post_put(local, remote, segments, 30s);
    EXPECT_TRUE(id.ok()) << id.status().to_string();
    if (!id.ok()) return false;
    const TransferState state = wait(*id);
    EXPECT_EQ(state, TransferState::kDone) << to_string(state);
    initiator_->release(*id);
    const Status delivered = target_->deliver(target_region_, segments);
    EXPECT_TRUE(delivered.ok()) << delivered.to_string();
    return state == TransferState::kDone && delivered.ok();
  }

  int initiator_device_ = 0;
  int target_device_ = 0;
  UcxTransport* initiator_ucx_ = nullptr;  // owned by initiator_: fault injection
  std::unique_ptr<KvTransport> initiator_;
  std::unique_ptr<KvTransport> target_;
  int target_region_ = -1;
};

class HostStagedPatternTest : public HostStagedTest,
                              public ::testing::WithParamInterface<testing::SegmentPattern> {};

TEST_P(HostStagedPatternTest, DevicePagesArriveExactlyAfterDeliver) {
  const testing::SegmentPattern& pattern = GetParam();
  std::mt19937_64 rng(fresh_seed());
  const std::vector<std::uint8_t> source_bytes = random_bytes(rng, pattern.region_bytes);
  const std::vector<std::uint8_t> poisoned(pattern.region_bytes, kPoison);
  DeviceBytes source(initiator_device_, source_bytes);
  DeviceBytes target(target_device_, poisoned);
  const auto [local, remote] = register_pair(source.data(), source.size(), MemoryKind::kDevice,
                                             target.data(), target.size(), MemoryKind::kDevice);
  const std::vector<PutSegment> segments = pattern.generate(rng);
  std::uint64_t bytes = 0;
  for (const PutSegment& segment : segments) bytes += segment.bytes;

  ASSERT_TRUE(put_and_deliver(local, remote, segments));
  EXPECT_EQ(first_difference(target.download(), expected_target(poisoned, source_bytes, segments)),
            -1);
  EXPECT_EQ(initiator_->stats().bytes_completed, bytes);
  EXPECT_EQ(initiator_->stats().transfers_completed, 1u);
}

INSTANTIATE_TEST_SUITE_P(Patterns, HostStagedPatternTest,
                         ::testing::ValuesIn(testing::segment_patterns()),
                         [](const auto& info) { return info.param.name; });

// Every mix of device and host memory on the two sides (host regions pass straight through).
class HostStagedKindsTest
    : public HostStagedTest,
      public ::testing::WithParamInterface<std::pair<MemoryKind, MemoryKind>> {};

TEST_P(HostStagedKindsTest, ScatteredPagesArriveExactly) {
  const auto [source_kind, target_kind] = GetParam();
  std::mt19937_64 rng(fresh_seed());
  constexpr std::uint64_t kPages = 64;
  const std::uint64_t region_bytes = kPages * testing::kPageBytes;
  const std::vector<std::uint8_t> source_bytes = random_bytes(rng, region_bytes);
  const std::vector<std::uint8_t> poisoned(region_bytes, kPoison);
  DeviceBytes source_device(initiator_device_, source_bytes);
  DeviceBytes target_device(target_device_, poisoned);
  std::vector<std::uint8_t> source_host = source_bytes;
  std::vector<std::uint8_t> target_host = poisoned;
  void* source = source_kind == MemoryKind::kDevice ? source_device.data() : source_host.data();
  void* target = target_kind == MemoryKind::kDevice ? target_device.data() : target_host.data();
  const auto [local, remote] =
      register_pair(source, region_bytes, source_kind, target, region_bytes, target_kind);
  const std::vector<PutSegment> segments = shuffled_pages(rng, kPages / 2);

  ASSERT_TRUE(put_and_deliver(local, remote, segments));
  const std::vector<std::uint8_t> arrived =
      target_kind == MemoryKind::kDevice ? target_device.download() : target_host;
  EXPECT_EQ(first_difference(arrived, expected_target(poisoned, source_bytes, segments)), -1);
}

INSTANTIATE_TEST_SUITE_P(Kinds, HostStagedKindsTest,
                         ::testing::Values(std::pair{MemoryKind::kDevice, MemoryKind::kDevice},
                                           std::pair{MemoryKind::kDevice, MemoryKind::kHost},
                                           std::pair{MemoryKind::kHost, MemoryKind::kDevice},
                                           std::pair{MemoryKind::kHost, MemoryKind::kHost}),
                         [](const auto& info) {
                           const auto name = [](MemoryKind kind) {
                             return kind == MemoryKind::kDevice ? std::string("device")
                                                                : std::string("host");
                           };
                           return name(info.param.first) + "_to_" + name(info.param.second);
                         });

// A device region set up with known contents `before` on the target, and a source holding
// different bytes: the fixture for the paths that must not deliver the source.
struct Prepared {
  std::vector<std::uint8_t> before;
  std::vector<std::uint8_t> fresh;
  std::unique_ptr<DeviceBytes> source;
  std::unique_ptr<DeviceBytes> target;
  std::vector<PutSegment> segments;
  int local = 0;
  int remote = 0;
};

class HostStagedFenceTest : public HostStagedTest {
 protected:
  // Registers `pages` pages on both sides and makes the target's mirror and device hold `before`
  // (a first transfer of every page), then loads `fresh` into the source.
  Prepared prepare(std::uint64_t pages) {
    Prepared p;
    std::mt19937_64 rng(fresh_seed());
    const std::uint64_t bytes = pages * testing::kPageBytes;
    p.before = random_bytes(rng, bytes);
    p.fresh = random_bytes(rng, bytes);
    p.source = std::make_unique<DeviceBytes>(initiator_device_, p.before);
    p.target =
        std::make_unique<DeviceBytes>(target_device_, std::vector<std::uint8_t>(bytes, kPoison));
    std::tie(p.local, p.remote) = register_pair(p.source->data(), bytes, MemoryKind::kDevice,
                                                p.target->data(), bytes, MemoryKind::kDevice);
    const PutSegment whole{0, 0, bytes};
    EXPECT_TRUE(put_and_deliver(p.local, p.remote, std::span(&whole, 1)));
    EXPECT_EQ(first_difference(p.target->download(), p.before), -1);
    p.source->upload(p.fresh);
    p.segments = shuffled_pages(rng, pages);
    return p;
  }

  // Delivers the whole region and returns what the target's device then holds.
  std::vector<std::uint8_t> deliver_everything(const Prepared& p) {
    const PutSegment whole{0, 0, p.target->size()};
    const Status delivered = target_->deliver(target_region_, std::span(&whole, 1));
    EXPECT_TRUE(delivered.ok()) << delivered.to_string();
    return p.target->download();
  }
};

TEST_F(HostStagedFenceTest, CancelBeforeTheInnerPutSendsNothing) {
  Prepared p = prepare(256);
  auto id = initiator_->post_put(p.local, p.remote, p.segments, 30s);
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  initiator_->cancel(*id);  // no progress yet: the inner put is not posted
  EXPECT_EQ(wait(*id), TransferState::kCancelled);
  progress_for(100ms);
  EXPECT_EQ(first_difference(deliver_everything(p), p.before), -1);
  EXPECT_EQ(initiator_->stats().transfers_cancelled, 1u);
}

TEST_F(HostStagedFenceTest, DeadlineBeforeTheInnerPutSendsNothing) {
  Prepared p = prepare(256);
  auto id = initiator_->post_put(p.local, p.remote, p.segments, 0ms);
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  EXPECT_EQ(wait(*id), TransferState::kTimedOut);
  progress_for(100ms);
  EXPECT_EQ(first_difference(deliver_everything(p), p.before), -1);
  EXPECT_EQ(initiator_->stats().transfers_timed_out, 1u);
}

// Cancels after a range of delays, so that the cancel meets the transfer in its device-to-host
// copy, during the inner put, or after it finished; whichever, nothing lands after the fence.
TEST_F(HostStagedFenceTest, CancelMidwayWritesNothingAfterItsFence) {
  Prepared p = prepare(4096);  // 64 MiB of shuffled 16 KiB pages
  const std::vector<std::uint8_t> all_fresh = expected_target(p.before, p.fresh, p.segments);
  for (const auto delay : {0ms, 2ms, 10ms, 30ms, 100ms}) {
    // Back to `before` on the target, `fresh` in the source.
    p.source->upload(p.before);
    const PutSegment whole{0, 0, p.source->size()};
    ASSERT_TRUE(put_and_deliver(p.local, p.remote, std::span(&whole, 1)));
    p.source->upload(p.fresh);

    auto id = initiator_->post_put(p.local, p.remote, p.segments, 30s);
    ASSERT_TRUE(id.ok()) << id.status().to_string();
    progress_for(delay);
    initiator_->cancel(*id);
    const TransferState state = wait(*id);
    std::printf("cancel after %lld ms: %s\n", static_cast<long long>(delay.count()),
                std::string(to_string(state)).c_str());
    ASSERT_NE(state, TransferState::kPending);
    initiator_->release(*id);
    const std::vector<std::uint8_t> at_fence = deliver_everything(p);
    progress_for(100ms);
    EXPECT_EQ(first_difference(deliver_everything(p), at_fence), -1)
        << "bytes landed after the transfer was final (cancel after " << delay.count() << " ms)";
    if (state == TransferState::kDone) {
      EXPECT_EQ(first_difference(at_fence, all_fresh), -1);
    }
  }

  // The pair still works afterwards.
  ASSERT_TRUE(put_and_deliver(p.local, p.remote, p.segments));
  EXPECT_EQ(first_difference(p.target->download(), all_fresh), -1);
}

TEST_F(HostStagedFenceTest, StalledInnerPutTimesOutFromTheOuterPost) {
  Prepared p = prepare(64);
  initiator_ucx_->set_fault_injection({.stall_probability = 1.0});
  const auto posted = std::chrono::steady_clock::now();
  auto id = initiator_->post_put(p.local, p.remote, p.segments, 200ms);
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  EXPECT_EQ(wait(*id), TransferState::kTimedOut);
  const auto elapsed = std::chrono::steady_clock::now() - posted;
  EXPECT_GE(elapsed, 200ms);
  EXPECT_LT(elapsed, 5s);
  initiator_->release(*id);

  initiator_ucx_->set_fault_injection({});
  ASSERT_TRUE(put_and_deliver(p.local, p.remote, p.segments));
  EXPECT_EQ(first_difference(p.target->download(), expected_target(p.before, p.fresh, p.segments)),
            -1);
}

TEST_F(HostStagedTest, RejectsBadArguments) {
  std::vector<std::uint8_t> host(4096, 1);
  EXPECT_EQ(
      initiator_->register_region(host.data(), host.size(), MemoryKind::kDevice).status().code(),
      StatusCode::kInvalidArgument)
      << "host memory registered as device memory";
  DeviceBytes source(initiator_device_, std::vector<std::uint8_t>(4096, 2));
  DeviceBytes target(target_device_, std::vector<std::uint8_t>(4096, kPoison));
  if (initiator_device_ != target_device_) {
    EXPECT_EQ(initiator_->register_region(target.data(), target.size(), MemoryKind::kDevice)
                  .status()
                  .code(),
              StatusCode::kInvalidArgument)
        << "device memory of another device";
  }
  const auto [local, remote] = register_pair(source.data(), source.size(), MemoryKind::kDevice,
                                             target.data(), target.size(), MemoryKind::kDevice);
  const PutSegment past_source{4090, 0, 10};
  EXPECT_EQ(initiator_->post_put(local, remote, std::span(&past_source, 1), 1s).status().code(),
            StatusCode::kOutOfRange);
  const PutSegment past_target{0, 4000, 200};
  EXPECT_EQ(target_->deliver(target_region_, std::span(&past_target, 1)).code(),
            StatusCode::kOutOfRange);
  // The remote range is checked when the inner put is posted, after the copy.
  auto id = initiator_->post_put(local, remote, std::span(&past_target, 1), 5s);
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  EXPECT_EQ(wait(*id, 10s), TransferState::kFailed);
  EXPECT_EQ(initiator_->poll(12345), TransferState::kFailed) << "unknown ids read as failed";
  EXPECT_EQ(first_difference(target.download(), std::vector<std::uint8_t>(4096, kPoison)), -1);
}

TEST(MakeTransportFor, WrapsOnlyWhenTheTransportLacksDeviceMemory) {
  if (cuda_devices() < 1) GTEST_SKIP() << "needs a CUDA device, found none";
  auto host = make_ucx_transport({});
  ASSERT_TRUE(host.ok());
  KvTransport* const plain = host->get();
  auto for_host = make_transport_for(std::move(*host), MemoryKind::kHost, {});
  ASSERT_TRUE(for_host.ok());
  EXPECT_EQ(for_host->get(), plain) << "host KV memory needs no staging";

  auto device = make_ucx_transport({});
  ASSERT_TRUE(device.ok());
  const bool ucx_has_cuda = (*device)->supports_device_memory();
  KvTransport* const unwrapped = device->get();
  auto for_device = make_transport_for(std::move(*device), MemoryKind::kDevice, {});
  ASSERT_TRUE(for_device.ok()) << for_device.status().to_string();
  EXPECT_TRUE((*for_device)->supports_device_memory());
  EXPECT_EQ(for_device->get() == unwrapped, ucx_has_cuda) << (*for_device)->name();
  std::printf("UCX CUDA memory support: %s; transport for device KV: %s\n",
              ucx_has_cuda ? "yes" : "no", (*for_device)->name().c_str());
}

}  // namespace
}  // namespace podserve

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  podserve::use_peer_error_handling = podserve::testing::apply_ucx_test_flags(argc, argv);
  return RUN_ALL_TESTS();
}
