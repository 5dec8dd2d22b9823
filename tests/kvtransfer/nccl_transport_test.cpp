// NCCL channel between two GPUs of this machine (label gpu): segment lists sent from GPU 0
// arrive exactly at GPU 1 and untouched bytes stay poisoned, through the direct path (one
// coalesced segment), the packed path (gather kernel, message, scatter kernel; aligned and
// unaligned segments) and the one-sided packed path (pages in order on one side: only the other
// side's kernel runs), as one message and as a pipeline of chunks (the default chunk size, and a
// small one that cuts most segments). Also: transfers queued back to back on different streams
// take turns on the staging buffers, both directions in one group with different chunk counts,
// and one thread per rank without groups. GPU tests skip with fewer than 2 CUDA devices; the
// chunk layout (pure C++) and the option checks run everywhere.
#include "kvtransfer/nccl_transport.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "device_bytes.h"
#include "kvtransfer/pack_layout.h"
#include "segment_patterns.h"

namespace podserve {
namespace {

using namespace std::chrono_literals;
using testing::DeviceBytes;
using testing::expected_target;
using testing::first_difference;
using testing::fresh_seed;
using testing::random_bytes;

constexpr std::uint8_t kPoison = 0xA5;
// A chunk size that cuts most pages and lands chunk boundaries at unaligned page positions.
constexpr std::uint64_t kSmallChunkBytes = 4992;

// Random segment lists (1 byte .. 3 pages, mostly unaligned) cut at random chunk sizes (from
// the whole message down to 16 bytes): the chunks tile the message, each but the last at least
// the chunk size, and their pieces cover every segment exactly once, in order, each keeping its
// segment's scattered-to-packed distance.
TEST(PackChunks, PiecesTileEverySegmentExactly) {
  std::mt19937_64 rng(fresh_seed());
  for (int round = 0; round < 100; ++round) {
    std::vector<PutSegment> segments(1 + rng() % 100);
    for (PutSegment& segment : segments) {
      segment = {rng() % (1 << 24), rng() % (1 << 24), 1 + rng() % (3 * testing::kPageBytes)};
    }
    const PackedLayout layout = pack_layout(segments, PackSide::kReceiver);
    const std::uint64_t chunk_bytes =
        std::max(kPackAlignment,
                 (layout.packed_bytes >> (rng() % 24)) / kPackAlignment * kPackAlignment) +
        kPackAlignment * (rng() % 3);
    const std::vector<PackedChunk> chunks = chunk_packed_layout(layout, chunk_bytes);
    const std::uint64_t at_most = std::max<std::uint64_t>(1, layout.packed_bytes / chunk_bytes);
    ASSERT_FALSE(chunks.empty());
    EXPECT_LE(chunks.size(), at_most);
    EXPECT_EQ(chunks.size() == 1, at_most == 1) << "a message of two chunks or more is pipelined";
    std::vector<std::uint8_t> covered(layout.packed_bytes, 0);
    std::uint64_t next_offset = 0;
    std::size_t segment = 0;
    std::uint64_t segment_done = 0;  // bytes of `segment` in earlier pieces
    for (const PackedChunk& chunk : chunks) {
      EXPECT_EQ(chunk.packed_offset, next_offset);
      EXPECT_EQ(chunk.packed_offset % kPackAlignment, 0u);
      if (&chunk != &chunks.back()) {
        EXPECT_GE(chunk.bytes, chunk_bytes);
      }
      next_offset += chunk.bytes;
      for (const PackedSegment& piece : chunk.segments) {
        ASSERT_LT(segment, layout.segments.size());
        const PackedSegment& whole = layout.segments[segment];
        EXPECT_EQ(piece.packed_offset, whole.packed_offset + segment_done);
        EXPECT_EQ(piece.scattered_offset, whole.scattered_offset + segment_done);
        EXPECT_GE(piece.packed_offset, chunk.packed_offset);
        EXPECT_LE(piece.packed_offset + piece.bytes, chunk.packed_offset + chunk.bytes);
        ASSERT_GT(piece.bytes, 0u);
        for (std::uint64_t i = 0; i < piece.bytes; ++i) ++covered[piece.packed_offset + i];
        segment_done += piece.bytes;
        ASSERT_LE(segment_done, whole.bytes);
        if (segment_done == whole.bytes) {
          ++segment;
          segment_done = 0;
        }
      }
    }
    EXPECT_EQ(next_offset, layout.packed_bytes);
    EXPECT_EQ(segment, layout.segments.size());
    for (const PackedSegment& whole : layout.segments) {
      for (std::uint64_t i = 0; i < whole.bytes; ++i) {
        ASSERT_EQ(covered[whole.packed_offset + i], 1) << "round " << round;
      }
    }
  }
}

// Packed at 0 (5000 bytes), 5008 (7000) and 12016 (33): 12049 bytes, three chunks of 4032 at
// most for a 4000-byte chunk size, the same on both sides but for the scattered offsets.
TEST(PackChunks, BothSidesCutAtTheSamePlaces) {
  const std::vector<PutSegment> segments = {{0, 4096, 5000}, {9000, 17, 7000}, {20000, 9000, 33}};
  const auto sender = chunk_packed_layout(pack_layout(segments, PackSide::kSender), 4000);
  const auto receiver = chunk_packed_layout(pack_layout(segments, PackSide::kReceiver), 4000);
  ASSERT_EQ(sender.size(), 3u);
  ASSERT_EQ(receiver.size(), 3u);
  const std::uint64_t offsets[] = {0, 4032, 8064};
  const std::uint64_t sizes[] = {4032, 4032, 3985};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(sender[i].packed_offset, offsets[i]);
    EXPECT_EQ(sender[i].bytes, sizes[i]);
    EXPECT_EQ(receiver[i].packed_offset, offsets[i]);
    EXPECT_EQ(receiver[i].bytes, sizes[i]);
  }
  EXPECT_EQ(sender[0].segments, (std::vector<PackedSegment>{{0, 0, 4032}}));
  EXPECT_EQ(sender[1].segments,
            (std::vector<PackedSegment>{{4032, 4032, 968}, {9000, 5008, 3056}}));
  EXPECT_EQ(sender[2].segments,
            (std::vector<PackedSegment>{{12056, 8064, 3944}, {20000, 12016, 33}}));
  EXPECT_EQ(receiver[0].segments, (std::vector<PackedSegment>{{4096, 0, 4032}}));
  EXPECT_EQ(receiver[1].segments,
            (std::vector<PackedSegment>{{8128, 4032, 968}, {17, 5008, 3056}}));
  EXPECT_EQ(receiver[2].segments,
            (std::vector<PackedSegment>{{3073, 8064, 3944}, {9000, 12016, 33}}));
}

// 2008 packed bytes: one chunk (the layout itself) below two chunks, two from there; none empty.
TEST(PackChunks, BelowTwoChunksIsOneAndEmptyIsNone) {
  const std::vector<PutSegment> segments = {{0, 0, 1000}, {5000, 5000, 1000}};
  const PackedLayout layout = pack_layout(segments, PackSide::kSender);
  ASSERT_EQ(layout.packed_bytes, 2008u);
  const auto one = chunk_packed_layout(layout, 1008);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].packed_offset, 0u);
  EXPECT_EQ(one[0].bytes, layout.packed_bytes);
  EXPECT_EQ(one[0].segments, layout.segments);
  const auto two = chunk_packed_layout(layout, 992);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[1].packed_offset, 1008u);
  EXPECT_EQ(two[1].segments, (std::vector<PackedSegment>{{5000, 1008, 1000}}));
  EXPECT_TRUE(chunk_packed_layout(pack_layout({}, PackSide::kSender), 4096).empty());
}

