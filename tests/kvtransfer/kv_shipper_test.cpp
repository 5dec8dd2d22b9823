// KvShipper over real KvFabrics in one process (UCX, one transport per rank): the prefill ranks
// of a TP group ship a request's pages, all layers at once or layer by layer, into the pages a
// decode instance of another TP degree reserved. Every element of the decode pages must equal
// the element of the prefill rank that holds its head (a per-element reference over fresh
// random KV), pages outside the shipment must keep their poison, and a shipment whose
// transfers are dropped must be reported failed with nothing written. ctest runs this binary
// over shared memory (--ucx-tls, --ucx-peer-errors as ucx_transport_test).
#include "kvtransfer/kv_shipper.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "segment_patterns.h"

namespace podserve {
namespace {

using namespace std::chrono_literals;

bool use_peer_error_handling = true;  // --ucx-peer-errors=0 clears it

constexpr std::int32_t kHeads = 4, kHeadDim = 8, kPageSize = 4, kLayers = 2, kPages = 8;
constexpr std::int32_t kDecodeInstance = 7;
constexpr int kFirstDecodePeer = 10;  // decode TP rank i is fabric peer 10 + i
constexpr float kPoison = -12345.0f;

struct TpPair {
  std::int32_t prefill_tp = 1;
  std::int32_t decode_tp = 1;

  friend void PrintTo(const TpPair& p, std::ostream* os) {
    *os << "TP " << p.prefill_tp << " -> " << p.decode_tp;
  }
};

// One rank: its fabric and its KV cache, [kLayers][kPages, 2, kPageSize, heads, kHeadDim].
struct Rank {
  std::unique_ptr<KvFabric> fabric;
  std::int32_t heads = 0;
  std::vector<std::vector<float>> layers;

  float& at(int layer, int page, int kv, int slot, int head, int dim) {
    const std::size_t i =
        ((((static_cast<std::size_t>(page) * 2 + kv) * kPageSize + slot) * heads + head) *
             kHeadDim +
         dim);
    return layers[layer][i];
  }
};

class KvShipperTest : public ::testing::TestWithParam<TpPair> {
 protected:
  Rank make_rank(std::int32_t tp, const FaultInjection& faults) {
    Rank rank;
    KvFabricOptions options;
    options.backend = "ucx";
    options.peer_error_handling = use_peer_error_handling ? "on" : "off";
    options.faults = faults;
    auto fabric = KvFabric::open(options, MemoryKind::kHost);
    EXPECT_TRUE(fabric.ok()) << fabric.status().to_string();
    rank.fabric = std::move(fabric).value();
    rank.heads = kHeads / tp;
    rank.layers.assign(kLayers, std::vector<float>(static_cast<std::size_t>(kPages) * 2 *
                                                   kPageSize * rank.heads * kHeadDim));
    return rank;
  }

  std::vector<std::uint8_t> register_rank(Rank& rank) {
    std::vector<KvCacheView> views;
    for (auto& layer : rank.layers)
      views.push_back({layer.data(), DType::kF32, kPages, kPageSize, rank.heads, kHeadDim});
    auto address = rank.fabric->register_kv_cache(views);
    EXPECT_TRUE(address.ok()) << address.status().to_string();
    return address.ok() ? *address : std::vector<std::uint8_t>{};
  }

  // Prefill ranks with fresh random KV, decode ranks poisoned, every prefill rank connected to
  // every decode rank, one shipper per prefill rank.
  void build(const TpPair& tp, const FaultInjection& faults = {}) {
    std::mt19937_64 rng(testing::fresh_seed());
    std::uniform_real_distribution<float> value(-1.0f, 1.0f);
    for (std::int32_t r = 0; r < tp.decode_tp; ++r) {
      decode_.push_back(make_rank(tp.decode_tp, {}));
      for (auto& layer : decode_.back().layers) std::fill(layer.begin(), layer.end(), kPoison);
    }
    std::vector<std::vector<std::uint8_t>> decode_addresses;
    for (auto& rank : decode_) decode_addresses.push_back(register_rank(rank));
    for (std::int32_t r = 0; r < tp.prefill_tp; ++r) {
      FaultInjection rank_faults = faults;
      rank_faults.seed = faults.seed + static_cast<std::uint64_t>(r);
      prefill_.push_back(make_rank(tp.prefill_tp, rank_faults));
      Rank& rank = prefill_.back();
      for (auto& layer : rank.layers)
        for (float& v : layer) v = value(rng);
      register_rank(rank);
      for (std::int32_t d = 0; d < tp.decode_tp; ++d)
        ASSERT_TRUE(rank.fabric->connect(kFirstDecodePeer + d, decode_addresses[d]).ok());
      KvShipperOptions options;
      options.layout = {kHeads, kHeadDim, kPageSize, sizeof(float)};
      options.shard = {tp.prefill_tp, r};
      options.num_layers = kLayers;
      options.timeout = 5000ms;
      options.retries = 1;
      options.decode_instances[kDecodeInstance] = {kFirstDecodePeer, tp.decode_tp};
      shippers_.push_back(std::make_unique<KvShipper>(*rank.fabric, options));
    }
  }

  // Polls every shipper (and progresses the decode ranks) until each reported its shipment.
  std::vector<KvShipper::Finished> wait_all(std::chrono::seconds limit = 60s) {
    std::vector<KvShipper::Finished> finished;
    const auto give_up = std::chrono::steady_clock::now() + limit;
    while (finished.size() < shippers_.size() && std::chrono::steady_clock::now() < give_up) {
      for (auto& rank : decode_) rank.fabric->progress();
      for (auto& shipper : shippers_)
        for (const auto& done : shipper->poll()) finished.push_back(done);
      std::this_thread::sleep_for(20us);
    }
    return finished;
  }

