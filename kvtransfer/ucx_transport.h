// UCX backend of KvTransport: one ucp context (RMA) and one worker (single-threaded), endpoints
// created from worker addresses with peer error handling, regions registered with
// ucp_mem_map and published as (address, length, packed rkey), puts posted with ucp_put_nbx
// per coalesced segment followed by ucp_ep_flush_nbx, completion read from the request status.
// UCX's own environment variables (UCX_TLS, UCX_NET_DEVICES, UCX_RNDV_THRESH, ...) apply; UCX
// reads them when the transport is created.
//
// Device memory: supports_device_memory() tells at run time whether this UCX build has CUDA
// memory support (ucp_context_query memory types include CUDA). Without it,
// register_region(..., MemoryKind::kDevice) returns kUnimplemented ("UCX has no CUDA
// transports: stage through host memory"): make_transport_for (host_staged_transport.h) wraps the
// transport with host staging then (README "Host staging"). deliver() only checks its ranges:
// UCX writes into the registered memory itself.
//
// Fence (what cancel() and timeouts guarantee, and how): UCX cannot withdraw a put once handed
// to a transport (ucp_request_cancel does not apply to RMA), and a put's request completing
// means only that the source buffer may be reused. Remote completion comes from a flush: when a
// ucp_ep_flush_nbx request completes, every operation posted earlier on that endpoint has been
// applied at the target. So to fence a transfer the transport posts a new flush on its endpoint
// and reports kCancelled / kTimedOut when that flush completes; the endpoint stays usable. If
// the flush does not complete within UcxOptions::fence_timeout (the peer stopped progressing or
// the link is gone) or the endpoint reported an error, the endpoint is force-closed (UCX then
// completes every outstanding request with UCS_ERR_CANCELED and the initiator never touches that
// endpoint again), the transfer reads kFailed, and the next post_put to that peer reconnects
// (rkeys are unpacked again on the new endpoint). Over shared memory (cma, posix, sysv) the
// initiator performs every write itself, so after the force close nothing more is written. Over
// TCP, puts are applied by the target's progress; bytes that reached the target's socket before
// the close may still be applied by it later: after a kFailed from an unreachable-peer fence,
// the target must not reuse those pages until it has seen its own endpoint error for the peer
// (or the peer confirmed over the control plane).
//
// Threading and ownership: as KvTransport (one thread; caller owns registered memory).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"
#include "kvtransfer/transport.h"

namespace podserve {

struct UcxOptions {
  FaultInjection faults;
  // How long a fence's flush may take before the endpoint is force-closed (transfer kFailed).
  // Applies only with peer_error_handling: without it UCX cannot drop a peer safely, so a fence
  // waits for its flush.
  std::chrono::milliseconds fence_timeout{5000};
  // Endpoints with UCP_ERR_HANDLING_MODE_PEER: peer failures are reported (keepalive) and a
  // forced close is defined. UCX 1.13's shared-memory transports (posix, sysv) refuse it, so
  // with it on, UCX_TLS=sm,self cannot connect and sm,tcp,self moves puts over TCP; turn it off
  // for single-copy shared-memory puts (README "Transports").
  bool peer_error_handling = true;
};

class UcxTransport : public KvTransport {
 public:
  // Fault injection can be changed at any time; it applies to later post_put calls.
  virtual void set_fault_injection(const FaultInjection& faults) = 0;
  // UCX's description of the endpoint to `peer_id` (transports and lanes, from
  // ucp_ep_print_info); for benchmarks and logs.
  virtual Result<std::string> describe_connection(int peer_id) const = 0;
};

Result<std::unique_ptr<UcxTransport>> make_ucx_transport(const UcxOptions& options);

}  // namespace podserve
