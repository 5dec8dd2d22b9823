#!/usr/bin/env python3
"""Per-kernel GPU time of one forward pass from an Nsight Compute CSV.

Input: `ncu --csv --print-units base --metrics gpu__time_duration.sum[,dram__bytes_read.sum]
--log-file FILE ...` of a podserve-engine-bench run (profile after the warm-up with --launch-skip,
so that the GEMM tuner timed its choices without the profiler in the way). A forward pass starts
at the embedding kernel; the last complete pass in the file is summarised: kernel (name
shortened), launches, total microseconds, share of the pass, and with the DRAM metric the bytes
read and their rate.

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
    launches = OrderedDict()  # launch ID -> [name, us, DRAM bytes read or None]
    for row in csv.DictReader(lines):
        metric = row.get("Metric Name")
        if metric not in ("gpu__time_duration.sum", "dram__bytes_read.sum"):
            continue
        entry = launches.setdefault(row["ID"], [row["Kernel Name"], 0.0, None])
        value = float(row["Metric Value"].replace(",", ""))
        if metric == "gpu__time_duration.sum":
            entry[1] = value * 1e-3  # ns -> us
        else:
            entry[2] = value
    return [tuple(entry) for entry in launches.values()]


def last_pass(kernels):
    starts = [i for i, (name, _, _) in enumerate(kernels) if "embedding_kernel" in name]
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
    for name, us, read in kernels:
        key = short_name(name)
        count, total, total_read = groups.get(key, (0, 0.0, None))
        if read is not None:
            total_read = (total_read or 0.0) + read
        groups[key] = (count + 1, total + us, total_read)
    whole = sum(us for _, us, _ in kernels)
    print(f"== {args.label} one forward pass: {len(kernels)} kernels, {whole:.1f} us")
    for key, (count, total, total_read) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        rate = ""
        if total_read is not None and total > 0:
            rate = f" {total_read / 1e6:9.1f} MB read {total_read / (total * 1e-6) / 1e12:5.2f} TB/s"
        print(f"{total:10.1f} us {100 * total / whole:5.1f}%  x{count:<4d}{rate} {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
