// UCX transport across a process boundary, under mpirun -np 2 (UCX_TLS set per ctest entry;
// --ucx-peer-errors=0 turns UcxOptions::peer_error_handling off, as UCX 1.13's shared memory
// needs): rank 0 puts into rank 1's registered memory; worker addresses and region descriptors
// travel over MPI as the cluster will send them. Both ranks derive the same source bytes and
// segments from a seed broadcast by rank 0; rank 1 checks its memory, and every verdict is shared.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kvtransfer/bench/mpi_exchange.h"
#include "kvtransfer/ucx_transport.h"
#include "segment_patterns.h"

namespace podserve {
namespace {

using namespace std::chrono_literals;
using testing::expected_target;
using testing::first_difference;
using testing::random_bytes;

constexpr std::uint8_t kPoison = 0x5A;
bool use_peer_error_handling = true;  // --ucx-peer-errors=0 clears it

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// Swaps a byte blob with the other rank.
std::vector<std::uint8_t> swap_bytes(std::span<const std::uint8_t> mine) {
  return podserve::swap_bytes(mine, 1 - world_rank());
}

std::uint64_t shared_seed() {
  std::uint64_t seed = std::random_device{}();
  MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  if (world_rank() == 0) std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

// True on every rank only when `ok` holds on every rank.
bool all_ranks(bool ok) {
  int mine = ok ? 1 : 0;
  int all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

class UcxMpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    UcxOptions options;
    options.peer_error_handling = use_peer_error_handling;
    auto transport = make_ucx_transport(options);
    ASSERT_TRUE(all_ranks(transport.ok())) << transport.status().to_string();
    transport_ = std::move(*transport);
    peer_ = 1 - world_rank();
    ASSERT_TRUE(
        all_ranks(transport_->connect(peer_, swap_bytes(transport_->local_address())).ok()));
  }

  // Rank 0 registers `buffer` as the source, rank 1 as the target; rank 0 gets the target's
  // handle. Returns (local region id, remote handle or -1 on rank 1).
  std::pair<int, int> register_and_exchange(std::vector<std::uint8_t>& buffer) {
    auto region = transport_->register_region(buffer.data(), buffer.size(), MemoryKind::kHost);
    EXPECT_TRUE(region.ok()) << region.status().to_string();
    const auto peer_descriptor = swap_bytes(transport_->region_descriptor(*region)->descriptor);
    if (world_rank() == 1) return {*region, -1};
    auto handle = transport_->add_remote_region(peer_, RemoteRegion{peer_descriptor});
    EXPECT_TRUE(handle.ok()) << handle.status().to_string();
    return {*region, *handle};
  }

  // Rank 0: progress with short sleeps until the transfer is final.
  TransferState wait(std::uint64_t id) {
    const auto give_up = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < give_up) {
      const TransferState state = transport_->poll(id);
      if (state != TransferState::kPending) return state;
      transport_->progress();
      std::this_thread::sleep_for(50us);
    }
    return TransferState::kPending;
  }

  // Both ranks: progress until every rank got here (the target applies TCP puts meanwhile).
  void progress_until_all_arrive() {
    MPI_Request barrier;
    MPI_Ibarrier(MPI_COMM_WORLD, &barrier);
    int done = 0;
    while (!done) {
      transport_->progress();
      MPI_Test(&barrier, &done, MPI_STATUS_IGNORE);
      if (!done) std::this_thread::sleep_for(50us);
    }
  }

