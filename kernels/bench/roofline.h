// The benches' shared measurement kit (kernels/bench/roofline.cu): the card's bounds measured in
// the same process as the work they bound, GPU event timing, and random device fills. One
// timing harness and one bound calculation for podserve-kernel-bench and podserve-engine-bench.
// No CUDA header here: streams are cudaStream_t passed as void*.
//
// Method: read bandwidth from a read-only streaming kernel over 2 GiB (every byte read once,
// nothing written but one word per CTA), which is what decode attention and weight reads do; the
// device-to-device copy rate (read + write) is reported beside it but is not a bound on reads.
// GEMM rate from cuBLAS bf16 8192^3 with fp32 accumulation. Each is the median of 20 event-timed
// runs after warm-up, on random (never zero) data. Errors end the process with a message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace podserve::bench {

struct Roofline {
  std::string card;
  int num_sms = 0;
  int l2_bytes = 0;
  double read_bytes_per_s = 0;  // read-only streaming kernel
  double copy_bytes_per_s = 0;  // device-to-device copy, read + write bytes
  double spec_bytes_per_s = 0;  // memory clock x bus width x 2 from the device properties
  double gemm_flops_per_s = 0;  // cuBLAS bf16 GEMM 8192^3

  // max(flops / GEMM rate, bytes read / read bandwidth), in milliseconds.
  double bound_ms(double flops, double bytes) const;
  // One line naming the card and the four figures.
  std::string describe() const;
};

// Measures device `device` (made current) on `stream`.
Roofline measure_roofline(int device, void* stream);

// Median milliseconds of `runs` event-timed calls of `enqueue` (which queues work on `stream`)
// after `warmup` untimed ones; with flush_bytes > 0 an L2 flush (a memset of a scratch buffer of
// that size) precedes every timed call, outside the timed span.
double median_ms(const std::function<void()>& enqueue, void* stream, int warmup, int runs,
                 std::size_t flush_bytes = 0);

// GPU time between two points of a stream (an event pair).
class GpuTimer {
 public:
  GpuTimer();
  ~GpuTimer();
  GpuTimer(const GpuTimer&) = delete;
  GpuTimer& operator=(const GpuTimer&) = delete;
  void start(void* stream);
  void stop(void* stream);
  // Waits for the stop event.
  double elapsed_ms();

 private:
  void* start_ = nullptr;
  void* stop_ = nullptr;
};

// Fills `count` bf16 values at `data` (device) with a hash of (index, seed) in [-1, 1).
void fill_random_bf16(void* data, std::size_t count, std::uint32_t seed, void* stream);

double median(std::vector<double> values);

// "1,8,2K" -> {1, 8, 2048}: a comma-separated list of integers, K = x1024.
std::vector<int> parse_list(const std::string& text);

}  // namespace podserve::bench
