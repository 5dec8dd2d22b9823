// Host staging: GPU pages over a KvTransport that cannot register device memory (UCX built
// without CUDA transports, like the GPU machine's UCX 1.16: shm, cma, tcp, ib only). The wrapper
// is itself a KvTransport with supports_device_memory() == true (README "Host staging").
//
// - register_region(base, bytes, kDevice) allocates a host mirror of the same size through the
//   inner transport's allocate_region (so peers write it in one copy over shared memory), pins it
//   with cudaHostRegister, and returns the mirror's region id; region_descriptor() of that id is
//   the mirror's. Host regions and allocate_region pass straight through.
// - post_put from a device region copies the segments' local bytes device -> mirror (same
//   offsets; one copy per merged local range, covered_ranges) on the wrapper's own non-blocking
//   CUDA stream, then, once progress() or poll() sees the copy's
//   event complete, posts the inner put mirror -> remote. The deadline runs from this post_put.
//   A cancel or deadline that comes before the inner put waits for the copy, posts nothing and
//   reads kCancelled / kTimedOut; after it, the inner transfer's fence applies. Segments are
//   bounds-checked against the local region here and against the remote region when the inner
//   put is posted (a bad remote range then reads kFailed, logged).
// - deliver() on a device region copies the segments' remote bytes mirror -> device (one copy per
//   merged range): the target calls it after kDone, before it reads the pages. With
//   HostStagingOptions::delivery_stream the copies are queued on that stream and deliver()
//   returns at once (work queued there later reads the delivered pages; the mirror bytes are not
//   written again before they are, since a page's next put comes after it is freed and reused);
//   without one deliver() waits for the copies.
//
// Contract (beyond KvTransport's): the device bytes of a post_put must be final when it is called
// (the wrapper's stream does not wait for the caller's streams: synchronize the stream that wrote
// them first); device regions must live on HostStagingOptions::cuda_device. Cost: a pinned host
// mirror the size of every registered device region, and one extra copy on each side (device ->
// host before the put, host -> device in deliver). Not thread-safe, like every KvTransport.
#pragma once

#include <memory>

#include "core/status.h"
#include "kvtransfer/transport.h"

namespace podserve {

struct HostStagingOptions {
  int cuda_device = 0;  // the device of every registered device region; the stream lives there
  // A cudaStream_t (as void*) of cuda_device for deliver()'s copies, e.g. the stream the model's
  // forward passes run on; nullptr: the wrapper's own stream, and deliver() waits.
  void* delivery_stream = nullptr;
};

// Wraps `inner` (which keeps its own id spaces: a device region's id is its mirror's). CUDA builds
// only: returns kUnimplemented in builds without CUDA, and an error when the device is missing.
Result<std::unique_ptr<KvTransport>> make_host_staged_transport(std::unique_ptr<KvTransport> inner,
                                                                const HostStagingOptions& options);

// `inner` itself when it can register `kv_memory` (host memory, or device memory over a transport
// with CUDA support, as UcxTransport detects at run time), else `inner` wrapped with host staging.
inline Result<std::unique_ptr<KvTransport>> make_transport_for(std::unique_ptr<KvTransport> inner,
                                                               MemoryKind kv_memory,
                                                               const HostStagingOptions& options) {
  if (kv_memory == MemoryKind::kHost || inner->supports_device_memory()) {
    return Result<std::unique_ptr<KvTransport>>(std::move(inner));
  }
  return make_host_staged_transport(std::move(inner), options);
}

}  // namespace podserve
