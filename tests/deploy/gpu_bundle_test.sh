#!/usr/bin/env bash
# tools/gpu-bundle.sh on the service binary: without a target list it carries every library
# but the C/C++ runtime, and the binary runs on the bundle; with a target list (the shape of
# `ldconfig -p`) that lacks exactly two of the binary's libraries, it carries exactly those two.
# Usage: gpu_bundle_test.sh SOURCE_DIR BINARY
set -uo pipefail
bundle=$1/tools/gpu-bundle.sh
binary=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# The binary's libraries as the dynamic loader resolves them here (soname and path).
mapfile -t needed < <(ldd "$binary" | awk '$2 == "=>" {print $1}')
[ ${#needed[@]} -ge 4 ] || fail "expected a dynamically linked binary: ${needed[*]}"

bash "$bundle" "$work/all" "$binary" >"$work/all.log" 2>&1 || fail "bundle exited $?: $(cat "$work/all.log")"
for soname in "${needed[@]}"; do
  case $soname in
    libc.so.* | libm.so.* | libstdc++.so.* | libgcc_s.so.* | libpthread.so.* | libdl.so.* | librt.so.*)
      [ ! -e "$work/all/$soname" ] || fail "carried the runtime library $soname" ;;
    *)
      [ -f "$work/all/$soname" ] && [ ! -L "$work/all/$soname" ] || fail "did not carry $soname" ;;
  esac
done
[ "$(find "$work/all" -type f | wc -l)" -eq "$(grep -c '^copied ' "$work/all.log")" ] ||
  fail "the listing does not match the files carried"
LD_LIBRARY_PATH=$work/all "$binary" --help >/dev/null || fail "the binary does not run on its bundle"

# A target that has everything but the first and the last library ldd lists.
missing=("${needed[0]}" "${needed[-1]}")
{
  echo "${#needed[@]} libs found in cache \`/etc/ld.so.cache'"
  for soname in "${needed[@]:1:${#needed[@]}-2}"; do
    printf '\t%s (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/%s\n' "$soname" "$soname"
  done
} >"$work/target.txt"
bash "$bundle" --target-libs "$work/target.txt" "$work/some" "$binary" >"$work/some.log" 2>&1 ||
  fail "bundle with a target list exited $?"
carried=$(cd "$work/some" && ls | sort | tr '\n' ' ')
expected=$(printf '%s\n' "${missing[@]}" | sort | tr '\n' ' ')
[ "$carried" = "$expected" ] || fail "with a target list carried '$carried', expected '$expected'"

bash "$bundle" "$work/usage" >/dev/null 2>&1
[ $? -eq 2 ] || fail "no binary: expected exit 2"

[ $failures -eq 0 ] && echo "PASS: gpu-bundle.sh carries exactly what the target lacks"
exit $((failures > 0))
