#!/usr/bin/env bash
# Starts podserve under mpirun with the settings every deployment on one host needs.
# Usage: deploy/mpirun.sh CONFIG [podserve args...]      (ranks = what CONFIG needs)
# Environment: PODSERVE_BIN (default build/bin/podserve), PODSERVE_MPIRUN_ARGS (extra mpirun
# args, e.g. "--hostfile deploy/hostfile.example" for several nodes).
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
# shellcheck disable=SC2086
exec mpirun "${args[@]}" ${PODSERVE_MPIRUN_ARGS:-} "$bin" --config "$config" "$@"
