// CUDA IPC transport across a real process boundary: the test re-executes itself as the target
// (--cuda-ipc-target), which exports two regions of one allocation (the second at an offset, as
// a layer inside a larger buffer would be) and answers read-back requests over a socket. The
// initiator puts fresh random bytes in several page orders (one run, shuffled 64 KiB pages, many
// small strided runs that take the batched copy) and checks the target's whole region byte for
// byte against a host model; then the fence (cancel, timeout on a stalled copy), an injected
// drop that writes nothing, and the refusals (another host, itself, host memory, out of range).
// Label gpu: skips without a CUDA device; the peer-device case needs two.
#include "kvtransfer/cuda_ipc_transport.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/wire.h"

namespace podserve {
namespace {

constexpr std::size_t kRegionBytes = 4 << 20;
constexpr std::size_t kRegionBGap = 4096;  // region B starts this far after region A's end
constexpr std::uint8_t kPoison = 0xEE;
constexpr std::uint64_t kPageBytes = 64 << 10;

// ---- framing over the socket ----
bool write_all(int fd, const void* data, std::size_t bytes) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}
bool read_all(int fd, void* data, std::size_t bytes) {
  auto* p = static_cast<std::uint8_t*>(data);
  while (bytes > 0) {
    const ssize_t n = ::read(fd, p, bytes);
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}
bool send_blob(int fd, const std::vector<std::uint8_t>& blob) {
  const std::uint64_t size = blob.size();
  return write_all(fd, &size, sizeof(size)) && write_all(fd, blob.data(), blob.size());
}
bool receive_blob(int fd, std::vector<std::uint8_t>& blob) {
  std::uint64_t size = 0;
  if (!read_all(fd, &size, sizeof(size))) return false;
  blob.resize(size);
  return read_all(fd, blob.data(), size);
}

// ---- the target process ----
int run_target(int fd, int device) {
  auto transport = make_cuda_ipc_transport({device, {}});
  if (!transport.ok()) return 2;
  if (cudaSetDevice(device) != cudaSuccess) return 3;
  std::uint8_t* base = nullptr;
  if (cudaMalloc(&base, 2 * kRegionBytes + kRegionBGap) != cudaSuccess) return 4;
  if (cudaMemset(base, kPoison, 2 * kRegionBytes + kRegionBGap) != cudaSuccess) return 5;
  std::uint8_t* regions[2] = {base, base + kRegionBytes + kRegionBGap};
  std::vector<std::uint8_t> out = (*transport)->local_address();
  if (!send_blob(fd, out)) return 6;
  for (std::uint8_t* region : regions) {
    auto id = (*transport)->register_region(region, kRegionBytes, MemoryKind::kDevice);
    if (!id.ok()) return 7;
    auto descriptor = (*transport)->region_descriptor(*id);
    if (!descriptor.ok() || !send_blob(fd, descriptor->descriptor)) return 8;
  }
  std::vector<std::uint8_t> host(kRegionBytes);
  while (true) {
    std::uint8_t command[2] = {};
    if (!read_all(fd, command, 2)) return 9;
    if (command[0] == 'Q') break;
    if (cudaMemcpy(host.data(), regions[command[1] & 1], kRegionBytes, cudaMemcpyDeviceToHost) !=
        cudaSuccess) {
      return 10;
    }
    if (!send_blob(fd, host)) return 11;
  }
  transport->reset();
  cudaFree(base);
  return 0;
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

struct Case {
  const char* name;
  int target_device;
};
// gtest (and ctest's test list) print a parameter by its name, not its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class CudaIpcTransportTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const int devices = device_count();
    if (devices == 0) GTEST_SKIP() << "no CUDA device";
    if (GetParam().target_device >= devices) {
      GTEST_SKIP() << "needs " << GetParam().target_device + 1 << " CUDA devices, found "
                   << devices;
    }
    seed_ = std::random_device{}();
    std::cout << "[ seed     ] " << seed_ << "\n";
    rng_.seed(seed_);
    int sockets[2] = {};
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sockets), 0);
    child_ = ::fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      ::close(sockets[0]);
      const std::string fd = std::to_string(sockets[1]);
      const std::string device = std::to_string(GetParam().target_device);
      ::execl("/proc/self/exe", "cuda_ipc_transport_test", "--cuda-ipc-target", fd.c_str(),
              device.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(sockets[1]);
    fd_ = sockets[0];

    ASSERT_TRUE(receive_blob(fd_, target_address_)) << "the target process did not start";
    for (auto& descriptor : target_regions_) ASSERT_TRUE(receive_blob(fd_, descriptor.descriptor));
    for (auto& model : models_) model.assign(kRegionBytes, kPoison);

    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&source_, kRegionBytes), cudaSuccess);
    source_host_.resize(kRegionBytes);
    ASSERT_NO_FATAL_FAILURE(refill_source());
    ASSERT_NO_FATAL_FAILURE(open_transport({}));
  }

  // A transport on device 0 with `faults`, connected to the target and holding its two regions
  // (a fresh one maps the target's allocation again) and the local source region.
  void open_transport(const FaultInjection& faults) {
    transport_.reset();
    auto transport = make_cuda_ipc_transport({0, faults});
    ASSERT_TRUE(transport.ok()) << transport.status().to_string();
    transport_ = std::move(*transport);
    ASSERT_TRUE(transport_->connect(1, target_address_).ok());
    for (int i = 0; i < 2; ++i) {
      auto added = transport_->add_remote_region(1, target_regions_[i]);
      ASSERT_TRUE(added.ok()) << added.status().to_string();
      remote_[i] = *added;
    }
    auto local = transport_->register_region(source_, kRegionBytes, MemoryKind::kDevice);
    ASSERT_TRUE(local.ok()) << local.status().to_string();
    local_ = *local;
  }

  void refill_source() {
    for (auto& byte : source_host_) byte = static_cast<std::uint8_t>(rng_());
    ASSERT_EQ(cudaMemcpy(source_, source_host_.data(), kRegionBytes, cudaMemcpyHostToDevice),
              cudaSuccess);
  }

  void TearDown() override {
    transport_.reset();
    if (source_ != nullptr) cudaFree(source_);
    if (child_ > 0) {
      const std::uint8_t quit[2] = {'Q', 0};
      write_all(fd_, quit, 2);
      int status = 0;
      ::waitpid(child_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "target process exit status " << status;
      ::close(fd_);
    }
  }

  TransferState wait_final(std::uint64_t id) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < give_up) {
      transport_->progress();
      const TransferState state = transport_->poll(id);
      if (state != TransferState::kPending) return state;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    return TransferState::kPending;
  }

  void apply(int region, const std::vector<PutSegment>& segments) {
    for (const PutSegment& s : segments) {
      std::memcpy(models_[region].data() + s.remote_offset, source_host_.data() + s.local_offset,
                  s.bytes);
    }
  }

  void expect_region_matches_model(int region, const std::string& what) {
    const std::uint8_t command[2] = {'R', static_cast<std::uint8_t>(region)};
    ASSERT_TRUE(write_all(fd_, command, 2));
    std::vector<std::uint8_t> got;
    ASSERT_TRUE(receive_blob(fd_, got));
    ASSERT_EQ(got.size(), kRegionBytes);
    const auto mismatch = std::mismatch(got.begin(), got.end(), models_[region].begin());
    EXPECT_TRUE(mismatch.first == got.end())
        << what << ": region " << region << " differs first at byte "
        << (mismatch.first - got.begin());
  }

  std::uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  pid_t child_ = -1;
  int fd_ = -1;
  std::vector<std::uint8_t> target_address_;
  RemoteRegion target_regions_[2];
  std::unique_ptr<KvTransport> transport_;
  int remote_[2] = {};
  int local_ = 0;
  std::uint8_t* source_ = nullptr;
  std::vector<std::uint8_t> source_host_;
  std::vector<std::uint8_t> models_[2];
};

