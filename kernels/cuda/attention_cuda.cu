// Kernels and launchers of hybrid attention (see attention_cuda.h). The kernels are thin
// wrappers over the device bodies in attention_device.cuh: the standalone prefill and decode
// kernels, the decode merge, and the POD kernel in its 2- and 4-CTAs-per-SM variants.
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/attention_device.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dependent_launch.cuh"

namespace podserve::cuda {
namespace {

using device::KernelArgs;

// Tile configuration per CTAs-per-SM target. The prefill tile is kM halves of 64 query rows on
// one warpgroup (wgmma). 2 CTAs/SM: 64-key steps, 3-stage decode pipelines. 4 CTAs/SM (128
// registers a thread): one half, 32-key steps, single-stage decode warps (16 warps per SM keep
// the loads in flight). kM = plan.prefill_rows_per_cta / 64.
template <int D, int kCtasPerSm, int kM>
struct TileConfig;
template <int D, int kM>
struct TileConfig<D, 2, kM> {
  static constexpr int kPrefillKeys = 64;
  static constexpr int kDecodeStages = 3;
};
template <int D>
struct TileConfig<D, 4, 1> {
  static constexpr int kPrefillKeys = 32;
  static constexpr int kDecodeStages = 1;
};

template <int D, int kCtasPerSm, int kM>
constexpr int prefill_smem() {
  return device::prefill_smem_bytes<D, kM, TileConfig<D, kCtasPerSm, kM>::kPrefillKeys>();
}
template <int D, int kCtasPerSm, int kM>
constexpr int decode_smem() {
  return kWarpsPerCta *
         device::decode_warp_smem_bytes<D, TileConfig<D, kCtasPerSm, kM>::kDecodeStages>();
}
template <int D, int kCtasPerSm, int kM>
constexpr int pod_smem() {
  return prefill_smem<D, kCtasPerSm, kM>() > decode_smem<D, kCtasPerSm, kM>()
             ? prefill_smem<D, kCtasPerSm, kM>()
             : decode_smem<D, kCtasPerSm, kM>();
}

// Standalone prefill: the 2-CTAs/SM tile of kM halves (the plan's prefill_rows_per_cta / 64).
template <int D, int kM>
__global__ void __launch_bounds__(kThreadsPerCta, 2) prefill_kernel(const KernelArgs args) {
  extern __shared__ __align__(128) char smem[];
  device::prefill_tile<D, kM, TileConfig<D, 2, kM>::kPrefillKeys>(
      args, static_cast<int>(blockIdx.x), smem);
}

// Standalone decode: kDecodeCtasPerSm CTAs of 4 one-warp items per SM.
template <int D>
__global__ void __launch_bounds__(kThreadsPerCta, kDecodeCtasPerSm)
    decode_kernel(const KernelArgs args) {
  extern __shared__ __align__(128) char smem[];
  using Cfg = TileConfig<D, 2, 1>;
  const int warp = static_cast<int>(threadIdx.x >> 5);
  const int item = static_cast<int>(blockIdx.x) * kWarpsPerCta + warp;
  wait_for_prior_grids();  // a dependent launch (launch_decode)
  allow_next_grid();
  if (item >= device::decode_item_count(args)) return;
  device::decode_item<D, Cfg::kDecodeStages>(
      args, item, smem + warp * device::decode_warp_smem_bytes<D, Cfg::kDecodeStages>());
}

// One CTA per (merge item, query head of the group): grid = merge item bound x group.
template <int D>
__global__ void __launch_bounds__(kThreadsPerCta) merge_kernel(const KernelArgs args) {
  wait_for_prior_grids();  // a dependent launch (launch_decode)
  allow_next_grid();
  const int group = args.params.num_q_heads / args.params.num_kv_heads;
  const int item = static_cast<int>(blockIdx.x) / group;
  if (item >= device::merge_item_count(args)) return;
  device::merge_item<D>(args, item, static_cast<int>(blockIdx.x) % group);
}

// POD: grid = prefill CTAs + decode CTAs. Each CTA reads the counter of the SM it landed on
// (%smid) and picks its kind by the plan's policy (PodPolicy): tickets in proportion to the CTA
// counts, or resident slots (sm_tickets[sm] counts the SM's running prefill CTAs). Logical ids
// come from two global counters; a CTA whose side has run out binds to the other side (the total
// is the grid, so one side always has an id left).
template <int D, int kCtasPerSm, int kM>
__global__ void __launch_bounds__(kThreadsPerCta, kCtasPerSm) pod_kernel(const KernelArgs args) {
  extern __shared__ __align__(128) char smem[];
  __shared__ int role_and_id;  // >= 0: prefill id; < 0: -(decode id) - 1
  using Cfg = TileConfig<D, kCtasPerSm, kM>;
  const bool slots = args.pod_policy == static_cast<int>(PodPolicy::kSlots);
  int* const sm_counter = &args.sm_tickets[device::sm_id() % kPodCounterSlots];
  if (threadIdx.x == 0) {
    bool prefill;
    if (args.pod_policy == static_cast<int>(PodPolicy::kPrefillFirst)) {
      prefill = true;  // rebinds to decode once the prefill ids run out
    } else if (slots) {
      prefill = atomicAdd(sm_counter, 1) < args.pod_prefill_slots;
      if (!prefill) atomicSub(sm_counter, 1);
    } else {
      // Tickets 0 and 1 of every SM: one prefill (the longest tiles come first, so the critical
      // path starts at once) and one decode; later tickets alternate in proportion to the counts.
      const long long ticket = atomicAdd(sm_counter, 1);
      const long long total = static_cast<long long>(args.num_prefill_ctas) + args.num_decode_ctas;
      prefill = ticket == 0   ? true
                : ticket == 1 ? false
                              : ((ticket - 1) * args.num_prefill_ctas) / total >
                                    ((ticket - 2) * args.num_prefill_ctas) / total;
    }
    int id;
    if (prefill) {
      id = atomicAdd(&args.next_ids[0], 1);
      if (id >= args.num_prefill_ctas) {
        prefill = false;
        id = atomicAdd(&args.next_ids[1], 1);
        if (slots) atomicSub(sm_counter, 1);
      }
    } else {
      id = atomicAdd(&args.next_ids[1], 1);
      if (id >= args.num_decode_ctas) {
        prefill = true;
        id = atomicAdd(&args.next_ids[0], 1);
        if (slots) atomicAdd(sm_counter, 1);
      }
    }
    role_and_id = prefill ? id : -id - 1;
  }
  __syncthreads();
  const int role = role_and_id;
  if (role >= 0) {
    device::prefill_tile<D, kM, Cfg::kPrefillKeys>(args, role, smem);
    // The slot frees when this thread is done (the other warps finish within the same step).
    if (slots && threadIdx.x == 0) atomicSub(sm_counter, 1);
  } else {
    const int warp = static_cast<int>(threadIdx.x >> 5);
    const int item = (-role - 1) * kWarpsPerCta + warp;
    if (item >= device::decode_item_count(args)) return;
    device::decode_item<D, Cfg::kDecodeStages>(
        args, item, smem + warp * device::decode_warp_smem_bytes<D, Cfg::kDecodeStages>());
  }
}

// Every launch goes through here: raises the dynamic shared-memory limit, launches, and checks
// the launch error.
template <typename Kernel>
Status launch(Kernel kernel, int grid, int smem_bytes, cudaStream_t stream,
              const KernelArgs& args) {
  if (grid <= 0) return Status::Ok();
  PODSERVE_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  kernel<<<grid, kThreadsPerCta, smem_bytes, stream>>>(args);
  PODSERVE_CHECK(cudaGetLastError());
  return Status::Ok();
}

Status validate(const HybridAttentionParams& p, const HybridAttentionPlan& plan,
                const void* workspace) {
  if (p.head_dim != plan.head_dim)
    return invalid_argument("attention: head_dim differs from the plan");
  if (p.num_kv_heads <= 0 || p.num_q_heads % p.num_kv_heads != 0 ||
      p.num_q_heads / p.num_kv_heads != plan.group_size)
    return invalid_argument("attention: head counts differ from the plan");
  if (p.page_size != kDecodeKeysPerStage)
    return invalid_argument("attention: page_size must be 16");
  if (workspace == nullptr) return invalid_argument("attention: null workspace");
  const bool any = p.num_prefill_seqs + p.num_decode_seqs > 0;
  if (any && (p.q == nullptr || p.out == nullptr || p.kv == nullptr || p.query_offsets == nullptr ||
              p.num_new_tokens == nullptr || p.num_cached_tokens == nullptr ||
              p.page_table_offsets == nullptr || p.page_table == nullptr))
    return invalid_argument("attention: null device pointer in params");
  return Status::Ok();
}

KernelArgs make_args(const HybridAttentionParams& p, const HybridAttentionPlan& plan,
                     void* workspace) {
  auto* base = static_cast<char*>(workspace);
  KernelArgs args{};
  args.params = p;
  args.prefill_items = reinterpret_cast<const PrefillWorkItem*>(base + plan.prefill_items_offset);
  args.decode_items = reinterpret_cast<const DecodeWorkItem*>(base + plan.decode_items_offset);
  args.merge_items = reinterpret_cast<const DecodeMergeItem*>(base + plan.merge_items_offset);
  args.partial_out = reinterpret_cast<float*>(base + plan.partial_out_offset);
  args.partial_lse = reinterpret_cast<float*>(base + plan.partial_lse_offset);
  args.sm_tickets = reinterpret_cast<int*>(base);
  args.next_ids = reinterpret_cast<int*>(base) + kPodCounterSlots;
  args.num_prefill_ctas = plan.prefill_ctas;
  args.num_decode_ctas = plan.decode_ctas;
  args.pod_policy = static_cast<int>(plan.pod_policy);
  args.pod_prefill_slots = plan.pod_prefill_slots;
  args.num_decode_items = plan.decode_item_bound;
  args.num_merge_items = plan.merge_item_bound;
  args.item_counts =
      plan.counts_offset != 0 ? reinterpret_cast<const int*>(base + plan.counts_offset) : nullptr;
  args.scale_log2 = p.scale * device::kLog2e;
  return args;
}

// Runtime head_dim -> template constant; unsupported values are errors.
template <typename F>
Status dispatch_head_dim(int head_dim, F&& f) {
  switch (head_dim) {
    case 64: return f(std::integral_constant<int, 64>{});
    case 128: return f(std::integral_constant<int, 128>{});
    default:
      return invalid_argument("attention: head_dim " + std::to_string(head_dim) + " unsupported");
  }
}

template <int D>
Status launch_prefill(const KernelArgs& args, const HybridAttentionPlan& plan,
                      cudaStream_t stream) {
  switch (plan.prefill_rows_per_cta) {
    case 128:
      return launch(prefill_kernel<D, 2>, args.num_prefill_ctas, prefill_smem<D, 2, 2>(), stream,
                    args);
    case 64:
      return launch(prefill_kernel<D, 1>, args.num_prefill_ctas, prefill_smem<D, 2, 1>(), stream,
                    args);
    default: return invalid_argument("attention: prefill_rows_per_cta must be 64 or 128");
  }
}

// The decode kernel and the merge as dependent launches (dependent_launch.cuh): both begin by
// waiting for the kernels before them.
template <typename Kernel>
Status launch_after(Kernel kernel, int grid, int smem_bytes, cudaStream_t stream,
                    const KernelArgs& args) {
  if (grid <= 0) return Status::Ok();
  PODSERVE_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  return launch_dependent(kernel, dim3(grid), dim3(kThreadsPerCta),
                          static_cast<std::size_t>(smem_bytes), stream, args);
}

int merge_ctas(const KernelArgs& args) {
  return args.num_merge_items * (args.params.num_q_heads / args.params.num_kv_heads);
}

template <int D>
Status launch_decode(const KernelArgs& args, cudaStream_t stream) {
  PODSERVE_RETURN_IF_ERROR(
      launch_after(decode_kernel<D>, args.num_decode_ctas, decode_smem<D, 2, 1>(), stream, args));
  return launch_after(merge_kernel<D>, merge_ctas(args), 0, stream, args);
}

}  // namespace

Status upload_plan(const HybridAttentionPlan& plan, void* workspace, void* stream) {
  if (workspace == nullptr) return invalid_argument("upload_plan: null workspace");
  if (plan.static_image.empty()) return Status::Ok();
  PODSERVE_CHECK(cudaMemcpyAsync(static_cast<char*>(workspace) + plan.counters_bytes,
                                 plan.static_image.data(), plan.static_image.size(),
                                 cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)));
  return Status::Ok();
}

