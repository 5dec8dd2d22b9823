#include "kvtransfer/kv_shipper.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <utility>

namespace podserve {

KvShipper::KvShipper(KvFabric& fabric, KvShipperOptions options)
    : fabric_(fabric), options_(std::move(options)) {}

Status KvShipper::post(const KvShipment& shipment, std::optional<std::int32_t> layer) {
  const auto found = options_.decode_instances.find(shipment.decode_instance);
  if (found == options_.decode_instances.end()) {
    return invalid_argument(fmt::format("request {}: decode instance {} is not in the fabric",
                                        shipment.seq_id, shipment.decode_instance));
  }
  const DecodeRanks& dest = found->second;
  auto [it, inserted] = shipments_.try_emplace(shipment.seq_id);
  auto& state = it->second;
  const auto now = std::chrono::steady_clock::now();
  if (inserted) {
    state.start = now;
    state.decode_instance = shipment.decode_instance;
    for (int dest_tp_rank = 0; dest_tp_rank < dest.tp; ++dest_tp_rank) {
      auto segments =
          coalesce_segments(shard_segments(options_.layout, options_.shard, {dest.tp, dest_tp_rank},
                                           shipment.source_pages, shipment.dest_pages));
      state.segments_by_dest.push_back(
          segments.empty() ? nullptr
                           : std::make_shared<const std::vector<PutSegment>>(std::move(segments)));
    }
  }
  state.last_post = now;  // the compute this post waited for is done
  const std::int32_t first = layer.value_or(0);
  const std::int32_t last = layer ? *layer + 1 : options_.num_layers;
  for (int dest_tp_rank = 0; dest_tp_rank < dest.tp; ++dest_tp_rank) {
    const auto& segments = state.segments_by_dest[dest_tp_rank];
    if (!segments) continue;
    std::uint64_t bytes = 0;
    for (const auto& s : *segments) bytes += s.bytes;
    for (std::int32_t l = first; l < last; ++l) {
      Transfer t;
      t.local_region = fabric_.local_region(l);
      t.remote_region = fabric_.remote_region(dest.first_rank + dest_tp_rank, l);
      t.segments = segments;
      t.bytes = bytes;
      PODSERVE_ASSIGN_OR_RETURN(
          t.transfer_id, fabric_.transport().post_put(t.local_region, t.remote_region, *t.segments,
                                                      options_.timeout));
      state.transfers.push_back(std::move(t));
    }
  }
  state.layers_posted += last - first;
  return Status::Ok();
}

std::vector<KvShipper::Finished> KvShipper::poll() {
  std::vector<Finished> finished;
  if (shipments_.empty()) return finished;
  auto& transport = fabric_.transport();
  transport.progress();
  for (auto it = shipments_.begin(); it != shipments_.end();) {
    auto& shipment = it->second;
    bool all_final = shipment.layers_posted >= options_.num_layers;
    for (auto& t : shipment.transfers) {
      if (t.state != TransferState::kPending) continue;
      const auto state = transport.poll(t.transfer_id);
      if (state == TransferState::kPending) {
        all_final = false;
        continue;
      }
      transport.release(t.transfer_id);
      if (state == TransferState::kDone) {
        t.state = state;
        continue;
      }
      ++shipment.failed_attempts;
      if (t.attempts <= options_.retries && !shipment.failed) {
        auto reposted =
            transport.post_put(t.local_region, t.remote_region, *t.segments, options_.timeout);
        if (reposted.ok()) {
          ++t.attempts;
          t.transfer_id = *reposted;
          all_final = false;
          continue;
        }
        spdlog::warn("KV transfer for request {} could not be reposted: {}", it->first,
                     reposted.status().to_string());
      }
      t.state = state;
      shipment.failed = true;
    }
    if (shipment.failed) {
      // Fence the rest: nothing of a failed shipment may land after it is reported.
      for (auto& t : shipment.transfers) {
        if (t.state == TransferState::kPending) transport.cancel(t.transfer_id);
      }
    }
    if (!all_final) {
      ++it;
      continue;
    }
    Finished f;
    f.id = it->first;
    f.decode_instance = shipment.decode_instance;
    f.ok = !shipment.failed;
    f.failed_attempts = shipment.failed_attempts;
    const auto now = std::chrono::steady_clock::now();
    f.seconds = std::chrono::duration<double>(now - shipment.start).count();
    f.tail_seconds = std::chrono::duration<double>(now - shipment.last_post).count();
    for (const auto& t : shipment.transfers)
      if (t.state == TransferState::kDone) {
        f.bytes += t.bytes;
        f.runs += t.segments->size();
      }
    finished.push_back(f);
    it = shipments_.erase(it);
  }
  return finished;
}

}  // namespace podserve