  KvShipment shipment() const {
    return {1, kDecodeInstance, 3 * kPageSize - 1, {5, 6, 2}, {0, 3, 4}};
  }

  // Every element of the shipped pages on the decode side against the prefill rank holding its
  // head; every other decode page still poisoned.
  void expect_shipped(const KvShipment& s) {
    const std::int32_t prefill_heads = prefill_[0].heads, decode_heads = decode_[0].heads;
    for (int layer = 0; layer < kLayers; ++layer)
      for (int page = 0; page < kPages; ++page) {
        const auto shipped = std::find(s.dest_pages.begin(), s.dest_pages.end(), page);
        for (int kv = 0; kv < 2; ++kv)
          for (int slot = 0; slot < kPageSize; ++slot)
            for (int head = 0; head < kHeads; ++head)
              for (int dim = 0; dim < kHeadDim; ++dim) {
                const float got = decode_[head / decode_heads].at(layer, page, kv, slot,
                                                                  head % decode_heads, dim);
                const float want = shipped == s.dest_pages.end()
                                       ? kPoison
                                       : prefill_[head / prefill_heads].at(
                                             layer, s.source_pages[shipped - s.dest_pages.begin()],
                                             kv, slot, head % prefill_heads, dim);
                ASSERT_EQ(got, want) << "layer " << layer << " page " << page << " kv " << kv
                                     << " slot " << slot << " head " << head << " dim " << dim;
              }
      }
  }

  std::vector<Rank> prefill_, decode_;
  std::vector<std::unique_ptr<KvShipper>> shippers_;
};

TEST_P(KvShipperTest, WholeRequestLandsInTheReservedPages) {
  build(GetParam());
  const KvShipment s = shipment();
  for (auto& shipper : shippers_) ASSERT_TRUE(shipper->post(s, std::nullopt).ok());
  const auto finished = wait_all();
  ASSERT_EQ(finished.size(), shippers_.size());
  const std::uint64_t bytes_per_rank = static_cast<std::uint64_t>(kLayers) * s.dest_pages.size() *
                                       2 * kPageSize * prefill_[0].heads * kHeadDim * sizeof(float);
  for (const auto& done : finished) {
    EXPECT_TRUE(done.ok);
    EXPECT_EQ(done.id, s.seq_id);
    EXPECT_EQ(done.decode_instance, kDecodeInstance);
    EXPECT_EQ(done.bytes, bytes_per_rank);
    EXPECT_EQ(done.failed_attempts, 0);
  }
  for (auto& shipper : shippers_) EXPECT_TRUE(shipper->idle());
  for (auto& rank : decode_) ASSERT_TRUE(rank.fabric->deliver(s.dest_pages).ok());
  expect_shipped(s);
}

TEST_P(KvShipperTest, LayerByLayerIsFinalOnlyAfterTheLastLayer) {
  build(GetParam());
  const KvShipment s = shipment();
  for (auto& shipper : shippers_) ASSERT_TRUE(shipper->post(s, 0).ok());
  // Layer 0 may complete, but the shipment is not final before every layer was posted.
  const auto early = std::chrono::steady_clock::now() + 200ms;
  while (std::chrono::steady_clock::now() < early) {
    for (auto& rank : decode_) rank.fabric->progress();
    for (auto& shipper : shippers_) EXPECT_TRUE(shipper->poll().empty());
    std::this_thread::sleep_for(100us);
  }
  for (auto& shipper : shippers_) ASSERT_TRUE(shipper->post(s, 1).ok());
  const auto finished = wait_all();
  ASSERT_EQ(finished.size(), shippers_.size());
  for (const auto& done : finished) EXPECT_TRUE(done.ok);
  expect_shipped(s);
}

TEST_P(KvShipperTest, DroppedTransfersAreRetriedThenReportedFailedWithNothingWritten) {
  FaultInjection faults;
  faults.drop_probability = 1.0;
  faults.seed = 99;
  build(GetParam(), faults);
  const KvShipment s = shipment();
  for (auto& shipper : shippers_) ASSERT_TRUE(shipper->post(s, std::nullopt).ok());
  const auto finished = wait_all();
  ASSERT_EQ(finished.size(), shippers_.size());
  for (const auto& done : finished) {
    EXPECT_FALSE(done.ok);
    EXPECT_EQ(done.bytes, 0u);
    EXPECT_GE(done.failed_attempts, 2);  // the first attempt and its retry
  }
  expect_shipped({1, kDecodeInstance, 0, {}, {}});  // every decode page still poisoned
}

TEST(KvShipper, AShipmentToAnInstanceOutsideTheTableIsRefused) {
  KvFabricOptions options;
  options.backend = "ucx";
  options.peer_error_handling = use_peer_error_handling ? "on" : "off";
  auto fabric = KvFabric::open(options, MemoryKind::kHost);
  ASSERT_TRUE(fabric.ok()) << fabric.status().to_string();
  KvShipper shipper(**fabric, {});
  EXPECT_EQ(shipper.post({1, 3, 4, {0}, {0}}, std::nullopt).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(shipper.idle());
}

INSTANTIATE_TEST_SUITE_P(Tp, KvShipperTest,
                         ::testing::Values(TpPair{1, 1}, TpPair{2, 1}, TpPair{1, 2}, TpPair{2, 2}),
                         [](const ::testing::TestParamInfo<TpPair>& info) {
                           return "Tp" + std::to_string(info.param.prefill_tp) + "To" +
                                  std::to_string(info.param.decode_tp);
                         });

}  // namespace
}  // namespace podserve

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  podserve::use_peer_error_handling = podserve::testing::apply_ucx_test_flags(argc, argv);
  return RUN_ALL_TESTS();
}