Status run_prefill(const HybridAttentionParams& params, const HybridAttentionPlan& plan,
                   void* workspace, void* stream) {
  PODSERVE_RETURN_IF_ERROR(validate(params, plan, workspace));
  const KernelArgs args = make_args(params, plan, workspace);
  return dispatch_head_dim(params.head_dim, [&](auto d) {
    return launch_prefill<decltype(d)::value>(args, plan, static_cast<cudaStream_t>(stream));
  });
}

Status run_decode(const HybridAttentionParams& params, const HybridAttentionPlan& plan,
                  void* workspace, void* stream) {
  PODSERVE_RETURN_IF_ERROR(validate(params, plan, workspace));
  const KernelArgs args = make_args(params, plan, workspace);
  return dispatch_head_dim(params.head_dim, [&](auto d) {
    return launch_decode<decltype(d)::value>(args, static_cast<cudaStream_t>(stream));
  });
}

Status run_serial(const HybridAttentionParams& params, const HybridAttentionPlan& plan,
                  void* workspace, void* stream) {
  PODSERVE_RETURN_IF_ERROR(validate(params, plan, workspace));
  const KernelArgs args = make_args(params, plan, workspace);
  auto s = static_cast<cudaStream_t>(stream);
  return dispatch_head_dim(params.head_dim, [&](auto d) -> Status {
    PODSERVE_RETURN_IF_ERROR(launch_prefill<decltype(d)::value>(args, plan, s));
    return launch_decode<decltype(d)::value>(args, s);
  });
}

