#!/usr/bin/python3
"""The plots of a podserve-capacity report (capacity-report.json), as PNG files in OUT_DIR.

goodput_per_gpu.png  goodput per GPU (or rank) of each variant: the mean of the repeats at
                     capacity, whiskers from their min to their max
ttft_p90.png         TTFT p90 against offered rate, one line per variant, the SLO bound dashed
tpot_p90.png         TPOT p90 against offered rate, likewise
attainment.png       SLO attainment against offered rate, the target dashed
latency_cdf.png      TTFT and TPOT CDFs of the repeats at each variant's capacity

Each PNG carries its title and axis labels as text chunks (Title, XLabel, YLabel) so that tests
can read them back without a plotting library. Uses Debian's python3-matplotlib (Agg backend).
Usage: capacity_plots.py REPORT_JSON OUT_DIR
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
from matplotlib import ticker  # noqa: E402


def save(fig, ax, path, title):
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Title": title, "XLabel": ax.get_xlabel(),
                                         "YLabel": ax.get_ylabel()})
    plt.close(fig)


def rate_axis(ax, report):
    """Log-scaled offered rate, ticked at the rates probed (bracketing is geometric)."""
    rates = sorted({p["rate"] for v in report["variants"] for p in v["probes"] + v["reruns"]})
    ax.set_xscale("log")
    if rates:
        ax.set_xticks(rates)
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel("offered rate (req/s)")


def by_rate(variant):
    """Search probes and repeats, one point per rate (repeats at one rate averaged)."""
    points = {}
    for probe in variant["probes"] + variant["reruns"]:
        points.setdefault(probe["rate"], []).append(probe)
    return sorted(points.items())


def latency_vs_rate(report, key, label, bound_s, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for variant in report["variants"]:
        points = by_rate(variant)
        if not points:
            continue
        rates = [rate for rate, _ in points]
        values = [sum(p[key]["p90"] for p in probes) / len(probes) * 1e3 for _, probes in points]
        ax.plot(rates, values, marker="o", label=variant["name"])
    if bound_s > 0:
        ax.axhline(bound_s * 1e3, color="black", linestyle="--", label="SLO")
    rate_axis(ax, report)
    ax.set_ylabel(label + " p90 (ms)")
    ax.legend()
    save(fig, ax, path, label + " p90 against offered rate")


def attainment_vs_rate(report, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for variant in report["variants"]:
        points = by_rate(variant)
        if not points:
            continue
        ax.plot([rate for rate, _ in points],
                [sum(p["attainment"] for p in probes) / len(probes) for _, probes in points],
                marker="o", label=variant["name"])
    ax.axhline(report["slo"]["target"], color="black", linestyle="--", label="target")
    rate_axis(ax, report)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("SLO attainment")
    ax.legend()
    save(fig, ax, path, "SLO attainment against offered rate")


def goodput_bars(report, path):
    variants = report["variants"]
    unit = variants[0]["gpu_unit"] if variants else "GPU"
    means = [v["goodput_per_gpu"]["mean"] for v in variants]
    below = [v["goodput_per_gpu"]["mean"] - v["goodput_per_gpu"]["min"] for v in variants]
    above = [v["goodput_per_gpu"]["max"] - v["goodput_per_gpu"]["mean"] for v in variants]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.bar([v["name"] for v in variants], means, yerr=[below, above], capsize=8,
           color="tab:blue")
    ax.set_xlabel("variant")
    ax.set_ylabel("goodput per %s (req/s)" % unit)
    save(fig, ax, path, "Goodput per %s at capacity (min-max of the repeats)" % unit)


def latency_cdfs(report, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for index, (name, bound) in enumerate((("TTFT", report["slo"]["ttft_s"]),
                                           ("TPOT", report["slo"]["tpot_s"]))):
        ax = axes[index]
        for variant in report["variants"]:
            values = sorted(r[1 + index] * 1e3 for rerun in variant["reruns"]
                            for r in rerun["requests"] if r[0])
            if values:
                ax.step(values, [(i + 1) / len(values) for i in range(len(values))],
                        where="post", label=variant["name"])
        if bound > 0:
            ax.axvline(bound * 1e3, color="black", linestyle="--", label="SLO")
        ax.set_xlabel(name + " (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(name + " CDF at capacity")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Title": "Latency CDFs at capacity",
                                         "XLabel": axes[0].get_xlabel(),
                                         "YLabel": axes[0].get_ylabel()})
    plt.close(fig)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: capacity_plots.py REPORT_JSON OUT_DIR")
    with open(sys.argv[1]) as f:
        report = json.load(f)
    out = sys.argv[2]
    goodput_bars(report, os.path.join(out, "goodput_per_gpu.png"))
    latency_vs_rate(report, "ttft_s", "TTFT", report["slo"]["ttft_s"],
                    os.path.join(out, "ttft_p90.png"))
    latency_vs_rate(report, "tpot_s", "TPOT", report["slo"]["tpot_s"],
                    os.path.join(out, "tpot_p90.png"))
    attainment_vs_rate(report, os.path.join(out, "attainment.png"))
    latency_cdfs(report, os.path.join(out, "latency_cdf.png"))


if __name__ == "__main__":
    main()
