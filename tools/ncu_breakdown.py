#!/usr/bin/env python3
"""Per-kernel GPU time of one forward pass from an Nsight Compute CSV.

Input: `ncu --csv --print-units base --metrics gpu__time_duration.sum --log-file FILE ...` of a
podserve-engine-bench run (profile after the warm-up with --launch-skip, so that the GEMM tuner
timed its choices without the profiler in the way). A forward pass starts at the embedding
kernel; the last complete pass in the file is summarised: kernel (name shortened), launches,
total microseconds, share of the pass.

usage: tools/ncu_breakdown.py FILE [--label TEXT]
"""
import argparse
import csv
import re
import sys
from collections import OrderedDict


def short_name(name):
    name = re.sub(r"\(.*$", "", name)  # argument list
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"podserve::cuda::(\(anonymous namespace\)::)?", "", name)
    return name[:70]


def read_kernels(path):
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    kernels = []
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        kernels.append((row["Kernel Name"], value * 1e-3))  # ns -> us
    return kernels


def last_pass(kernels):
    starts = [i for i, (name, _) in enumerate(kernels) if "embedding_kernel" in name]
    if len(starts) < 2:
        return kernels[starts[-1]:] if starts else kernels
    return kernels[starts[-2]:starts[-1]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    kernels = last_pass(read_kernels(args.file))
    if not kernels:
        print(f"{args.file}: no kernel times found", file=sys.stderr)
        return 1
    groups = OrderedDict()
    for name, us in kernels:
        key = short_name(name)
        count, total = groups.get(key, (0, 0.0))
        groups[key] = (count + 1, total + us)
    whole = sum(us for _, us in kernels)
    print(f"== {args.label} one forward pass: {len(kernels)} kernels, {whole:.1f} us")
    for key, (count, total) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"{total:10.1f} us {100 * total / whole:5.1f}%  x{count:<4d} {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
