#!/usr/bin/env bash
# README command 2 (and .ci/run): install, build (CUDA kernels too when a CUDA compiler is
# present), run every test. GPU tests skip with a reason on machines without a GPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
bash deploy/setup.sh
# CUDA toolkits install nvcc outside PATH; let CMake find it there.
[ -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null && export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 600
