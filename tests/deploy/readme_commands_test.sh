#!/usr/bin/env bash
# Every command in the README's ```sh blocks, in the README's order, in a fresh copy of the
# repository (its tracked and unignored files: what a clone holds), checked for the exit code the
# README promises. A README command this test does not know fails it, so the README cannot grow a
# command nobody runs.
#
# What runs as shown and what stops early (the suite must stay within minutes on 2 cores, and
# command 2 runs this suite):
#   bash deploy/quickstart.sh   up to its configure step (PODSERVE_DRY_RUN=1) twice, on a host
#                               with a GPU driver but no nvcc (a fake nvidia-smi, nvcc hidden) and
#                               on this host as it is: exit 0, the configure options the README
#                               states, a build plan with every binary the README uses; then the
#                               whole run on the binaries of this build (PODSERVE_BIN_DIR): exit 0
#   bash deploy/test.sh         up to its configure step, both hosts: exit 0, tests on, its own
#                               build directory
#   cmake -S . -B build ...     configure as shown, the build as a plan (ninja -n); build/bin is
#                               then this build's bin directory, for the commands after it
#   deploy/mpirun.sh (tiny), curl, kill, build/bin/podserve-ab: as shown, exit 0
#   build/bin/podserve-capacity  as shown: exit 0, the report with its verdict first and every
#                               plot it links, written where the command says
#   deploy/mpirun.sh (GPU configs)  up to mpirun (PODSERVE_DRY_RUN=1) with a fake nvidia-smi:
#                               exit 0 on a CUDA build, 2 (one line naming the key) without one
# A command identical to one already run is not run again.
# Usage: readme_commands_test.sh SOURCE_DIR BUILD_DIR (BUILD_DIR: a build with every binary)
set -uo pipefail
source_dir=$(cd "$1" && pwd)
build_dir=$(cd "$2" && pwd)
work=$(mktemp -d)
service=
cleanup() {
  [ -z "$service" ] || kill -TERM "$service" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
log() { echo "== $*"; }

# The shipped configs serve on 127.0.0.1:8000 and /metrics from 9400: skip where they are taken.
for port in 8000 9400 9401 9402 9403; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "SKIP: port $port is in use; the README's configs need 8000 and 9400-9403"
    exit 77
  fi
done

if ! git -C "$source_dir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "SKIP: $source_dir is not a git checkout: no clone to copy"
  exit 77
fi
clone=$work/clone
mkdir -p "$clone"
(cd "$source_dir" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done |
  tar --null -T - -cf -) | tar -C "$clone" -xf - || { echo "FAIL: cannot copy the repository"; exit 1; }

# The commands: ```sh blocks, comment lines dropped, continuation lines joined, a trailing
# comment cut.
mapfile -t commands < <(awk '
  /^```sh$/ { in_block = 1; next }
  /^```$/ { in_block = 0; next }
  !in_block || /^[[:space:]]*(#|$)/ { next }
  { line = pending $0; pending = "" }
  line ~ /\\$/ { pending = substr(line, 1, length(line) - 1); next }
  { sub(/[[:space:]]+#.*$/, "", line); sub(/[[:space:]]+$/, "", line); print line }
' "$clone/README.md")
[ ${#commands[@]} -ge 5 ] || fail "found only ${#commands[@]} commands in README.md"

# A host with a GPU driver and no CUDA compiler: a fake nvidia-smi in front, nvcc hidden.
mkdir -p "$work/driver"
printf '#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-fake)"\n' >"$work/driver/nvidia-smi"
chmod +x "$work/driver/nvidia-smi"
no_nvcc_path=
hosts=(driver_only driver_as_is)
IFS=':' read -r -a path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
  if [ ! -x "$dir/nvcc" ]; then
    no_nvcc_path=${no_nvcc_path:+$no_nvcc_path:}$dir
  elif [ -x "$dir/cmake" ] || [ -x "$dir/bash" ]; then
    echo "note: nvcc is in $dir beside the build tools; the driver-only host is not simulated"
    hosts=(driver_as_is)
  fi
done
driver_only=(env "PATH=$work/driver:$no_nvcc_path" CUDA_HOME=/nonexistent)
driver_as_is=(env "PATH=$work/driver:$PATH")

cache_value() { sed -n "s/^$2:[A-Z]*=//p" "$clone/$1/CMakeCache.txt" 2>/dev/null; }
run() {  # run LOG COMMAND...: in the clone, output to LOG; prints nothing, returns the exit code
  (cd "$clone" && timeout 600 "${@:2}") >"$1" 2>&1
}

# Binaries the README names after command 1 (build/bin/NAME), and the service itself.
mapfile -t readme_binaries < <(grep -oE 'build/bin/[a-z0-9-]+' "$clone/README.md" | sort -u |
  sed 's|build/bin/||')
readme_binaries+=(podserve)

dry_configure() {  # dry_configure SCRIPT BUILD TESTS: both hosts, up to the configure step
  local script=$1 build=$2 tests=$3 host status said
  for host in "${hosts[@]}"; do
    local -n host_env=$host
    run "$work/$script-$host.log" "${host_env[@]}" PODSERVE_DRY_RUN=1 bash "deploy/$script.sh"
    status=$?
    [ $status -eq 0 ] || { fail "$script.sh ($host): exit $status"; cat "$work/$script-$host.log"; continue; }
    said=$(grep -oE '^cuda: (ON|OFF)' "$work/$script-$host.log" | cut -d' ' -f2)
    [ -n "$said" ] || fail "$script.sh ($host) did not say whether it builds CUDA"
    [ "$host" != driver_only ] || [ "$said" = OFF ] ||
      fail "$script.sh builds CUDA on a host without nvcc"
    [ "$(cache_value "$build" PODSERVE_ENABLE_CUDA)" = "$said" ] ||
      fail "$script.sh ($host) said cuda $said but configured $(cache_value "$build" PODSERVE_ENABLE_CUDA)"
    [ "$(cache_value "$build" PODSERVE_BUILD_TESTS)" = "$tests" ] ||
      fail "$script.sh ($host): PODSERVE_BUILD_TESTS is not $tests in $build"
  done
}

declare -A already_run=()
for command in "${commands[@]}"; do
  if [ -n "${already_run[$command]:-}" ]; then
    log "already run: $command"
    continue
  fi
  already_run[$command]=1
  log "$command"
  case $command in
    "bash deploy/quickstart.sh")
      dry_configure quickstart build OFF
      [ "$(cache_value build CMAKE_BUILD_TYPE)" = Release ] || fail "quickstart.sh: not a Release build"
      # The build command it would run, as a plan: every binary the README uses must be in it.
      build_command=$(sed -n 's/^dry run: configured [^;]*; would run: //p' \
        "$work/quickstart-driver_as_is.log")
      run "$work/quickstart-plan.log" bash -c "$build_command -- -n" ||
        fail "quickstart.sh: no build plan from '$build_command'"
      for binary in "${readme_binaries[@]}"; do
        grep -qE "executable bin/$binary$" "$work/quickstart-plan.log" ||
          fail "quickstart.sh does not build $binary, which the README uses after it"
      done
      ;&
    *"bash deploy/quickstart.sh")
      run "$work/quickstart-run.log" env PODSERVE_BIN_DIR="$build_dir/bin" bash -c "$command"
      status=$?
      [ $status -eq 0 ] && grep -q "^service stopped cleanly" "$work/quickstart-run.log" ||
        { fail "$command: exit $status"; tail -30 "$work/quickstart-run.log"; }
      ;;
    "bash deploy/test.sh")
      dry_configure test build-tests ON
      grep -q -- "--no-tests=error" "$work/test-driver_as_is.log" ||
        fail "test.sh: its ctest does not fail on finding no test"
      ;;
    "cmake -S . -B build"*)
      run "$work/cmake.log" bash -c "$command -- -n"
      status=$?
      [ $status -eq 0 ] || { fail "$command: exit $status"; tail -30 "$work/cmake.log"; }
      rm -rf "$clone/build/bin"
      ln -s "$build_dir/bin" "$clone/build/bin"
      ;;
    "deploy/mpirun.sh deploy/configs/llama3-8b-"*)
      run "$work/gpu.log" "${driver_as_is[@]}" PODSERVE_DRY_RUN=1 bash -c "$command"
      status=$?
      if [ "$(sed -n 's/^PODSERVE_ENABLE_CUDA:BOOL=//p' "$build_dir/CMakeCache.txt")" = ON ]; then
        [ $status -eq 0 ] || { fail "$command (CUDA build): exit $status"; cat "$work/gpu.log"; }
      else
        [ $status -eq 2 ] && [ "$(wc -l <"$work/gpu.log")" -eq 1 ] &&
          grep -q "^podserve: config key 'backend'" "$work/gpu.log" ||
          { fail "$command (CPU build): exit $status, expected 2 and one line"; cat "$work/gpu.log"; }
      fi
      ;;
    "deploy/mpirun.sh "*"&")
      (cd "$clone" && exec bash -c "${command%&}") >"$work/service.log" 2>&1 &
      service=$!
      ;;
    "curl "*"/health")
      run "$work/curl.log" bash -c "$command"
      status=$?
      [ $status -eq 0 ] && grep -q '"status":"ok"' "$work/curl.log" ||
        fail "$command: exit $status: $(cat "$work/curl.log")"
      ;;
    "curl "*"/v1/"*)
      run "$work/curl.log" bash -c "$command"
      status=$?
      [ $status -eq 0 ] && grep -q '"choices"' "$work/curl.log" ||
        fail "$command: exit $status: $(cat "$work/curl.log")"
      ;;
    "kill -TERM "*)
      run "$work/kill.log" bash -c "$command"
      status=$?
      [ $status -eq 0 ] || fail "$command: exit $status: $(cat "$work/kill.log")"
      for _ in $(seq 240); do kill -0 "$service" 2>/dev/null && sleep 0.5; done
      if kill -0 "$service" 2>/dev/null; then
        fail "the service did not stop within 120 s of $command"
      else
        status=0
        wait "$service" || status=$?
        service=
        [ $status -eq 0 ] || { fail "the service stopped with exit $status"; tail -30 "$work/service.log"; }
      fi
      ;;
    "build/bin/podserve-ab "*)
      run "$work/ab.log" bash -c "$command"
      status=$?
      [ $status -eq 0 ] && grep -q "A/B comparison" "$work/ab.log" ||
        { fail "$command: exit $status"; tail -40 "$work/ab.log"; }
      ;;
    "build/bin/podserve-capacity "*)
      run "$work/capacity.log" bash -c "$command"
      status=$?
      report_dir=$clone/$(sed -n 's/.*--out-dir \([^ ]*\).*/\1/p' <<<"$command")
      if [ $status -ne 0 ] || ! head -3 "$report_dir/capacity-report.md" | grep -q '^\*\*Verdict:\*\* '; then
        fail "$command: exit $status"
        tail -40 "$work/capacity.log"
      fi
      for plot in $(grep -oE '\([a-z0-9_]+\.png\)' "$report_dir/capacity-report.md" | tr -d '()' | sort -u); do
        [ -s "$report_dir/$plot" ] || fail "$command: the report links $plot, which is missing"
      done
      ;;
    *)
      fail "a README command this test does not know how to run: $command"
      ;;
  esac
done

[ $failures -eq 0 ] && echo "PASS: ${#commands[@]} README commands"
exit $((failures > 0))
