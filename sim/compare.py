#!/usr/bin/env python3
"""Compares a podserve-sim report with a podserve-bench report of the same workload.

Usage: sim/compare.py MEASURED.json SIMULATED.json [--label L] [--metrics INSTANCE_METRICS]
Prints Markdown table rows: measured, simulated, relative error of the simulation. With
--metrics (a scrape of the instance leader's /metrics taken after the run), also the mean
iteration time per batch kind, measured (podserve_iteration_seconds) against the cost model's.
"""
import argparse
import json
import re

FIGURES = [
    ("TTFT p50 (ms)", ("ttft_s", "p50"), 1e3),
    ("TTFT p90 (ms)", ("ttft_s", "p90"), 1e3),
    ("TTFT p99 (ms)", ("ttft_s", "p99"), 1e3),
    ("ITL p50 (ms)", ("itl_s", "p50"), 1e3),
    ("ITL p90 (ms)", ("itl_s", "p90"), 1e3),
    ("ITL p99 (ms)", ("itl_s", "p99"), 1e3),
    ("TPOT p50 (ms)", ("tpot_s", "p50"), 1e3),
    ("TPOT p90 (ms)", ("tpot_s", "p90"), 1e3),
    ("E2E p50 (ms)", ("e2e_s", "p50"), 1e3),
    ("E2E p90 (ms)", ("e2e_s", "p90"), 1e3),
    ("output tok/s", ("output_token_throughput",), 1.0),
]


def value(report, path):
    for key in path:
        report = report[key]
    return float(report)


def row(label, name, measured, simulated):
    error = (simulated - measured) / measured * 100.0 if measured else float("nan")
    print(f"| {label} | {name} | {measured:.2f} | {simulated:.2f} | {error:+.1f} % |")


def iteration_totals(metrics_text):
    """{batch_kind: (count, seconds)} from podserve_iteration_seconds's _count and _sum."""
    totals = {}
    pattern = re.compile(r'^podserve_iteration_seconds_(count|sum)\{[^}]*batch_kind="(\w+)"[^}]*\} (\S+)')
    for line in metrics_text.splitlines():
        match = pattern.match(line)
        if match:
            field, kind, number = match.groups()
            count, seconds = totals.get(kind, (0.0, 0.0))
            totals[kind] = (float(number), seconds) if field == "count" else (count, float(number))
    return totals


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("measured")
    parser.add_argument("simulated")
    parser.add_argument("--label", default="")
    parser.add_argument("--metrics")
    args = parser.parse_args()
    measured = json.load(open(args.measured))
    simulated = json.load(open(args.simulated))
    for name, path, unit in FIGURES:
        row(args.label, name, value(measured, path) * unit, value(simulated, path) * unit)
    if args.metrics:
        real = iteration_totals(open(args.metrics).read())
        for kind, sim in simulated["iterations_by_kind"].items():
            count, seconds = real.get(kind, (0.0, 0.0))
            row(args.label, f"{kind} iterations", count, sim["count"])
            if count and sim["count"]:
                row(args.label, f"{kind} iteration mean (ms)", seconds / count * 1e3,
                    sim["seconds"] / sim["count"] * 1e3)


if __name__ == "__main__":
    main()
