#!/usr/bin/env bash
# Copies into OUTDIR the shared libraries that the given binaries need and that a target machine
# lacks, so that binaries built on one machine run on another (a GPU host without the build host's
# Open MPI, UCX, spdlog, ...). On the target: LD_LIBRARY_PATH=OUTDIR:$LD_LIBRARY_PATH, which
# deploy/mpirun.sh passes on to every rank.
#
# Usage: tools/gpu-bundle.sh [--target-libs FILE] OUTDIR BINARY...
#   --target-libs FILE  the libraries the target has: the output of `ldconfig -p` run there, or
#                       one soname a line. Only the libraries missing from it are copied.
#   Without it, every library is copied but the C and C++ runtime (libc, libm, libstdc++,
#   libgcc_s, ld-linux, libpthread, libdl, librt, libutil), which every Linux host has.
# The GPU driver's own libraries (libcuda, libnvidia-*) are never copied: they must match the
# target's kernel driver. Prints each library it copies, then OUTDIR's size.
# Exit code: 0; 1 when ldd cannot resolve a library here (the binary would not run here either);
# 2 for bad usage.
set -euo pipefail
usage() { echo "usage: $0 [--target-libs FILE] OUTDIR BINARY..." >&2; exit 2; }

target_libs=
if [ "${1:-}" = --target-libs ]; then
  [ $# -ge 2 ] || usage
  target_libs=$2
  shift 2
  [ -r "$target_libs" ] || { echo "$0: cannot read $target_libs" >&2; exit 2; }
fi
[ $# -ge 2 ] || usage
out=$1
shift

declare -A target_has=()
if [ -n "$target_libs" ]; then
  # `ldconfig -p` lines read "<tab>libfoo.so.1 (libc6,x86-64) => /path"; a plain list, "libfoo.so.1".
  while read -r soname _; do
    [ -n "$soname" ] && target_has[$soname]=1
  done <"$target_libs"
fi

runtime_library() {
  case $1 in
    libc.so.* | libm.so.* | libstdc++.so.* | libgcc_s.so.* | ld-linux*.so.* | libpthread.so.* | \
      libdl.so.* | librt.so.* | libutil.so.*) return 0 ;;
  esac
  return 1
}

mkdir -p "$out"
declare -A copied=()
unresolved=0
for binary in "$@"; do
  [ -f "$binary" ] || { echo "$0: no such binary: $binary" >&2; exit 2; }
  # ldd lines: "<tab>libfoo.so.1 => /path/libfoo.so.1 (0x...)", or "... => not found".
  while read -r soname arrow path _; do
    [ "$arrow" = "=>" ] || continue  # the vDSO and the dynamic loader have no "=>"
    if [ "$path" = not ]; then
      echo "$0: $binary needs $soname, which is not found here" >&2
      unresolved=1
      continue
    fi
    case $soname in libcuda.so.* | libnvidia*) continue ;; esac
    [ -z "${copied[$soname]:-}" ] || continue
    if [ -n "$target_libs" ]; then
      [ -z "${target_has[$soname]:-}" ] || continue
    elif runtime_library "$soname"; then
      continue
    fi
    cp -L "$path" "$out/$soname"
    copied[$soname]=1
    echo "copied $soname"
  done < <(ldd "$binary")
done
du -sh "$out"
exit "$unresolved"
