#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "kernels/bench/roofline.h"

namespace podserve::bench {
namespace {

void check(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return;
  std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(error));
  std::exit(1);
}

cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

__global__ void fill_kernel(__nv_bfloat16* data, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint32_t h =
        static_cast<std::uint32_t>(i) * 2654435761u ^ seed ^ static_cast<std::uint32_t>(i >> 32);
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    data[i] = __float2bfloat16(static_cast<float>(h) * (2.0f / 4294967296.0f) - 1.0f);
  }
}

// Reads every 16-byte word once (grid-stride, coalesced); writes one word per CTA only if the
// XOR of everything it read is a value random data never gives, so the loads stay.
__global__ void read_kernel(const uint4* data, std::size_t n, unsigned* sink) {
  uint4 acc = make_uint4(0, 0, 0, 0);
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(data + i);
    acc.x ^= v.x;
    acc.y ^= v.y;
    acc.z ^= v.z;
    acc.w ^= v.w;
  }
  if ((acc.x & acc.y & acc.z & acc.w) == 0xffffffffu) sink[blockIdx.x] = acc.x;
}

}  // namespace

double Roofline::bound_ms(double flops, double bytes) const {
  return 1e3 * std::max(flops / gemm_flops_per_s, bytes / read_bytes_per_s);
}

std::string Roofline::describe() const {
  char line[512];
  std::snprintf(line, sizeof(line),
                "%s (%d SMs, L2 %d MiB): read %.2f TB/s (read-only kernel; spec %.2f TB/s), "
                "copy %.2f TB/s (read + write), bf16 GEMM %.0f TFLOP/s",
                card.c_str(), num_sms, l2_bytes >> 20, read_bytes_per_s / 1e12,
                spec_bytes_per_s / 1e12, copy_bytes_per_s / 1e12, gemm_flops_per_s / 1e12);
  return line;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> values;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const std::size_t end = std::min(text.find(',', begin), text.size());
    std::string item = text.substr(begin, end - begin);
    int scale = 1;
    if (!item.empty() && (item.back() == 'K' || item.back() == 'k')) {
      scale = 1024;
      item.pop_back();
    }
    if (!item.empty()) values.push_back(std::atoi(item.c_str()) * scale);
    begin = end + 1;
  }
  return values;
}

GpuTimer::GpuTimer() {
  check(cudaEventCreate(reinterpret_cast<cudaEvent_t*>(&start_)), "cudaEventCreate");
  check(cudaEventCreate(reinterpret_cast<cudaEvent_t*>(&stop_)), "cudaEventCreate");
}
GpuTimer::~GpuTimer() {
  cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}
void GpuTimer::start(void* stream) {
  check(cudaEventRecord(static_cast<cudaEvent_t>(start_), as_stream(stream)), "cudaEventRecord");
}
void GpuTimer::stop(void* stream) {
  check(cudaEventRecord(static_cast<cudaEvent_t>(stop_), as_stream(stream)), "cudaEventRecord");
}
double GpuTimer::elapsed_ms() {
  check(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)), "cudaEventSynchronize");
  float ms = 0;
  check(
      cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)),
      "cudaEventElapsedTime");
  return ms;
}

double median_ms(const std::function<void()>& enqueue, void* stream, int warmup, int runs,
                 std::size_t flush_bytes) {
  void* flush = nullptr;
  if (flush_bytes > 0) check(cudaMalloc(&flush, flush_bytes), "cudaMalloc (L2 flush)");
  for (int i = 0; i < warmup; ++i) enqueue();
  check(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize");
  GpuTimer timer;
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    if (flush != nullptr)
      check(cudaMemsetAsync(flush, i & 0xff, flush_bytes, as_stream(stream)), "cudaMemsetAsync");
    timer.start(stream);
    enqueue();
    timer.stop(stream);
    times.push_back(timer.elapsed_ms());
  }
  if (flush != nullptr) cudaFree(flush);
  return median(times);
}

void fill_random_bf16(void* data, std::size_t count, std::uint32_t seed, void* stream) {
  fill_kernel<<<1024, 256, 0, as_stream(stream)>>>(static_cast<__nv_bfloat16*>(data), count, seed);
  check(cudaGetLastError(), "fill_random_bf16");
}

Roofline measure_roofline(int device, void* stream) {
  check(cudaSetDevice(device), "cudaSetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  Roofline r;
  r.card = prop.name;
  r.num_sms = prop.multiProcessorCount;
  r.l2_bytes = prop.l2CacheSize;
  int memory_khz = 0, bus_bits = 0;
  cudaDeviceGetAttribute(&memory_khz, cudaDevAttrMemoryClockRate, device);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device);
  r.spec_bytes_per_s = 2.0 * memory_khz * 1e3 * bus_bits / 8.0;

  const std::size_t bytes = std::size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  unsigned* sink = nullptr;
  check(cudaMalloc(&a, bytes), "cudaMalloc");
  check(cudaMalloc(&b, bytes), "cudaMalloc");
  const int read_ctas = r.num_sms * 8;
  check(cudaMalloc(&sink, read_ctas * sizeof(unsigned)), "cudaMalloc");
  fill_random_bf16(a, bytes / 2, 1, stream);
  const double read_ms = median_ms(
      [&] {
        read_kernel<<<read_ctas, 512, 0, as_stream(stream)>>>(static_cast<const uint4*>(a),
                                                              bytes / sizeof(uint4), sink);
        check(cudaGetLastError(), "read_kernel");
      },
      stream, 3, 20);
  r.read_bytes_per_s = bytes / (read_ms * 1e-3);
  const double copy_ms = median_ms(
      [&] {
        check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, as_stream(stream)),
              "cudaMemcpyAsync");
      },
      stream, 3, 20);
  r.copy_bytes_per_s = 2.0 * bytes / (copy_ms * 1e-3);
  cudaFree(sink);
  cudaFree(b);

  const int n = 8192;
  const std::size_t elems = static_cast<std::size_t>(n) * n;  // 3 x 128 MiB within `a`
  char* base = static_cast<char*>(a);
  void* ga = base;
  void* gb = base + elems * 2;
  void* gc = base + elems * 4;
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cublasCreate failed\n");
    std::exit(1);
  }
  cublasSetStream(handle, as_stream(stream));
  const float alpha = 1.0f, beta = 0.0f;
  const double gemm_ms = median_ms(
      [&] {
        if (cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, ga, CUDA_R_16BF, n, gb,
                         CUDA_R_16BF, n, &beta, gc, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
          std::fprintf(stderr, "cublasGemmEx failed\n");
          std::exit(1);
        }
      },
      stream, 3, 20);
  r.gemm_flops_per_s = 2.0 * n * static_cast<double>(n) * n / (gemm_ms * 1e-3);
  cublasDestroy(handle);
  cudaFree(a);
  return r;
}

}  // namespace podserve::bench
