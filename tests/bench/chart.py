"""The pipeline benchmark's PNG: throughput and latency over time, each figure against its limit."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def draw(report: dict[str, Any], path: Path) -> None:
    samples = report["samples"]
    fig, (rate, lat, ratio) = plt.subplots(3, 1, figsize=(11, 12))
    if samples:
        t0 = samples[0]["t"]
        times = [s["t"] - t0 for s in samples]
        for key, label in (("bytes_sent", "device ingest"), ("stored_bytes", "assembler stored")):
            series = [0.0] + [
                (b[key] - a[key]) / (b["t"] - a["t"]) / 1e6 if b["t"] > a["t"] else 0.0
                for a, b in itertools.pairwise(samples)
            ]
            rate.plot(times, series, label=f"{label} MB/s")
        hooks = [0.0] + [
            (b["webhooks"] - a["webhooks"]) / (b["t"] - a["t"]) / 100 if b["t"] > a["t"] else 0.0
            for a, b in itertools.pairwise(samples)
        ]
        rate.plot(times, hooks, label="webhooks/s / 100", alpha=0.6)
        produce = report.get("limits", {}).get("raw_produce", {}).get("mb_s")
        if produce:
            rate.axhline(produce, color="red", linestyle="--", label="raw produce MB/s (limit)")
        _phases(rate, samples, t0)
        rate.set_xlabel("seconds")
        rate.set_title("throughput over time")
        rate.legend(loc="upper right", fontsize=8)
        series = report.get("half_load", {}).get("latency_series", [])
        if series:
            lat.scatter(
                [s[0] - t0 for s in series], [s[1] for s in series], s=8, label="-> webhook"
            )
            lat.scatter([s[0] - t0 for s in series], [s[2] for s in series], s=8, label="-> stored")
            lat.axhline(2.0, color="red", linestyle="--", label="p99 target 2 s")
            lat.axhline(0.5, color="orange", linestyle="--", label="p50 target 0.5 s")
        lat.set_xlabel("seconds (file's last packet)")
        lat.set_ylabel("seconds")
        lat.set_title("latency from a file's last packet, half load")
        lat.legend(loc="upper right", fontsize=8)
    rows = [r for r in report.get("figures", []) if r["ratio"] is not None]
    ratio.barh([r["figure"] for r in rows], [r["ratio"] for r in rows], color="tab:blue")
    ratio.axvline(1.0, color="red", linestyle="--")
    ratio.set_title("each figure / its limit or target")
    ratio.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _phases(axis: Any, samples: list[dict[str, Any]], t0: float) -> None:
    start, phase = samples[0]["t"], samples[0]["phase"]
    for sample in [*samples[1:], {"t": samples[-1]["t"], "phase": None}]:
        if sample["phase"] != phase:
            axis.axvspan(start - t0, sample["t"] - t0, alpha=0.08, color="gray")
            axis.text(start - t0, 0, str(phase), fontsize=7, rotation=90, va="bottom")
            start, phase = sample["t"], sample["phase"]
