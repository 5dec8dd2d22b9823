#!/usr/bin/env bash
# README command 2 (and .ci/run): install, build everything (the CUDA backend and kernels too
# where a CUDA compiler is found: deploy/lib/detect-cuda.sh, the rule deploy/quickstart.sh
# follows too), run every test. GPU tests skip with a reason on machines without a GPU.
#
# Builds in BUILD_DIR (default build-tests, its own directory: deploy/quickstart.sh's build has
# no tests) with the options passed on every run, so whatever configured BUILD_DIR before does
# not change what this builds; ctest fails when it finds no test.
#
# Environment:
#   BUILD_DIR         build directory (default build-tests)
#   PODSERVE_DRY_RUN  1: install and configure, print the build and test commands, stop (exit 0)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build-tests}
bash deploy/setup.sh
source deploy/lib/detect-cuda.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPODSERVE_ENABLE_CUDA="$PODSERVE_CUDA" -DPODSERVE_BUILD_TESTS=ON
build_command=(cmake --build "$build" -j "$(nproc)")
test_command=(ctest --test-dir "$build" --output-on-failure --no-tests=error -j "$(nproc)" --timeout 600)
if [ "${PODSERVE_DRY_RUN:-0}" = 1 ]; then
  echo "dry run: configured $build; would run: ${build_command[*]} && ${test_command[*]}"
  exit 0
fi
"${build_command[@]}"
"${test_command[@]}"
