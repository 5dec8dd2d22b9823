// The transport interface's helpers: segment coalescing, state names, the packed layout of
// NCCL page runs, and make_transport_for's choice (the wrapping itself:
// host_staged_transport_test).
#include "kvtransfer/transport.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "kvtransfer/host_staged_transport.h"
#include "kvtransfer/pack_layout.h"

namespace podserve {
namespace {

TEST(CoalesceSegments, MergesRunsAdjacentOnBothSides) {
  const std::vector<PutSegment> in = {{0, 100, 16}, {16, 116, 16}, {32, 132, 8}};
  EXPECT_EQ(coalesce_segments(in), (std::vector<PutSegment>{{0, 100, 40}}));
}

TEST(CoalesceSegments, KeepsSegmentsAdjacentOnOneSideOnly) {
  const std::vector<PutSegment> in = {{0, 0, 16}, {16, 64, 16}, {48, 80, 16}};
  EXPECT_EQ(coalesce_segments(in), in);
}

TEST(CoalesceSegments, KeepsOrderAndDropsEmptySegments) {
  const std::vector<PutSegment> in = {{64, 64, 16}, {0, 0, 0}, {0, 0, 16}, {16, 16, 16}};
  EXPECT_EQ(coalesce_segments(in), (std::vector<PutSegment>{{64, 64, 16}, {0, 0, 32}}));
}

TEST(CoalesceSegments, EmptyInput) { EXPECT_TRUE(coalesce_segments({}).empty()); }

// A TP 2 -> 1 shipment of one page (2 K/V x 4 slots, 8-byte head rows): the sender's rows are
// back to back (one local range), the receiver's strided by its two heads (one range per row).
TEST(CoveredRanges, MergesOneSideOnlyWhateverTheOtherDoes) {
  std::vector<PutSegment> rows;
  for (std::uint64_t row = 0; row < 8; ++row) rows.push_back({row * 8, row * 16 + 8, 8});
  EXPECT_EQ(covered_ranges(rows, SegmentSide::kLocal), (std::vector<ByteRange>{{0, 64}}));
  const std::vector<ByteRange> remote = covered_ranges(rows, SegmentSide::kRemote);
  ASSERT_EQ(remote.size(), 8u);
  for (std::uint64_t row = 0; row < 8; ++row) EXPECT_EQ(remote[row], (ByteRange{row * 16 + 8, 8}));
}

// Unsorted, overlapping and touching ranges merge; empty segments and gaps stay out.
TEST(CoveredRanges, SortsAndMergesOverlapsButKeepsGaps) {
  const std::vector<PutSegment> in = {{100, 0, 20}, {0, 0, 10}, {10, 0, 5},
                                      {110, 0, 30}, {50, 0, 0}, {200, 0, 1}};
  EXPECT_EQ(covered_ranges(in, SegmentSide::kLocal),
            (std::vector<ByteRange>{{0, 15}, {100, 40}, {200, 1}}));
  EXPECT_TRUE(covered_ranges({}, SegmentSide::kRemote).empty());
}

TEST(TransferState, EveryStateHasAName) {
  EXPECT_EQ(to_string(TransferState::kPending), "pending");
  EXPECT_EQ(to_string(TransferState::kDone), "done");
  EXPECT_EQ(to_string(TransferState::kFailed), "failed");
  EXPECT_EQ(to_string(TransferState::kTimedOut), "timed_out");
  EXPECT_EQ(to_string(TransferState::kCancelled), "cancelled");
}

TEST(PackLayout, BothSidesAgreeOnAlignedPackedOffsets) {
  const std::vector<PutSegment> segments = {{0, 4096, 100}, {200, 17, 3}, {1000, 64, 32}};
  const PackedLayout sender = pack_layout(segments, PackSide::kSender);
  const PackedLayout receiver = pack_layout(segments, PackSide::kReceiver);
  EXPECT_EQ(sender.segments,
            (std::vector<PackedSegment>{{0, 0, 100}, {200, 112, 3}, {1000, 128, 32}}));
  EXPECT_EQ(receiver.segments,
            (std::vector<PackedSegment>{{4096, 0, 100}, {17, 112, 3}, {64, 128, 32}}));
  EXPECT_EQ(sender.packed_bytes, 160u);
  EXPECT_EQ(receiver.packed_bytes, sender.packed_bytes);
}

TEST(PackLayout, PagesPackWithoutGaps) {
  constexpr std::uint64_t kPage = 65536;
  std::vector<PutSegment> segments;
  for (std::uint64_t page = 0; page < 8; ++page)
    segments.push_back({page * kPage, (7 - page) * kPage, kPage});
  const PackedLayout layout = pack_layout(segments, PackSide::kReceiver);
  ASSERT_EQ(layout.segments.size(), 8u);
  for (std::uint64_t page = 0; page < 8; ++page) {
    EXPECT_EQ(layout.segments[page].packed_offset, page * kPage);
    EXPECT_EQ(layout.segments[page].scattered_offset, (7 - page) * kPage);
  }
  EXPECT_EQ(layout.packed_bytes, 8 * kPage);
  EXPECT_EQ(pack_layout({}, PackSide::kSender).packed_bytes, 0u);
}

// A transport that only answers supports_device_memory(): make_transport_for must not touch more.
class FakeTransport final : public KvTransport {
 public:
  explicit FakeTransport(bool device_memory) : device_memory_(device_memory) {}
  std::string name() const override { return "fake"; }
  bool supports_device_memory() const override { return device_memory_; }
  std::vector<std::uint8_t> local_address() const override { return {}; }
  Status connect(int, std::span<const std::uint8_t>) override { return unimplemented("fake"); }
  Result<int> register_region(void*, std::size_t, MemoryKind) override {
    return unimplemented("fake");
  }
  Result<AllocatedRegion> allocate_region(std::size_t) override { return unimplemented("fake"); }
  Result<RemoteRegion> region_descriptor(int) const override { return unimplemented("fake"); }
  Result<int> add_remote_region(int, const RemoteRegion&) override { return unimplemented("fake"); }
  Result<std::uint64_t> post_put(int, int, std::span<const PutSegment>,
                                 std::chrono::milliseconds) override {
    return unimplemented("fake");
  }
  bool progress() override { return false; }
  TransferState poll(std::uint64_t) override { return TransferState::kFailed; }
  void cancel(std::uint64_t) override {}
  void release(std::uint64_t) override {}
  Status deliver(int, std::span<const PutSegment>) override { return unimplemented("fake"); }
  TransportStats stats() const override { return {}; }

