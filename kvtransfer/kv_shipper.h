// One prefill rank's KV shipments (docs/design.md sections 2 and 8): for each request whose
// prompt completed (a KvShipment of the batch plan), this rank's share of its KV pages (its KV
// heads, shard_segments) goes into the pages the decode instance reserved, as one-sided puts
// over the KV fabric, all layers at once or layer by layer. A failed or timed-out transfer is
// reposted up to `retries` times; a shipment is reported final only when every one of its
// transfers completed or was fenced (cancelled, so no byte of it lands later).
//
// Contract: one thread (the rank's loop) makes every call; the fabric outlives the shipper and
// is connected to every rank of every decode instance in the table.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/batch_plan.h"
#include "core/status.h"
#include "kvtransfer/head_shards.h"
#include "kvtransfer/kv_fabric.h"
#include "kvtransfer/transport.h"

namespace podserve {

// The fabric peers of one decode instance: ranks first_rank .. first_rank + tp - 1, TP rank i
// being peer first_rank + i.
struct DecodeRanks {
  std::int32_t first_rank = 0;
  std::int32_t tp = 1;
};

struct KvShipperOptions {
  KvPageLayout layout;  // the model's KV heads, head_dim, page size, element bytes
  TpShard shard;        // this prefill rank within its instance
  std::int32_t num_layers = 0;
  std::chrono::milliseconds timeout{5000};               // per transfer attempt
  std::int32_t retries = 1;                              // reposts after a failed attempt
  std::map<std::int32_t, DecodeRanks> decode_instances;  // instance id -> its ranks
};

class KvShipper {
 public:
  KvShipper(KvFabric& fabric, KvShipperOptions options);

  // Posts this rank's share of `shipment` for one layer, or for every layer (nullopt).
  Status post(const KvShipment& shipment, std::optional<std::int32_t> layer);

  struct Finished {
    RequestId id = 0;
    std::int32_t decode_instance = 0;  // where it went
    bool ok = true;
    std::uint64_t bytes = 0;
    std::uint64_t runs = 0;     // page runs moved (one put or NCCL message each), all layers
    double seconds = 0.0;       // first post -> final
    double tail_seconds = 0.0;  // start of the last post (the compute it waited for is done)
                                // -> final: the transfer time not hidden behind compute
    std::int32_t failed_attempts = 0;
  };
  // Progresses the transport, retries failures, and returns the shipments that became final.
  std::vector<Finished> poll();
  bool idle() const { return shipments_.empty(); }

 private:
  struct Transfer {
    int local_region = 0;
    int remote_region = 0;
    std::shared_ptr<const std::vector<PutSegment>> segments;  // shared by every layer
    std::uint64_t bytes = 0;
    std::uint64_t transfer_id = 0;
    std::int32_t attempts = 1;
    TransferState state = TransferState::kPending;
  };
  struct Shipment {
    std::int32_t decode_instance = 0;
    // Per decode TP rank: the segments of one layer (the same for every layer), coalesced into
    // runs contiguous on both sides; null when that rank holds none of this rank's heads.
    std::vector<std::shared_ptr<const std::vector<PutSegment>>> segments_by_dest;
    std::vector<Transfer> transfers;
    std::int32_t layers_posted = 0;
    std::int32_t failed_attempts = 0;
    bool failed = false;
    std::chrono::steady_clock::time_point start;
    std::chrono::steady_clock::time_point last_post;
  };

  KvFabric& fabric_;
  KvShipperOptions options_;
  std::unordered_map<RequestId, Shipment> shipments_;
};

}  // namespace podserve
