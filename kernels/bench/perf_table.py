#!/usr/bin/env python3
"""Renders docs/perf.md's attention tables from one GPU session's CSVs.

usage: kernels/bench/perf_table.py KERNEL_BENCH_CSV [TORCH_REFERENCE_CSV] > tables.md

KERNEL_BENCH_CSV is podserve-kernel-bench --csv output, TORCH_REFERENCE_CSV that of
tools/torch_attention_reference.py on the same card (same session). Prints the summary table
(geometric means per head set and overall), the targets' figures, and one row per configuration.
"""
import csv
import math
import sys


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def k(n):
    n = int(n)
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    torch = {}
    if len(sys.argv) > 2:
        for t in csv.DictReader(open(sys.argv[2])):
            key = (t["hq"], t["hkv"], t["d"], t["C"], t["P"], t["B"], t["L"])
            torch[(t["backend"],) + key] = min(float(t["serial_ms"]), float(t["streams_ms"]))
    f = lambda r, c: float(r[c])
    heads = []
    for r in rows:
        h = (r["hq"], r["hkv"], r["d"])
        if h not in heads:
            heads.append(h)

    def torch_best(r, backend):
        key = (backend, r["hq"], r["hkv"], r["d"], r["C"], r["P"], r["B"], r["L"])
        return torch.get(key)

    print(f"Card: {rows[0]['card']}; copy {rows[0]['copy_tbps']} TB/s; bf16 GEMM {rows[0]['gemm_tflops']} TFLOP/s\n")
    print("| heads (q/kv/d) | POD / serial | POD / streams | POD / bound | serial / bound | streams / bound "
          "| POD slots policy / serial | POD 4 CTAs / serial | torch flash best / bound | torch cuDNN best / bound |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, sel in [(f"{h[0]}/{h[1]}/{h[2]}", lambda r, h=h: (r["hq"], r["hkv"], r["d"]) == h) for h in heads] + [
            (f"all {len(rows)}", lambda r: True)]:
        sub = [r for r in rows if sel(r)]
        tf = [torch_best(r, "flash") / f(r, "bound_ms") for r in sub if torch_best(r, "flash")]
        tc = [torch_best(r, "cudnn") / f(r, "bound_ms") for r in sub if torch_best(r, "cudnn")]
        print(f"| {label} | {geomean(f(r,'serial_ms')/f(r,'pod_ms') for r in sub):.3f}x "
              f"| {geomean(f(r,'streams_ms')/f(r,'pod_ms') for r in sub):.3f}x "
              f"| {geomean(f(r,'pod_over_bound') for r in sub):.3f} "
              f"| {geomean(f(r,'serial_over_bound') for r in sub):.3f} "
              f"| {geomean(f(r,'streams_over_bound') for r in sub):.3f} "
              f"| {geomean(f(r,'serial_ms')/f(r,'pod_slots_ms') for r in sub):.3f}x "
              f"| {geomean(f(r,'serial_ms')/f(r,'pod_4cta_ms') for r in sub):.3f}x "
              f"| {geomean(tf):.3f} | {geomean(tc):.3f} |")
    worst = min(rows, key=lambda r: f(r, "serial_ms") / f(r, "pod_ms"))
    best = max(rows, key=lambda r: f(r, "serial_ms") / f(r, "pod_ms"))
    ideal = geomean(f(r, "serial_ms") / max(f(r, "prefill_ms"), f(r, "decode_ms")) for r in rows)
    print(f"\nworst POD / serial: {f(worst,'serial_ms')/f(worst,'pod_ms'):.3f}x "
          f"({worst['hq']}/{worst['hkv']} C={k(worst['C'])} P={k(worst['P'])} B={worst['B']} L={k(worst['L'])}); "
          f"best {f(best,'serial_ms')/f(best,'pod_ms'):.3f}x; "
          f"perfect overlap of the standalone kernels (serial / max(prefill, decode)): geomean {ideal:.3f}x")
    pre = [(r["hq"], r["hkv"], r["prefill_tflops"]) for r in rows
           if r["C"] == "2048" and r["P"] == "12288"]
    by_head = {}
    for hq, hkv, tf in pre:
        by_head.setdefault(f"{hq}/{hkv}", []).append(float(tf))
    print("prefill C=2K P=12K TFLOP/s (min-max over the decode shapes it was timed beside): " +
          ", ".join(f"{h} {min(v):.0f}-{max(v):.0f}" for h, v in by_head.items()))
    dec = [f(r, "decode_tbps") for r in rows if r["L"] == "16384"]
    dec64 = [f(r, "decode_tbps") for r in rows if r["L"] == "16384" and int(r["B"]) >= 64]
    print(f"decode L=16K TB/s: {min(dec):.2f}-{max(dec):.2f} (B >= 64: {min(dec64):.2f}-{max(dec64):.2f})\n")

    print("| q/kv | C | P | B | L | prefill ms (TF/s) | decode ms (TB/s) | serial | streams | POD | POD/serial "
          "| POD/streams | bound | POD/bound | torch flash best (/bound) | torch cuDNN best (/bound) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = []
        for backend in ("flash", "cudnn"):
            t = torch_best(r, backend)
            cells.append(f"{t:.3f} ({t / f(r, 'bound_ms'):.2f})" if t else "-")
        print(f"| {r['hq']}/{r['hkv']} | {k(r['C'])} | {k(r['P'])} | {r['B']} | {k(r['L'])} "
              f"| {f(r,'prefill_ms'):.3f} ({f(r,'prefill_tflops'):.0f}) | {f(r,'decode_ms'):.3f} ({f(r,'decode_tbps'):.2f}) "
              f"| {f(r,'serial_ms'):.3f} | {f(r,'streams_ms'):.3f} | {f(r,'pod_ms'):.3f} "
              f"| {f(r,'serial_ms')/f(r,'pod_ms'):.2f}x | {f(r,'streams_ms')/f(r,'pod_ms'):.2f}x "
              f"| {f(r,'bound_ms'):.3f} | {f(r,'pod_over_bound'):.2f} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
