#!/usr/bin/env bash
# Several "hosts" on one machine: each host a network namespace with one interface, `eth0`, a
# veth pair whose other end joins a bridge in the root namespace, like machines on one switch.
# Each host sees only its own addresses (lo and eth0); the root namespace gets no address on the
# bridge, so nothing outside the hosts can reach them or be reached from them. Used with
# deploy/netns-rsh-agent.sh to run mpirun across the hosts (docs/operations.md, "Several hosts").
# Usage (as root):
#   netns-hosts.sh up BRIDGE HOST=ADDRESS/PREFIX...   e.g. up mh0 a=10.213.7.1/24 b=10.213.7.2/24
#   netns-hosts.sh down BRIDGE HOST...
# `up` makes the bridge BRIDGE and one namespace per HOST (named HOST), and fails on the first
# step that fails, leaving what it made for `down`. `down` ends the processes still running in
# each HOST's namespace (SIGKILL: call it once the deployment was stopped or has failed),
# deletes the namespaces, their veth pairs and the bridge; what does not exist is skipped, so it
# is safe in an EXIT trap and after a partial `up`. BRIDGE: at most 13 characters (the root ends
# of the veth pairs are BRIDGE + "v" + the host's position, within the kernel's 15).
set -euo pipefail

usage() {
  echo "usage: $0 up BRIDGE HOST=ADDRESS/PREFIX... | down BRIDGE HOST..." >&2
  exit 2
}

[ $# -ge 3 ] || usage
action=$1
bridge=$2
shift 2
[ ${#bridge} -le 13 ] || { echo "$0: bridge name '$bridge' longer than 13 characters" >&2; exit 2; }

up() {
  ip link add "$bridge" type bridge
  ip link set "$bridge" up
  local index=0 spec host address root_end
  for spec in "$@"; do
    host=${spec%%=*}
    address=${spec#*=}
    if [ "$host" = "$spec" ] || [ -z "$host" ] || [ -z "$address" ]; then usage; fi
    root_end=${bridge}v$index
    index=$((index + 1))
    ip netns add "$host"
    # The host's end is made inside its namespace, so it never exists in the root namespace.
    ip link add "$root_end" type veth peer name eth0 netns "$host"
    ip link set "$root_end" master "$bridge"
    ip link set "$root_end" up
    ip -n "$host" link set lo up
    ip -n "$host" address add "$address" dev eth0
    ip -n "$host" link set eth0 up
  done
}

down() {
  local host pids link
  for host in "$@"; do
    [ -e "/run/netns/$host" ] || continue
    # Processes started in the namespace keep it (and its veth pair) alive after `ip netns del`.
    pids=$(ip netns pids "$host" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    ip netns del "$host" || true
  done
  # Root ends still attached (a namespace that lived on); deleting one deletes its pair.
  for link in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$link" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
}

case $action in
  up) up "$@" ;;
  down) down "$@" ;;
  *) usage ;;
esac