// Long messages get larger chunks instead of more of them: at most kMaxPipelineChunks, never
// below the minimum, always a multiple of kPackAlignment.
TEST(PackChunks, LongMessagesGetAtMostFourChunks) {
  constexpr std::uint64_t kMiB = 1 << 20;
  EXPECT_EQ(pipeline_chunk_bytes(16 * kMiB, 16 * kMiB), 16 * kMiB);
  EXPECT_EQ(pipeline_chunk_bytes(64 * kMiB, 16 * kMiB), 16 * kMiB);
  EXPECT_EQ(pipeline_chunk_bytes(256 * kMiB, 16 * kMiB), 64 * kMiB);
  EXPECT_EQ(pipeline_chunk_bytes(0, 16 * kMiB), 16 * kMiB);
  EXPECT_EQ(pipeline_chunk_bytes(4001, 16), 1008u);  // ceil(4001 / 4) = 1001, aligned up
  for (const std::uint64_t bytes : {std::uint64_t{1000}, 65 * kMiB + 3, 1000 * kMiB}) {
    const std::vector<PutSegment> segments = {{0, 0, bytes / 2}, {bytes, bytes, bytes - bytes / 2}};
    const PackedLayout layout = pack_layout(segments, PackSide::kSender);
    const std::uint64_t chunk = pipeline_chunk_bytes(layout.packed_bytes, 16 * kMiB);
    EXPECT_EQ(chunk % kPackAlignment, 0u);
    EXPECT_GE(chunk, 16 * kMiB);
    const auto chunks = chunk_packed_layout(layout, chunk);
    EXPECT_LE(chunks.size(), kMaxPipelineChunks) << bytes;
    EXPECT_GE(chunks.size(), 1u) << bytes;
  }
}

