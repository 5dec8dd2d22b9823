#!/usr/bin/env python3
"""Compares a podserve-sim report with a podserve-bench report of the same workload.

Usage: sim/compare.py MEASURED.json SIMULATED.json [LABEL]
Prints one Markdown table row per figure: measured, simulated, relative error of the simulation.
"""
import json
import sys

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


def main():
    measured = json.load(open(sys.argv[1]))
    simulated = json.load(open(sys.argv[2]))
    label = sys.argv[3] if len(sys.argv) > 3 else ""
    for name, path, unit in FIGURES:
        m = value(measured, path) * unit
        s = value(simulated, path) * unit
        error = (s - m) / m * 100.0 if m else float("nan")
        print(f"| {label} | {name} | {m:.2f} | {s:.2f} | {error:+.1f} % |")


if __name__ == "__main__":
    main()