Status run_streams(const HybridAttentionParams& params, const HybridAttentionPlan& plan,
                   void* workspace, void* stream, void* side_stream) {
  PODSERVE_RETURN_IF_ERROR(validate(params, plan, workspace));
  if (side_stream == nullptr || side_stream == stream)
    return invalid_argument("run_streams: side_stream must be a second, non-null stream");
  const KernelArgs args = make_args(params, plan, workspace);
  auto main = static_cast<cudaStream_t>(stream);
  auto side = static_cast<cudaStream_t>(side_stream);
  cudaEvent_t fork = nullptr;
  cudaEvent_t join = nullptr;
  PODSERVE_CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  cudaError_t created = cudaEventCreateWithFlags(&join, cudaEventDisableTiming);
  if (created != cudaSuccess) {
    cudaEventDestroy(fork);
    PODSERVE_CHECK(created);
  }
  Status status = [&]() -> Status {
    PODSERVE_CHECK(cudaEventRecord(fork, main));
    PODSERVE_CHECK(cudaStreamWaitEvent(side, fork, 0));
    PODSERVE_RETURN_IF_ERROR(dispatch_head_dim(params.head_dim, [&](auto d) -> Status {
      PODSERVE_RETURN_IF_ERROR(launch_prefill<decltype(d)::value>(args, plan, main));
      return launch_decode<decltype(d)::value>(args, side);
    }));
    PODSERVE_CHECK(cudaEventRecord(join, side));
    PODSERVE_CHECK(cudaStreamWaitEvent(main, join, 0));
    return Status::Ok();
  }();
  cudaEventDestroy(fork);  // released once the pending work completes
  cudaEventDestroy(join);
  return status;
}