TEST_P(CudaIpcTransportTest, PutsLandExactlyInEveryPageOrder) {
  const std::size_t pages = kRegionBytes / kPageBytes;
  std::vector<std::uint64_t> order(pages);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng_);

  struct Pattern {
    std::string name;
    int region;
    std::vector<PutSegment> segments;
  };
  std::vector<Pattern> patterns;
  // One run of the first half: one cudaMemcpyAsync.
  patterns.push_back({"one run", 0, {{0, kRegionBytes / 2, kRegionBytes / 2}}});
  // Every page to a shuffled destination page of region B (the exported allocation's offset).
  std::vector<PutSegment> shuffled;
  for (std::size_t p = 0; p < pages; ++p)
    shuffled.push_back({p * kPageBytes, order[p] * kPageBytes, kPageBytes});
  patterns.push_back({"shuffled pages", 1, shuffled});
  // 128-byte runs, every other one, reversed on the target: thousands of copies in one batch.
  std::vector<PutSegment> strided;
  for (std::uint64_t i = 0; i < 4096; ++i)
    strided.push_back({i * 256, kRegionBytes - (i + 1) * 256, 128});
  patterns.push_back({"strided 128-byte runs", 0, strided});
  // A few runs (under the batch threshold), some adjacent on both sides (coalesced).
  patterns.push_back({"few runs",
                      1,
                      {{0, 3 * kPageBytes, 1000},
                       {1000, 3 * kPageBytes + 1000, 24},
                       {5 * kPageBytes, 0, 3 * kPageBytes + 7}}});

  std::uint64_t bytes = 0;
  for (const Pattern& pattern : patterns) {
    auto id = transport_->post_put(local_, remote_[pattern.region], pattern.segments,
                                   std::chrono::milliseconds(10000));
    ASSERT_TRUE(id.ok()) << pattern.name << ": " << id.status().to_string();
    ASSERT_EQ(wait_final(*id), TransferState::kDone) << pattern.name;
    transport_->release(*id);
    apply(pattern.region, pattern.segments);
    for (const PutSegment& s : pattern.segments) bytes += s.bytes;
    expect_region_matches_model(pattern.region, pattern.name);
  }
  EXPECT_EQ(transport_->stats().bytes_completed, bytes);
  EXPECT_EQ(transport_->stats().transfers_completed, patterns.size());
}