// A side moves the message in place exactly when its runs lie back to back in list order with no
// alignment gap: pages 3, 4, 5 in order (origin: page 3) but not the same pages out of order, and
// not 100-byte runs back to back (packed 16-byte aligned: 0 and 112). One segment is its own
// origin.
TEST(PackLayout, ContiguousOriginOnlyForRunsBackToBackInListOrder) {
  constexpr std::uint64_t kPage = testing::kPageBytes;
  const std::vector<PutSegment> in_order_to_scattered = {
      {3 * kPage, 9 * kPage, kPage}, {4 * kPage, 1 * kPage, kPage}, {5 * kPage, 7 * kPage, kPage}};
  EXPECT_EQ(contiguous_origin(pack_layout(in_order_to_scattered, PackSide::kSender)), 3 * kPage);
  EXPECT_EQ(contiguous_origin(pack_layout(in_order_to_scattered, PackSide::kReceiver)),
            std::nullopt);
  const std::vector<PutSegment> out_of_order = {{4 * kPage, 0, kPage}, {3 * kPage, kPage, kPage}};
  EXPECT_EQ(contiguous_origin(pack_layout(out_of_order, PackSide::kSender)), std::nullopt);
  EXPECT_EQ(contiguous_origin(pack_layout(out_of_order, PackSide::kReceiver)), 0u);
  const std::vector<PutSegment> unaligned = {{0, 0, 100}, {100, 500, 100}};
  EXPECT_EQ(contiguous_origin(pack_layout(unaligned, PackSide::kSender)), std::nullopt);
  const std::vector<PutSegment> one = {{4099, 17, 5}};
  EXPECT_EQ(contiguous_origin(pack_layout(one, PackSide::kSender)), 4099u);
  EXPECT_EQ(contiguous_origin(pack_layout(one, PackSide::kReceiver)), 17u);
  EXPECT_EQ(contiguous_origin(pack_layout({}, PackSide::kSender)), std::nullopt);
}

TEST(NcclChannelOptions, ChunkSizeMustBeAPositiveMultipleOf16) {
  const std::vector<int> devices = {0, 1};
  for (const std::uint64_t chunk_bytes : {std::uint64_t{0}, std::uint64_t{100}}) {
    EXPECT_EQ(
        NcclKvChannel::create_local(devices, {.pack_chunk_bytes = chunk_bytes}).status().code(),
        StatusCode::kInvalidArgument);
  }
}

