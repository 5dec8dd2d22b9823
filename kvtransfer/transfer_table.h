// Internal to kvtransfer: the transfer-id bookkeeping every one-sided KvTransport backend shares
// (KvTransport::progress, release and stats). A backend keeps its transfers in a TransferTable
// whose Transfer type has `TransferState state` (kPending until final) and `bool released`. Not
// thread-safe, like the transports.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "kvtransfer/transport.h"

namespace podserve::kvtransfer_detail {

template <typename Transfer>
using TransferTable = std::unordered_map<std::uint64_t, Transfer>;

// Runs update(transfer) on every transfer and forgets the released ones that are final.
// Returns true when any update returned true (it moved something).
template <typename Transfer, typename Update>
bool update_transfers(TransferTable<Transfer>& transfers, Update&& update) {
  bool moved = false;
  for (auto it = transfers.begin(); it != transfers.end();) {
    moved |= update(it->second);
    if (it->second.released && it->second.state != TransferState::kPending) {
      it = transfers.erase(it);
    } else {
      ++it;
    }
  }
  return moved;
}

// KvTransport::release: forgets a final transfer; a pending one is cancelled through
// cancel(transfer_id) and forgotten by update_transfers once final. Unknown ids: no-op.
template <typename Transfer, typename Cancel>
void release_transfer(TransferTable<Transfer>& transfers, std::uint64_t transfer_id,
                      Cancel&& cancel) {
  auto found = transfers.find(transfer_id);
  if (found == transfers.end()) return;
  if (found->second.state != TransferState::kPending) {
    transfers.erase(found);
    return;
  }
  cancel(transfer_id);
  found->second.released = true;
}

// Counts a transfer that just became final in `stats` (`bytes`: what it moved, counted if kDone).
inline void count_final(TransportStats& stats, TransferState state, std::uint64_t bytes) {
  switch (state) {
    case TransferState::kDone:
      stats.bytes_completed += bytes;
      ++stats.transfers_completed;
      break;
    case TransferState::kFailed: ++stats.transfers_failed; break;
    case TransferState::kTimedOut: ++stats.transfers_timed_out; break;
    case TransferState::kCancelled: ++stats.transfers_cancelled; break;
    case TransferState::kPending: break;
  }
}

}  // namespace podserve::kvtransfer_detail
