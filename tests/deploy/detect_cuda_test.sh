#!/usr/bin/env bash
# deploy/lib/detect-cuda.sh, the one CUDA rule of deploy/quickstart.sh and deploy/test.sh: a CUDA
# build exactly where a CUDA compiler is found, never on a GPU driver alone. First the rule in a
# PATH that holds only fakes (no host tool can leak in), then both scripts up to their configure
# step on a host that has a GPU driver (a fake nvidia-smi) but no nvcc: they must configure a CPU
# build and say why.
# Usage: detect_cuda_test.sh SOURCE_DIR
set -uo pipefail
source_dir=$(cd "$1" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

fake_tool() {  # fake_tool DIR NAME: an executable NAME in DIR that answers like the real one
  mkdir -p "$1"
  printf '#!/bin/sh\necho "%s: fake"\n' "$2" >"$1/$2"
  chmod +x "$1/$2"
}
fake_tool "$work/driver" nvidia-smi
fake_tool "$work/toolkit/bin" nvcc
fake_tool "$work/on-path" nvcc
mkdir -p "$work/empty"

# detect PATH CUDA_HOME: sources the rule in a shell with exactly that PATH; prints
# "<PODSERVE_CUDA> <PATH after> <the rule's line>".
detect() {
  env -i PATH="$1" CUDA_HOME="$2" /bin/bash -c \
    'line=$(source "$0"); source "$0" >/dev/null; echo "$PODSERVE_CUDA|$PATH|$line"' \
    "$source_dir/deploy/lib/detect-cuda.sh"
}
expect() {  # expect NAME RESULT CUDA PATH LINE_PATTERN
  local cuda path line
  IFS='|' read -r cuda path line <<<"$2"
  [ "$cuda" = "$3" ] || fail "$1: PODSERVE_CUDA=$cuda, expected $3 ($line)"
  [ "$path" = "$4" ] || fail "$1: PATH=$path, expected $4"
  [[ "$line" == $5 ]] || fail "$1: said '$line', expected '$5'"
}

expect "no driver, no toolkit" "$(detect "$work/empty" "$work/none")" OFF "$work/empty" \
  "cuda: OFF (no nvcc on PATH*"
expect "driver only" "$(detect "$work/driver" "$work/none")" OFF "$work/driver" \
  "cuda: OFF (a GPU driver is present but no CUDA compiler*"
expect "driver, toolkit off PATH" "$(detect "$work/driver" "$work/toolkit")" ON \
  "$work/toolkit/bin:$work/driver" "cuda: ON (nvcc at $work/toolkit/bin/nvcc)"
expect "nvcc on PATH" "$(detect "$work/on-path:$work/driver" "$work/toolkit")" ON \
  "$work/on-path:$work/driver" "cuda: ON (nvcc at $work/on-path/nvcc)"

# Both scripts, up to their configure step, on this host's tools with any nvcc hidden and the
# fake driver in front: a CPU build, configured with the options each script promises.
host_path=
IFS=':' read -r -a dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  if [ ! -x "$dir/nvcc" ]; then
    host_path=${host_path:+$host_path:}$dir
  elif [ -x "$dir/cmake" ] || [ -x "$dir/bash" ]; then
    echo "SKIP: nvcc is in $dir beside the build tools: cannot hide it from the scripts"
    exit 77
  fi
done
cache_value() { sed -n "s/^$2:[A-Z]*=//p" "$1/CMakeCache.txt"; }
for script in quickstart test; do
  build=$work/build-$script
  output=$(cd "$work" && PATH="$work/driver:$host_path" CUDA_HOME="$work/none" \
    PODSERVE_DRY_RUN=1 BUILD_DIR="$build" bash "$source_dir/deploy/$script.sh" 2>&1)
  status=$?
  [ $status -eq 0 ] || { fail "$script.sh dry run exited $status:"; echo "$output"; continue; }
  grep -q "^cuda: OFF (a GPU driver is present but no CUDA compiler" <<<"$output" ||
    fail "$script.sh did not say why it builds without CUDA: $output"
  [ "$(cache_value "$build" PODSERVE_ENABLE_CUDA)" = OFF ] || fail "$script.sh configured CUDA on"
  grep -q "^dry run: configured $build" <<<"$output" || fail "$script.sh: no dry-run line: $output"
done
[ "$(cache_value "$work/build-quickstart" PODSERVE_BUILD_TESTS)" = OFF ] ||
  fail "quickstart.sh builds tests"
[ "$(cache_value "$work/build-test" PODSERVE_BUILD_TESTS)" = ON ] || fail "test.sh builds no tests"

[ $failures -eq 0 ] && echo "PASS: the CUDA rule and both scripts' configure steps"
exit $((failures > 0))