bool have_two_gpus(int& devices) {
  devices = 0;
  return cudaGetDeviceCount(&devices) == cudaSuccess && devices >= 2;
}

// `pages` distinct pages of `page_bytes` out of `region_pages`, in random order on each side.
std::vector<PutSegment> shuffled_pages(std::mt19937_64& rng, std::uint64_t region_pages,
                                       std::uint64_t pages, std::uint64_t page_bytes) {
  const auto local = testing::random_pages(rng, region_pages, pages);
  const auto remote = testing::random_pages(rng, region_pages, pages);
  std::vector<PutSegment> segments;
  for (std::uint64_t p = 0; p < pages; ++p) {
    segments.push_back({local[p] * page_bytes, remote[p] * page_bytes, page_bytes});
  }
  return segments;
}

// How many NCCL operations (chunks) a list goes as, packed, with `chunk_bytes`.
std::size_t packed_chunks(std::span<const PutSegment> segments, std::uint64_t chunk_bytes) {
  const std::vector<PutSegment> merged = coalesce_segments(segments);
  const PackedLayout layout = pack_layout(merged, PackSide::kSender);
  return chunk_packed_layout(layout, pipeline_chunk_bytes(layout.packed_bytes, chunk_bytes)).size();
}

std::string chunk_name(std::uint64_t chunk_bytes) {
  return chunk_bytes == kNcclPackChunkBytes ? "chunk_default"
                                            : "chunk_" + std::to_string(chunk_bytes);
}

class NcclChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int devices = 0;
    if (!have_two_gpus(devices)) GTEST_SKIP() << "needs 2 CUDA devices, found " << devices;
    // NVLink multicast stays off on the shared GPU machines (point-to-point never uses it).
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    const std::vector<int> device_ids = {0, 1};
    auto channels =
        NcclKvChannel::create_local(device_ids, {.pack_chunk_bytes = pack_chunk_bytes()});
    ASSERT_TRUE(channels.ok()) << channels.status().to_string();
    channels_ = std::move(*channels);
  }

  virtual std::uint64_t pack_chunk_bytes() const { return kNcclPackChunkBytes; }
  NcclKvChannel& on_gpu(int device) { return *channels_[device]; }

  // Polls both transfers until final; both must end kDone.
  static void expect_done(NcclKvChannel& a, std::uint64_t a_id, NcclKvChannel& b,
                          std::uint64_t b_id) {
    TransferState a_state = TransferState::kPending;
    TransferState b_state = TransferState::kPending;
    const auto give_up = std::chrono::steady_clock::now() + 60s;
    while ((a_state == TransferState::kPending || b_state == TransferState::kPending) &&
           std::chrono::steady_clock::now() < give_up) {
      a_state = a.poll(a_id);
      b_state = b.poll(b_id);
    }
    EXPECT_EQ(a_state, TransferState::kDone) << to_string(a_state);
    EXPECT_EQ(b_state, TransferState::kDone) << to_string(b_state);
    a.release(a_id);
    b.release(b_id);
  }

  // Sends `segments` of `source` from GPU `from` into `target` on the other GPU, in one group.
  void transfer(int from, const DeviceBytes& source, const DeviceBytes& target,
                std::span<const PutSegment> segments, void* send_stream = nullptr,
                void* recv_stream = nullptr) {
    const int to = 1 - from;
    ASSERT_TRUE(NcclKvChannel::group_start().ok());
    auto sent = on_gpu(from).send_segments(to, source.data(), segments, send_stream, 30s);
    auto received = on_gpu(to).recv_segments(from, target.data(), segments, recv_stream, 30s);
    ASSERT_TRUE(NcclKvChannel::group_end().ok());
    ASSERT_TRUE(sent.ok()) << sent.status().to_string();
    ASSERT_TRUE(received.ok()) << received.status().to_string();
    expect_done(on_gpu(from), *sent, on_gpu(to), *received);
  }

  std::vector<std::unique_ptr<NcclKvChannel>> channels_;
};

