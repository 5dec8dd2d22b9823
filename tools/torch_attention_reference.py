#!/usr/bin/env python3
"""Outside reference for podserve-kernel-bench: PyTorch SDPA (flash and cuDNN backends) on the
same hybrid-batch shapes, run serially and on two streams, with the same roofline columns.

PyTorch has no paged attention: K/V are contiguous here ([1, Hkv, P+C, D] for the prefill chunk,
[B, Hkv, L, D] for the decodes), which favours PyTorch slightly. The prefill mask is causal,
aligned bottom-right (torch.nn.attention.bias.causal_lower_right). GQA uses enable_gqa=True.

Method as in the C++ bench: CUDA events, warm-up, median of --runs runs, a 256 MiB L2 flush
before every timed run, random inputs.

usage: torch_attention_reference.py [--quick] [--runs 50] [--csv torch_reference.csv]
"""
import argparse
import csv
import math
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right


def median_ms(fn, runs, warmup, flush):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for i in range(runs):
        flush.fill_(i & 0xFF)
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def measure_ceilings(flush):
    n_bytes = 2 << 30
    a = torch.empty(n_bytes, dtype=torch.uint8, device="cuda").random_()
    b = torch.empty_like(a)
    copy_ms = median_ms(lambda: b.copy_(a), 20, 3, flush)
    del a, b
    n = 8192
    x = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    y = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    gemm_ms = median_ms(lambda: x @ y, 20, 3, flush)
    return 2.0 * n_bytes / (copy_ms * 1e-3), 2.0 * n**3 / (gemm_ms * 1e-3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--csv", default="torch_reference.csv")
    args = ap.parse_args()

    heads = [(32, 8, 128), (16, 4, 128), (32, 32, 128)]
    chunks, prefixes, batches, contexts = [512, 1024, 2048], [0, 4096, 12288], [32, 64, 128], [4096, 16384]
    if args.quick:
        heads, chunks, prefixes, batches = [(32, 8, 128)], [512, 2048], [0, 12288], [32, 128]
        args.runs = min(args.runs, 20)

    torch.manual_seed(0)
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    copy_bw, gemm_rate = measure_ceilings(flush)
    name = torch.cuda.get_device_name()
    print(f"card: {name}; copy {copy_bw / 1e12:.2f} TB/s; bf16 GEMM {gemm_rate / 1e12:.1f} TFLOP/s", flush=True)
    side = torch.cuda.Stream()
    out = open(args.csv, "w", newline="")
    w = csv.writer(out)
    w.writerow(["card", "backend", "hq", "hkv", "d", "C", "P", "B", "L", "prefill_ms", "decode_ms", "serial_ms",
                "streams_ms", "prefill_tflops", "decode_tbps", "bound_ms", "serial_over_bound",
                "streams_over_bound", "best_over_bound", "note"])
    summary = {}
    for hq, hkv, d in heads:
        for c in chunks:
            for p in prefixes:
                for b in batches:
                    for l in contexts:
                        qp = torch.randn(1, hq, c, d, dtype=torch.bfloat16, device="cuda")
                        kp = torch.randn(1, hkv, p + c, d, dtype=torch.bfloat16, device="cuda")
                        vp = torch.randn_like(kp)
                        qd = torch.randn(b, hq, 1, d, dtype=torch.bfloat16, device="cuda")
                        kd = torch.randn(b, hkv, l, d, dtype=torch.bfloat16, device="cuda")
                        vd = torch.randn_like(kd)
                        mask = causal_lower_right(c, p + c)
                        prefill_flops = 4.0 * d * hq * (c * p + c * (c + 1) / 2)
                        decode_flops = 4.0 * d * hq * l * b
                        decode_bytes = 2.0 * hkv * d * l * 2 * b
                        bytes_total = decode_bytes + 2.0 * hkv * d * (p + c) * 2 + 2 * 2 * (c + b) * hq * d
                        bound_ms = 1e3 * max((prefill_flops + decode_flops) / gemm_rate, bytes_total / copy_bw)
                        for backend_name, backend in (("flash", SDPBackend.FLASH_ATTENTION),
                                                      ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                            note = ""

                            def prefill():
                                with sdpa_kernel(backend):
                                    return F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, enable_gqa=True)

                            def decode():
                                with sdpa_kernel(backend):
                                    return F.scaled_dot_product_attention(qd, kd, vd, enable_gqa=True)

                            def serial():
                                prefill()
                                decode()

                            def streams():
                                main = torch.cuda.current_stream()
                                side.wait_stream(main)
                                prefill()
                                with torch.cuda.stream(side):
                                    decode()
                                main.wait_stream(side)

                            try:
                                tp = median_ms(prefill, args.runs, args.warmup, flush)
                                td = median_ms(decode, args.runs, args.warmup, flush)
                                ts = median_ms(serial, args.runs, args.warmup, flush)
                                tt = median_ms(streams, args.runs, args.warmup, flush)
                            except Exception as e:  # a backend that refuses the shape or mask
                                note = f"unsupported: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
                                w.writerow([name, backend_name, hq, hkv, d, c, p, b, l] + [""] * 10 + [note])
                                print(f"{backend_name} {hq}/{hkv}/{d} C={c} P={p} B={b} L={l}: {note}", flush=True)
                                continue
                            best = min(ts, tt) / bound_ms
                            w.writerow([name, backend_name, hq, hkv, d, c, p, b, l, f"{tp:.4f}", f"{td:.4f}",
                                        f"{ts:.4f}", f"{tt:.4f}", f"{prefill_flops / (tp * 1e9):.1f}",
                                        f"{decode_bytes / (td * 1e9):.3f}", f"{bound_ms:.4f}",
                                        f"{ts / bound_ms:.4f}", f"{tt / bound_ms:.4f}", f"{best:.4f}", note])
                            out.flush()
                            summary.setdefault((backend_name, (hq, hkv, d)), []).append(best)
                            print(f"{backend_name} {hq}/{hkv}/{d} C={c} P={p} B={b} L={l}: prefill {tp:.3f} ms "
                                  f"({prefill_flops / (tp * 1e9):.0f} TF/s) decode {td:.3f} ms "
                                  f"({decode_bytes / (td * 1e9):.2f} TB/s) serial {ts:.3f} streams {tt:.3f} "
                                  f"bound {bound_ms:.3f} best/bound {best:.2f}", flush=True)
                        del qp, kp, vp, qd, kd, vd
                        torch.cuda.empty_cache()
    out.close()
    print("\nsummary: geometric mean of min(serial, streams) / bound")
    for (backend_name, h), vals in sorted(summary.items()):
        g = math.exp(sum(math.log(v) for v in vals) / len(vals))
        print(f"{backend_name:6s} {h[0]}/{h[1]}/{h[2]}: {g:.3f} over {len(vals)} configs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
