#!/usr/bin/env bash
# Open MPI launch agent for "hosts" that are network namespaces of this machine (made by
# deploy/netns-hosts.sh): it stands in for ssh as `mpirun --mca plm_rsh_agent THIS_SCRIPT`.
# Usage (as mpirun calls its agent): netns-rsh-agent.sh HOST COMMAND...
#   HOST     a network namespace (`ip netns list`); the hostfile names the namespaces.
#   COMMAND  a shell command line, the words joined with spaces and run by `sh -c`, as ssh runs a
#            remote command (mpirun passes the orted start-up line this way).
# COMMAND runs inside HOST's network namespace and in a UTS namespace of its own whose host name
# is HOST, so that every process started there (orted, then the ranks) sees HOST as its host
# name, as on a machine of its own: Open MPI and podserve tell hosts apart by name.
# Needs root (or CAP_SYS_ADMIN) for `ip netns exec` and `unshare --uts`. Exit code: COMMAND's;
# 255 when HOST is no namespace (ssh's code for a host it cannot reach).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 HOST COMMAND..." >&2
  exit 255
fi
host=$1
shift
if [ ! -e "/run/netns/$host" ]; then
  echo "$0: no network namespace named '$host' (ip netns list)" >&2
  exit 255
fi
# Inside: $1 is the host name, the rest the command's words. `hostname` changes only the new UTS
# namespace's name; `exec` keeps the process tree as ssh's would be (no shell left in between).
# shellcheck disable=SC2016
exec ip netns exec "$host" unshare --uts \
  sh -c 'hostname "$1" && shift && exec sh -c "$*"' netns-rsh-agent "$host" "$@"