// Every segment pattern with the default chunk size (packed lists as one message) and a small one
// (packed lists as many chunks, most pages cut in two).
class NcclPatternTest
    : public NcclChannelTest,
      public ::testing::WithParamInterface<std::tuple<testing::SegmentPattern, std::uint64_t>> {
 protected:
  std::uint64_t pack_chunk_bytes() const override { return std::get<1>(GetParam()); }
};

TEST_P(NcclPatternTest, SegmentsArriveExactly) {
  const testing::SegmentPattern& pattern = std::get<0>(GetParam());
  std::mt19937_64 rng(fresh_seed());
  const std::vector<std::uint8_t> source_bytes = random_bytes(rng, pattern.region_bytes);
  const std::vector<std::uint8_t> poisoned(pattern.region_bytes, kPoison);
  const std::vector<PutSegment> segments = pattern.generate(rng);
  DeviceBytes source(0, source_bytes);
  DeviceBytes target(1, poisoned);
  transfer(0, source, target, segments);
  EXPECT_EQ(first_difference(target.download(), expected_target(poisoned, source_bytes, segments)),
            -1);
}

INSTANTIATE_TEST_SUITE_P(Patterns, NcclPatternTest,
                         ::testing::Combine(::testing::ValuesIn(testing::segment_patterns()),
                                            ::testing::Values(kNcclPackChunkBytes,
                                                              kSmallChunkBytes)),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + "_" +
                                  chunk_name(std::get<1>(info.param));
                         });

// Shuffled 16 KiB pages, a bit over 2.5 default chunks, plus an odd-sized tail: the default
// chunk size pipelines it in two chunks whose boundary cuts a page, each chunk more pages than
// one copy launch takes (1024) and than the capped grid has rows.
TEST_F(NcclChannelTest, SeveralDefaultChunksOfShuffledPages) {
  constexpr std::uint64_t kPage = testing::kPageBytes;
  const std::uint64_t pages = 5 * kNcclPackChunkBytes / 2 / kPage + 3;
  const std::uint64_t region_pages = pages + pages / 4;
  const std::uint64_t region_bytes = region_pages * kPage + 4096;
  std::mt19937_64 rng(fresh_seed());
  std::vector<PutSegment> segments = shuffled_pages(rng, region_pages, pages, kPage);
  segments.push_back({region_pages * kPage + 7, region_pages * kPage + 100, 1000});
  ASSERT_GE(packed_chunks(segments, kNcclPackChunkBytes), 2u);
  const std::vector<std::uint8_t> source_bytes = random_bytes(rng, region_bytes);
  const std::vector<std::uint8_t> poisoned(region_bytes, kPoison);
  DeviceBytes source(0, source_bytes);
  DeviceBytes target(1, poisoned);
  transfer(0, source, target, segments);
  EXPECT_EQ(first_difference(target.download(), expected_target(poisoned, source_bytes, segments)),
            -1);
}

// The default chunk size and a small one (every packed transfer below is then pipelined).
class NcclChunkTest : public NcclChannelTest, public ::testing::WithParamInterface<std::uint64_t> {
 protected:
  std::uint64_t pack_chunk_bytes() const override { return GetParam(); }
};

