// Internal to kernels/cuda: Hopper warpgroup MMA (wgmma, sm_90a) wrappers for the prefill tile.
// A warpgroup is the 4 warps of a 128-thread CTA; every thread of it must execute each call.
//
// Shared-memory operands use the 128-byte swizzle: a tile of R rows x 64 bf16 (128 bytes) is a
// "panel", 1024-byte aligned, whose 16-byte chunk c of row r sits at chunk c ^ (r & 7); a
// [R][D] tile is D / 64 panels one after another. K-major operands (Q, K: the reduction dim is
// contiguous) advance 32 bytes per k16 step inside a panel and jump panels every 4 steps;
// MN-major operands (V: the output dim is contiguous) step 16 rows (2048 bytes) per k16 step
// with the panel stride as the leading byte offset.
//
// Accumulators: thread t of the warpgroup holds rows 16 * (t / 32) + (t % 32) / 4 (+8) and, for
// every 8-column block j, columns 8j + 2 (t % 4) + {0, 1}: d[4j + {0, 1}] on the first row,
// d[4j + {2, 3}] on the second (the mma.sync m16n8 layout, one warp per 16 rows). The register
// A operand of a k16 step uses the same layout (bf16 pairs), so softmax output feeds P V directly.
#pragma once

#include <cstdint>

namespace podserve::cuda::device {

// 64-bit shared-memory matrix descriptor, 128-byte swizzle, base offset 0 (panels 1024-aligned).
__device__ __forceinline__ std::uint64_t wgmma_desc(std::uint32_t smem_byte_address,
                                                    std::uint32_t leading_byte_offset,
                                                    std::uint32_t stride_byte_offset) {
  std::uint64_t desc = (smem_byte_address & 0x3FFFFu) >> 4;
  desc |= static_cast<std::uint64_t>((leading_byte_offset >> 4) & 0x3FFFu) << 16;
  desc |= static_cast<std::uint64_t>((stride_byte_offset >> 4) & 0x3FFFu) << 32;
  desc |= static_cast<std::uint64_t>(1) << 62;
  return desc;
}

// Orders register writes before the next wgmma reads its accumulator or A registers.
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Waits until at most N committed groups are pending (groups complete in order).
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Makes generic-proxy shared-memory writes (cp.async, st.shared) visible to wgmma; each writing
// thread runs it after its writes and before the barrier that publishes them.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Pins accumulator registers across an in-flight wgmma: the compiler may not move or reuse them.
template <int N>
__device__ __forceinline__ void wgmma_pin(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d[16] (+)= A * B, m64n32k16: A (Q-like, K-major) and B (K-major) in shared memory.
__device__ __forceinline__ void wgmma_ss_n32(float (&d)[16], std::uint64_t desc_a,
                                             std::uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// d[32] (+)= A * B, m64n64k16: A (Q-like, K-major) and B (K-major) in shared memory.
__device__ __forceinline__ void wgmma_ss_n64(float (&d)[32], std::uint64_t desc_a,
                                             std::uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// d[32] += A * B, m64n64k16: A in registers (the accumulator layout, bf16 pairs), B in shared
// memory MN-major (transposed).
__device__ __forceinline__ void wgmma_rs_tb_n64(float (&d)[32], const std::uint32_t (&a)[4],
                                                std::uint64_t desc_b) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, 1, 1, 1, 1;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

// d[64] += A * B, m64n128k16: A in registers (the accumulator layout, bf16 pairs), B in shared
// memory MN-major (transposed).
__device__ __forceinline__ void wgmma_rs_tb_n128(float (&d)[64], const std::uint32_t (&a)[4],
                                                 std::uint64_t desc_b) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%"
      "48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, 1, "
      "1, 1, 1;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

// Shape dispatch: S = Q K^T over N keys; O += P V over N output columns.
template <int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], std::uint64_t desc_a,
                                         std::uint64_t desc_b, int accumulate) {
  static_assert(N == 32 || N == 64, "wgmma_ss: N must be 32 or 64");
  if constexpr (N == 32)
    wgmma_ss_n32(d, desc_a, desc_b, accumulate);
  else
    wgmma_ss_n64(d, desc_a, desc_b, accumulate);
}
template <int N>
__device__ __forceinline__ void wgmma_rs_tb(float (&d)[N / 2], const std::uint32_t (&a)[4],
                                            std::uint64_t desc_b) {
  static_assert(N == 64 || N == 128, "wgmma_rs_tb: N must be 64 or 128");
  if constexpr (N == 64)
    wgmma_rs_tb_n64(d, a, desc_b);
  else
    wgmma_rs_tb_n128(d, a, desc_b);
}

}  // namespace podserve::cuda::device
