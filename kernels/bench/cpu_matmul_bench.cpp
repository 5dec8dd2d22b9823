// Single-core GFLOP/s of the CPU backend's matmul (y = x · wᵀ) on the shapes of the tiny
// model (hidden 256, intermediate 688, vocab 512) and one larger shape. Prints a table; asserts
// nothing. Usage: cpu_matmul_bench [seconds_per_shape]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/cpu_backend.h"

namespace {

struct Shape {
  std::int64_t m, k, n;
};

}  // namespace

int main(int argc, char** argv) {
  const double seconds_per_shape = argc > 1 ? std::atof(argv[1]) : 0.5;
  const auto backend = podserve::make_cpu_backend();
  const Shape shapes[] = {{256, 256, 688}, {256, 688, 256}, {256, 256, 512},
                          {16, 256, 688},  {1, 256, 688},   {64, 2048, 2048}};
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::printf("%6s %6s %6s %10s %10s\n", "M", "K", "N", "us/call", "GFLOP/s");
  for (const Shape& s : shapes) {
    std::vector<float> x(s.m * s.k), w(s.n * s.k), y(s.m * s.n);
    for (float& v : x) v = dist(rng);
    for (float& v : w) v = dist(rng);
    const auto xv = podserve::make_view(x.data(), podserve::DType::kF32, {s.m, s.k});
    const auto wv = podserve::make_view(w.data(), podserve::DType::kF32, {s.n, s.k});
    const auto yv = podserve::make_view(y.data(), podserve::DType::kF32, {s.m, s.n});
    std::int64_t calls = 0;
    double elapsed = 0.0;
    const auto start = std::chrono::steady_clock::now();
    while (elapsed < seconds_per_shape) {
      const podserve::Status status = backend->matmul(xv, wv, yv);
      if (!status.ok()) {
        std::fprintf(stderr, "%s\n", status.to_string().c_str());
        return 1;
      }
      ++calls;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    const double flops = 2.0 * static_cast<double>(s.m * s.k * s.n) * static_cast<double>(calls);
    std::printf("%6ld %6ld %6ld %10.1f %10.2f\n", static_cast<long>(s.m), static_cast<long>(s.k),
                static_cast<long>(s.n), elapsed / static_cast<double>(calls) * 1e6,
                flops / elapsed / 1e9);
  }
  return 0;
}