// Transfers posted back to back, each on its own pair of streams, without waiting in between:
// every one must read its own source and land whole (the staging buffers, pack streams and
// their events are shared; the last ones also make the buffers grow while earlier ones may still
// be queued).
TEST_P(NcclChunkTest, BackToBackTransfersOnDifferentStreams) {
  std::mt19937_64 rng(fresh_seed());
  constexpr int kTransfers = 4;
  std::vector<cudaStream_t> send_streams(kTransfers), recv_streams(kTransfers);
  std::vector<std::unique_ptr<DeviceBytes>> sources, targets;
  std::vector<std::vector<std::uint8_t>> source_bytes;
  std::vector<std::vector<PutSegment>> segments;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ids;
  const std::vector<std::uint8_t> poisoned(8 << 20, kPoison);
  for (int i = 0; i < kTransfers; ++i) {
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&send_streams[i], cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&recv_streams[i], cudaStreamNonBlocking), cudaSuccess);
    source_bytes.push_back(random_bytes(rng, poisoned.size()));
    sources.push_back(std::make_unique<DeviceBytes>(0, source_bytes.back()));
    targets.push_back(std::make_unique<DeviceBytes>(1, poisoned));
    // 64 .. 512 pages of 16 KiB: later transfers need more staging.
    segments.push_back(shuffled_pages(rng, 512, 64u << i, testing::kPageBytes));
  }
  for (int i = 0; i < kTransfers; ++i) {
    ASSERT_TRUE(NcclKvChannel::group_start().ok());
    auto sent = on_gpu(0).send_segments(1, sources[i]->data(), segments[i], send_streams[i], 30s);
    auto received =
        on_gpu(1).recv_segments(0, targets[i]->data(), segments[i], recv_streams[i], 30s);
    ASSERT_TRUE(NcclKvChannel::group_end().ok());
    ASSERT_TRUE(sent.ok() && received.ok());
    ids.emplace_back(*sent, *received);
  }
  for (int i = 0; i < kTransfers; ++i) {
    expect_done(on_gpu(0), ids[i].first, on_gpu(1), ids[i].second);
    EXPECT_EQ(first_difference(targets[i]->download(),
                               expected_target(poisoned, source_bytes[i], segments[i])),
              -1)
        << "transfer " << i;
  }
  for (int i = 0; i < kTransfers; ++i) {
    cudaSetDevice(0);
    cudaStreamDestroy(send_streams[i]);
    cudaSetDevice(1);
    cudaStreamDestroy(recv_streams[i]);
  }
}