Status run_pod(const HybridAttentionParams& params, const HybridAttentionPlan& plan,
               void* workspace, void* stream) {
  PODSERVE_RETURN_IF_ERROR(validate(params, plan, workspace));
  const KernelArgs args = make_args(params, plan, workspace);
  auto s = static_cast<cudaStream_t>(stream);
  PODSERVE_CHECK(cudaMemsetAsync(workspace, 0, plan.counters_bytes, s));
  const int grid = plan.prefill_ctas + plan.decode_ctas;
  return dispatch_head_dim(params.head_dim, [&](auto d) -> Status {
    constexpr int kD = decltype(d)::value;
    const int variant = plan.pod_ctas_per_sm * 1000 + plan.prefill_rows_per_cta;
    switch (variant) {
      case 2128:
        PODSERVE_RETURN_IF_ERROR(launch(pod_kernel<kD, 2, 2>, grid, pod_smem<kD, 2, 2>(), s, args));
        break;
      case 2064:
        PODSERVE_RETURN_IF_ERROR(launch(pod_kernel<kD, 2, 1>, grid, pod_smem<kD, 2, 1>(), s, args));
        break;
      case 4064:
        PODSERVE_RETURN_IF_ERROR(launch(pod_kernel<kD, 4, 1>, grid, pod_smem<kD, 4, 1>(), s, args));
        break;
      default:
        return invalid_argument("run_pod: unsupported (pod_ctas_per_sm, prefill_rows_per_cta) = (" +
                                std::to_string(plan.pod_ctas_per_sm) + ", " +
                                std::to_string(plan.prefill_rows_per_cta) + ")");
    }
    return launch_after(merge_kernel<kD>, merge_ctas(args), 0, s, args);
  });
}

}  // namespace podserve::cuda