  // Rank 0 puts the pattern into rank 1's memory (user memory registered on rank 1, or memory
  // rank 1's transport allocated); rank 1 checks every byte. True on both ranks when it matched.
  bool put_pattern(const testing::SegmentPattern& pattern, bool transport_memory) {
    std::mt19937_64 rng(shared_seed());
    const std::vector<std::uint8_t> source = random_bytes(rng, pattern.region_bytes);
    const std::vector<PutSegment> segments = pattern.generate(rng);
    std::vector<std::uint8_t> user_buffer =
        world_rank() == 0 ? source : std::vector<std::uint8_t>(pattern.region_bytes, kPoison);
    std::span<std::uint8_t> target = user_buffer;
    Result<int> region = 0;
    if (world_rank() == 1 && transport_memory) {
      auto allocated = transport_->allocate_region(pattern.region_bytes);
      EXPECT_TRUE(allocated.ok()) << allocated.status().to_string();
      target = std::span(static_cast<std::uint8_t*>(allocated->base), pattern.region_bytes);
      std::memset(target.data(), kPoison, target.size());
      region = allocated->id;
    } else {
      region =
          transport_->register_region(user_buffer.data(), user_buffer.size(), MemoryKind::kHost);
    }
    EXPECT_TRUE(region.ok()) << region.status().to_string();
    const auto peer_descriptor = swap_bytes(transport_->region_descriptor(*region)->descriptor);

    bool ok = true;
    if (world_rank() == 0) {
      auto handle = transport_->add_remote_region(peer_, RemoteRegion{peer_descriptor});
      auto id = handle.ok() ? transport_->post_put(*region, *handle, segments, 30s)
                            : Result<std::uint64_t>(handle.status());
      ok = id.ok() && wait(*id) == TransferState::kDone;
      EXPECT_TRUE(ok) << (id.ok() ? "transfer did not complete" : id.status().to_string());
    }
    progress_until_all_arrive();
    if (world_rank() == 1) {
      const auto expected =
          expected_target(std::vector<std::uint8_t>(target.size(), kPoison), source, segments);
      const std::int64_t mismatch = first_difference(target, expected);
      EXPECT_EQ(mismatch, -1) << "first wrong byte at the target";
      ok = mismatch == -1;
    }
    return all_ranks(ok);
  }

  std::unique_ptr<UcxTransport> transport_;
  int peer_ = 0;
};

class UcxMpiPatternTest : public UcxMpiTest,
                          public ::testing::WithParamInterface<testing::SegmentPattern> {};

TEST_P(UcxMpiPatternTest, PutsExactBytesIntoPeerUserMemory) {
  EXPECT_TRUE(put_pattern(GetParam(), false));
}

TEST_P(UcxMpiPatternTest, PutsExactBytesIntoPeerTransportMemory) {
  EXPECT_TRUE(put_pattern(GetParam(), true));
}

INSTANTIATE_TEST_SUITE_P(Patterns, UcxMpiPatternTest,
                         ::testing::ValuesIn(testing::segment_patterns()),
                         [](const auto& info) { return info.param.name; });

TEST_F(UcxMpiTest, TimeoutFencesThenAFreshTransferLands) {
  std::mt19937_64 rng(shared_seed());
  const std::vector<std::uint8_t> source = random_bytes(rng, 1 << 20);
  std::vector<std::uint8_t> buffer =
      world_rank() == 0 ? source : std::vector<std::uint8_t>(source.size(), kPoison);
  const auto [local, remote] = register_and_exchange(buffer);
  const PutSegment segment{0, 0, source.size()};

  bool ok = true;
  if (world_rank() == 0) {
    transport_->set_fault_injection({.stall_probability = 1.0});
    auto stalled = transport_->post_put(local, remote, std::span(&segment, 1), 150ms);
    ok = stalled.ok() && wait(*stalled) == TransferState::kTimedOut;
    EXPECT_TRUE(ok);
  }
  progress_until_all_arrive();
  // Fenced: re-poison; nothing of the timed-out transfer may land any more.
  if (world_rank() == 1) std::memset(buffer.data(), kPoison, buffer.size());
  progress_until_all_arrive();
  if (world_rank() == 1) {
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(first_difference(buffer, std::vector<std::uint8_t>(buffer.size(), kPoison)), -1);
    ok = first_difference(buffer, std::vector<std::uint8_t>(buffer.size(), kPoison)) == -1;
  }
  progress_until_all_arrive();
  if (world_rank() == 0) {
    transport_->set_fault_injection({});
    auto fresh = transport_->post_put(local, remote, std::span(&segment, 1), 30s);
    ok = ok && fresh.ok() && wait(*fresh) == TransferState::kDone;
    EXPECT_TRUE(ok);
  }
  progress_until_all_arrive();
  if (world_rank() == 1) {
    EXPECT_EQ(first_difference(buffer, source), -1);
    ok = ok && first_difference(buffer, source) == -1;
  }
  EXPECT_TRUE(all_ranks(ok));
}

}  // namespace
}  // namespace podserve

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  podserve::use_peer_error_handling = podserve::testing::apply_ucx_test_flags(argc, argv);
  const int result = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