// Each GPU sends packed pages to the other in the same group (each channel packs a send and
// scatters a receive), 100 pages one way and 37 the other: with small chunks the group's later
// NCCL groups hold only the longer transfer's chunks. A second send on a channel in the same
// group is refused, packed or direct.
TEST_P(NcclChunkTest, BothDirectionsInOneGroup) {
  std::mt19937_64 rng(fresh_seed());
  constexpr std::uint64_t kBytes = 4 << 20;
  const std::uint64_t page_counts[] = {100, 37};
  const std::vector<std::uint8_t> poisoned(kBytes, kPoison);
  std::vector<std::vector<std::uint8_t>> source_bytes;
  std::vector<std::unique_ptr<DeviceBytes>> sources, targets;
  std::vector<std::vector<PutSegment>> segments;
  for (int gpu = 0; gpu < 2; ++gpu) {
    source_bytes.push_back(random_bytes(rng, kBytes));
    sources.push_back(std::make_unique<DeviceBytes>(gpu, source_bytes.back()));
    targets.push_back(std::make_unique<DeviceBytes>(1 - gpu, poisoned));
    segments.push_back(
        shuffled_pages(rng, kBytes / testing::kPageBytes, page_counts[gpu], testing::kPageBytes));
  }
  ASSERT_TRUE(NcclKvChannel::group_start().ok());
  auto sent0 = on_gpu(0).send_segments(1, sources[0]->data(), segments[0], nullptr, 30s);
  auto received1 = on_gpu(1).recv_segments(0, targets[0]->data(), segments[0], nullptr, 30s);
  auto sent1 = on_gpu(1).send_segments(0, sources[1]->data(), segments[1], nullptr, 30s);
  auto received0 = on_gpu(0).recv_segments(1, targets[1]->data(), segments[1], nullptr, 30s);
  EXPECT_EQ(
      on_gpu(0).send_segments(1, sources[0]->data(), segments[0], nullptr, 30s).status().code(),
      StatusCode::kInvalidArgument);
  const PutSegment one_run[] = {{0, 0, 4096}};
  EXPECT_EQ(on_gpu(1).send_segments(0, sources[1]->data(), one_run, nullptr, 30s).status().code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(NcclKvChannel::group_end().ok());
  ASSERT_TRUE(sent0.ok() && received1.ok() && sent1.ok() && received0.ok());
  expect_done(on_gpu(0), *sent0, on_gpu(1), *received1);
  expect_done(on_gpu(1), *sent1, on_gpu(0), *received0);
  for (int gpu = 0; gpu < 2; ++gpu) {
    EXPECT_EQ(first_difference(targets[gpu]->download(),
                               expected_target(poisoned, source_bytes[gpu], segments[gpu])),
              -1)
        << "from GPU " << gpu;
  }
}

INSTANTIATE_TEST_SUITE_P(Chunks, NcclChunkTest,
                         ::testing::Values(kNcclPackChunkBytes, std::uint64_t{64} << 10),
                         [](const auto& info) { return chunk_name(info.param); });

// Each rank driven by its own thread (as by its own process): channels from one unique id, posts
// outside any group, so a pipelined transfer launches chunk by chunk as it is posted.
TEST(NcclChannelThreads, OneThreadPerRankWithoutGroups) {
  int devices = 0;
  if (!have_two_gpus(devices)) GTEST_SKIP() << "needs 2 CUDA devices, found " << devices;
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  constexpr std::uint64_t kChunkBytes = 64 << 10;
  constexpr std::uint64_t kBytes = 4 << 20;
  std::mt19937_64 rng(fresh_seed());
  const std::vector<PutSegment> segments =
      shuffled_pages(rng, kBytes / testing::kPageBytes, 100, testing::kPageBytes);
  ASSERT_GE(packed_chunks(segments, kChunkBytes), 2u);
  const std::vector<std::uint8_t> source_bytes = random_bytes(rng, kBytes);
  const std::vector<std::uint8_t> poisoned(kBytes, kPoison);
  DeviceBytes source(0, source_bytes);
  DeviceBytes target(1, poisoned);
  auto unique_id = NcclKvChannel::make_unique_id();
  ASSERT_TRUE(unique_id.ok()) << unique_id.status().to_string();
  std::array<Status, 2> errors;
  std::array<TransferState, 2> states = {TransferState::kPending, TransferState::kPending};
  std::latch both_finished(2);
  const auto run_rank = [&](int rank) {
    auto channel =
        NcclKvChannel::create(*unique_id, 2, rank, rank, {.pack_chunk_bytes = kChunkBytes});
    if (!channel.ok()) {
      errors[rank] = channel.status();
      return;
    }
    auto posted = rank == 0 ? (*channel)->send_segments(1, source.data(), segments, nullptr, 30s)
                            : (*channel)->recv_segments(0, target.data(), segments, nullptr, 30s);
    if (posted.ok()) {
      const auto give_up = std::chrono::steady_clock::now() + 60s;
      while (states[rank] == TransferState::kPending &&
             std::chrono::steady_clock::now() < give_up) {
        states[rank] = (*channel)->poll(*posted);
      }
      (*channel)->release(*posted);
    } else {
      errors[rank] = posted.status();
    }
    // Neither rank frees its communicator while the other may still be using it.
    both_finished.arrive_and_wait();
  };
  std::thread sender(run_rank, 0);
  std::thread receiver(run_rank, 1);
  sender.join();
  receiver.join();
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_TRUE(errors[rank].ok()) << "rank " << rank << ": " << errors[rank].to_string();
    EXPECT_EQ(states[rank], TransferState::kDone)
        << "rank " << rank << ": " << to_string(states[rank]);
  }
  EXPECT_EQ(first_difference(target.download(), expected_target(poisoned, source_bytes, segments)),
            -1);
}

}  // namespace
}  // namespace podserve
