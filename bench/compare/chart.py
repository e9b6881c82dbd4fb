"""The PNG chart of a bench/compare/run.py result (runs in the peers' venv: matplotlib).

python chart.py bench/results/compare-STAMP.json out.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(src: str, dst: str) -> None:
    with open(src, encoding="utf-8") as f:
        r = json.load(f)
    rows = r["throughput"]
    names = [x["system"] for x in rows]
    colours = [
        "#888888" if n == "ceiling" else "#1f77b4" if n.startswith("ow-") else "#d62728"
        for n in names
    ]
    panels = [
        ("vendor calls / s (higher is better)", [x["calls_per_s"] for x in rows], False),
        (
            "CPU s per 1,000 vendor calls,\nworkers + server (lower is better)",
            [x["cpu_per_1k_calls_s"] for x in rows],
            False,
        ),
        (
            "poll lateness p99, ms (log; lower is better)",
            [x.get("poll_lateness_p99_ms") or 0.0 for x in rows],
            True,
        ),
    ]
    mem = r.get("memory") or []
    fig, axes = plt.subplots(1, 4 if mem else 3, figsize=(20 if mem else 15, 5.2))
    for ax, (title, values, log) in zip(axes, panels, strict=False):
        bars = ax.bar(names, values, color=colours)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", rotation=35, labelsize=8)
        if log and any(v > 0 for v in values):
            ax.set_yscale("log")
        for b, v in zip(bars, values, strict=True):
            if v:
                ax.annotate(
                    f"{v:,.0f}" if v >= 10 else f"{v:.2f}",
                    (b.get_x() + b.get_width() / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    if mem:
        ax = axes[3]
        for name in dict.fromkeys(m["system"] for m in mem):
            pts = sorted((m["waiting"], m["peak_rss_mb"]) for m in mem if m["system"] == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_title("peak worker RSS MB vs orders waiting", fontsize=10)
        ax.set_xlabel("orders waiting (log)", fontsize=8)
        ax.legend(fontsize=8)
    fig.suptitle(r["title"], fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