TEST_P(CudaIpcTransportTest, FencesCancelsTimeoutsAndDrops) {
  const std::vector<PutSegment> run{{0, 0, kRegionBytes}};
  // Cancelled right after posting: final only once the copy is over; its bytes are final then.
  auto cancelled = transport_->post_put(local_, remote_[0], run, std::chrono::seconds(10));
  ASSERT_TRUE(cancelled.ok());
  transport_->cancel(*cancelled);
  EXPECT_EQ(wait_final(*cancelled), TransferState::kCancelled);
  apply(0, run);
  expect_region_matches_model(0, "after cancel");
  EXPECT_EQ(transport_->stats().transfers_cancelled, 1u);

  // Stalled: the copy runs, completion is never reported, the deadline decides.
  FaultInjection stall;
  stall.stall_probability = 1.0;
  ASSERT_NO_FATAL_FAILURE(open_transport(stall));
  ASSERT_NO_FATAL_FAILURE(refill_source());
  const auto posted = std::chrono::steady_clock::now();
  auto stalled = transport_->post_put(local_, remote_[1], run, std::chrono::milliseconds(100));
  ASSERT_TRUE(stalled.ok());
  EXPECT_EQ(wait_final(*stalled), TransferState::kTimedOut);
  EXPECT_GE(std::chrono::steady_clock::now() - posted, std::chrono::milliseconds(100));
  EXPECT_EQ(transport_->stats().transfers_timed_out, 1u);
  apply(1, run);
  expect_region_matches_model(1, "after a stalled copy timed out");

  // Dropped: kFailed at once and nothing written (fresh source bytes would show).
  FaultInjection drop;
  drop.drop_probability = 1.0;
  ASSERT_NO_FATAL_FAILURE(open_transport(drop));
  ASSERT_NO_FATAL_FAILURE(refill_source());
  auto dropped = transport_->post_put(local_, remote_[0], run, std::chrono::seconds(10));
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(transport_->poll(*dropped), TransferState::kFailed);
  EXPECT_EQ(transport_->stats().transfers_failed, 1u);
  EXPECT_EQ(transport_->stats().bytes_completed, 0u);
  expect_region_matches_model(0, "after a dropped transfer");
  EXPECT_EQ(transport_->poll(987654), TransferState::kFailed) << "unknown ids read as failed";
}

TEST_P(CudaIpcTransportTest, RefusesWhatItCannotMove) {
  // Itself, another host, a second connect of one peer id.
  EXPECT_FALSE(transport_->connect(2, transport_->local_address()).ok());
  WireWriter other_host;
  other_host.put_string(std::string("another-boot-id"));
  other_host.put(std::int64_t{12345});
  EXPECT_FALSE(transport_->connect(3, other_host.take()).ok());
  EXPECT_FALSE(transport_->connect(1, target_address_).ok());
  // Host memory, and device memory of another device than the transport's.
  std::vector<std::uint8_t> host(4096);
  EXPECT_FALSE(transport_->register_region(host.data(), host.size(), MemoryKind::kHost).ok());
  EXPECT_FALSE(transport_->register_region(host.data(), host.size(), MemoryKind::kDevice).ok());
  EXPECT_FALSE(transport_->allocate_region(4096).ok());
  // Segments outside either region; unknown regions.
  const std::vector<PutSegment> past_remote{{0, kRegionBytes - 8, 16}};
  const std::vector<PutSegment> past_local{{kRegionBytes, 0, 1}};
  EXPECT_EQ(transport_->post_put(local_, remote_[0], past_remote, std::chrono::seconds(1))
                .status()
                .code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(
      transport_->post_put(local_, remote_[0], past_local, std::chrono::seconds(1)).status().code(),
      StatusCode::kOutOfRange);
  EXPECT_FALSE(transport_->post_put(local_, 999, {}, std::chrono::seconds(1)).ok());
  EXPECT_FALSE(transport_->deliver(local_, past_remote).ok());
  EXPECT_TRUE(transport_->deliver(local_, std::vector<PutSegment>{{0, 0, kRegionBytes}}).ok());
  EXPECT_EQ(transport_->stats().transfers_completed, 0u);
}

INSTANTIATE_TEST_SUITE_P(Devices, CudaIpcTransportTest,
                         ::testing::Values(Case{"same_device", 0}, Case{"peer_device", 1}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace podserve

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--cuda-ipc-target") {
    return podserve::run_target(std::atoi(argv[2]), std::atoi(argv[3]));
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
