#!/usr/bin/env bash
# Starts podserve under mpirun with the settings every deployment on one host needs.
# Usage: deploy/mpirun.sh CONFIG [podserve args...]      (ranks = what CONFIG needs)
# Exit code: podserve's through mpirun (0 clean stop, 1 failure, 2 configuration error; a config
# that cannot start on this build is refused with one line before mpirun starts).
# SIGTERM or SIGINT to this script stops the service the way SIGTERM to the router rank does
# (drain, stop every rank, exit 0): it is passed to the router through its pid file (the
# --pid-file given, else one of the script's own) when the router runs on this host; otherwise
# to mpirun, which ends every rank but exits 1.
# Environment: PODSERVE_BIN (default build/bin/podserve), PODSERVE_MPIRUN_ARGS (extra mpirun
# args, e.g. "--hostfile deploy/hostfile.example" for several nodes), PODSERVE_DRY_RUN=1 (check
# the config, print the mpirun command, start nothing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
config=$1; shift
bin=${PODSERVE_BIN:-$here/../build/bin/podserve}
np=$("$bin" --config "$config" --print-world-size)

args=(-np "$np" --oversubscribe --bind-to none
      # Idle ranks must yield the CPU: several ranks share a core on small machines.
      --mca mpi_yield_when_idle 1
      # Shared memory and TCP byte transfer layers; UCX is used by kvtransfer/, not by MPI.
      --mca pml ob1 --mca btl self,vader,tcp)
for var in LD_LIBRARY_PATH PODSERVE_LOG_LEVEL UCX_TLS UCX_NET_DEVICES; do
  [ -z "${!var:-}" ] || args+=(-x "$var")
done
[ "$(id -u)" -ne 0 ] || args+=(--allow-run-as-root)

# shellcheck disable=SC2206
command=(mpirun "${args[@]}" ${PODSERVE_MPIRUN_ARGS:-} "$bin" --config "$config" "$@")
if [ "${PODSERVE_DRY_RUN:-0}" = 1 ]; then
  echo "dry run: $np ranks; would run: ${command[*]}"
  exit 0
fi

pid_file=
previous=
for arg in "$@"; do
  [ "$previous" != --pid-file ] || pid_file=$arg
  case $arg in --pid-file=*) pid_file=${arg#--pid-file=} ;; esac
  previous=$arg
done
if [ -z "$pid_file" ]; then
  pid_file=$(mktemp "${TMPDIR:-/tmp}/podserve-router-XXXXXX")
  command+=(--pid-file "$pid_file")
  trap 'rm -f "$pid_file"' EXIT
fi
rm -f "$pid_file"  # the router writes it once it serves: a stale one must not get the signal
"${command[@]}" &
mpirun_pid=$!
signalled=0
stop() {
  signalled=1
  if ! { [ -s "$pid_file" ] && kill -TERM "$(cat "$pid_file")" 2>/dev/null; }; then
    kill -TERM "$mpirun_pid" 2>/dev/null || true
  fi
}
trap stop TERM INT
# A trapped signal ends `wait` early: wait again for mpirun's own exit status.
while :; do
  signalled=0
  status=0
  wait "$mpirun_pid" || status=$?
  [ "$signalled" = 1 ] || exit "$status"
done