 private:
  bool device_memory_;
};

TEST(MakeTransportFor, KeepsATransportThatCanRegisterTheMemory) {
  for (const bool device_memory : {false, true}) {
    auto inner = std::make_unique<FakeTransport>(device_memory);
    KvTransport* const plain = inner.get();
    auto chosen = make_transport_for(std::move(inner), MemoryKind::kHost, {});
    ASSERT_TRUE(chosen.ok());
    EXPECT_EQ(chosen->get(), plain) << "host KV memory needs no staging";
  }
  auto inner = std::make_unique<FakeTransport>(true);
  KvTransport* const plain = inner.get();
  auto chosen = make_transport_for(std::move(inner), MemoryKind::kDevice, {});
  ASSERT_TRUE(chosen.ok());
  EXPECT_EQ(chosen->get(), plain) << "the transport registers device memory itself";
}

TEST(MakeTransportFor, StagesDeviceMemoryForATransportWithoutIt) {
  auto chosen = make_transport_for(std::make_unique<FakeTransport>(false), MemoryKind::kDevice, {});
#ifdef PODSERVE_KVTRANSFER_HAS_CUDA
  if (!chosen.ok())
    GTEST_SKIP() << "host staging needs a CUDA device: " << chosen.status().to_string();
  EXPECT_EQ((*chosen)->name(), "fake+host-staging");
  EXPECT_TRUE((*chosen)->supports_device_memory());
#else
  EXPECT_EQ(chosen.status().code(), StatusCode::kUnimplemented);
#endif
}

}  // namespace
}  // namespace podserve
