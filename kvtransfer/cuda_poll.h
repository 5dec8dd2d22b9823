// Internal to kvtransfer's CUDA host sources (host_staged_transport.cpp, cuda_ipc_transport.cpp;
// not the .cu files, whose nvcc cannot compile spdlog's fmt): KvTransport::poll for a transport
// whose transfers live in a TransferTable and move along with their device current, and
// KvTransport::progress for the same.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <string_view>

#include "kvtransfer/cuda_check.h"
#include "kvtransfer/transfer_table.h"
#include "kvtransfer/transport.h"

namespace podserve::kvtransfer_detail {

// KvTransport::poll: `transfers` maps ids to transfers with a `state`: unknown ids read
// kFailed; a pending one is moved along by update(transfer) with `device` current (when the
// device cannot be entered, logged as `who`, it stays kPending).
template <typename Table, typename Update>
TransferState poll_on_device(Table& transfers, std::uint64_t transfer_id, int device,
                             std::string_view who, Update&& update) {
  auto found = transfers.find(transfer_id);
  if (found == transfers.end()) return TransferState::kFailed;
  if (found->second.state == TransferState::kPending) {
    CudaDeviceScope scope;
    if (Status status = scope.enter(device); !status.ok()) {
      SPDLOG_WARN("{}: {}", who, status.to_string());
      return TransferState::kPending;
    }
    update(found->second);
  }
  return found->second.state;
}

// KvTransport::progress over the same table: every transfer moved along by update(transfer)
// (true when it changed) with `device` current, released final ones forgotten
// (update_transfers). True when any moved; false, logged as `who`, when the device cannot be
// entered.
template <typename Table, typename Update>
bool progress_on_device(Table& transfers, int device, std::string_view who, Update&& update) {
  if (transfers.empty()) return false;
  CudaDeviceScope scope;
  if (Status status = scope.enter(device); !status.ok()) {
    SPDLOG_WARN("{}: {}", who, status.to_string());
    return false;
  }
  return update_transfers(transfers, update);
}

}  // namespace podserve::kvtransfer_detail
