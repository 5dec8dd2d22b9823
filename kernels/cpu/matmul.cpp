#include "kernels/cpu/matmul.h"

#include <algorithm>

namespace podserve::cpu {
namespace {

// Each dot product keeps kLanes independent partial sums, so the inner loop is a set of
// independent multiply-adds the compiler vectorizes without reassociating (no -ffast-math).
constexpr std::int64_t kLanes = 4;
// Register tile: kTileRows rows of x against kTileCols rows of w (8 accumulator vectors).
constexpr std::int64_t kTileRows = 2;
constexpr std::int64_t kTileCols = 4;
// Cache blocks: a panel of w rows and a slice of K that stay in L2 while every row of x
// streams past them.
constexpr std::int64_t kPanelBytes = 128 * 1024;
constexpr std::int64_t kDepthBlock = 512;

// y[i, j] (+)= sum over k in [0, depth) of x[i, k] * w[j, k] for a rows x cols tile.
template <std::int64_t kRows, std::int64_t kCols>
inline void tile_kernel(const float* x, const float* w, float* y, std::int64_t ld_in,
                        std::int64_t ld_out, std::int64_t depth, bool accumulate) {
  float acc[kRows][kCols][kLanes] = {};
  std::int64_t kk = 0;
  for (; kk + kLanes <= depth; kk += kLanes) {
    for (std::int64_t i = 0; i < kRows; ++i) {
      for (std::int64_t j = 0; j < kCols; ++j) {
        for (std::int64_t l = 0; l < kLanes; ++l) {
          acc[i][j][l] += x[i * ld_in + kk + l] * w[j * ld_in + kk + l];
        }
      }
    }
  }
  for (std::int64_t i = 0; i < kRows; ++i) {
    for (std::int64_t j = 0; j < kCols; ++j) {
      float sum = (acc[i][j][0] + acc[i][j][1]) + (acc[i][j][2] + acc[i][j][3]);
      for (std::int64_t t = kk; t < depth; ++t) sum += x[i * ld_in + t] * w[j * ld_in + t];
      float& out = y[i * ld_out + j];
      out = accumulate ? out + sum : sum;
    }
  }
}

template <std::int64_t kRows>
inline void row_block(const float* x, const float* w, float* y, std::int64_t ld_in,
                      std::int64_t ld_out, std::int64_t depth, std::int64_t cols, bool accumulate) {
  std::int64_t j = 0;
  for (; j + kTileCols <= cols; j += kTileCols) {
    tile_kernel<kRows, kTileCols>(x, w + j * ld_in, y + j, ld_in, ld_out, depth, accumulate);
  }
  for (; j < cols; ++j) {
    tile_kernel<kRows, 1>(x, w + j * ld_in, y + j, ld_in, ld_out, depth, accumulate);
  }
}

}  // namespace

void matmul_f32(const float* x, const float* w, float* y, std::int64_t m, std::int64_t k,
                std::int64_t n) {
  static_assert(kLanes == 4, "the lane reduction in tile_kernel is written for 4 lanes");
  const std::int64_t depth_block =
      std::min<std::int64_t>(std::max<std::int64_t>(k, 1), kDepthBlock);
  const std::int64_t panel_rows = std::max<std::int64_t>(
      kTileCols, kPanelBytes / (depth_block * static_cast<std::int64_t>(sizeof(float))));
  if (k == 0) {
    std::fill(y, y + m * n, 0.0f);
    return;
  }
  for (std::int64_t k0 = 0; k0 < k; k0 += depth_block) {
    const std::int64_t depth = std::min(depth_block, k - k0);
    const bool accumulate = k0 > 0;
    for (std::int64_t n0 = 0; n0 < n; n0 += panel_rows) {
      const std::int64_t cols = std::min(panel_rows, n - n0);
      const float* w_panel = w + n0 * k + k0;
      std::int64_t i = 0;
      for (; i + kTileRows <= m; i += kTileRows) {
        row_block<kTileRows>(x + i * k + k0, w_panel, y + i * n + n0, k, n, depth, cols,
                             accumulate);
      }
      for (; i < m; ++i) {
        row_block<1>(x + i * k + k0, w_panel, y + i * n + n0, k, n, depth, cols, accumulate);
      }
    }
  }
}

}  // namespace podserve::cpu
