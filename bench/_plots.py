"""PNG plots of a bench report (matplotlib, the optional ``bench`` extra).

Importing this module raises ``ImportError`` when matplotlib is missing; the runner catches it
and says so in the report instead of drawing anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt

__all__ = ["make_plots"]

_SYSTEMS: tuple[tuple[str, str, str], ...] = (
    ("gateway", "gateway", "tab:red"),
    ("raw_hop", "(a) raw hop", "tab:gray"),
    ("b1", "(b1) raw path per-message", "tab:blue"),
    ("b2", "(b2) raw path atomic", "tab:green"),
    ("peer", "(c) FastStream peer", "tab:purple"),
)


def _systems(leg: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    out = []
    for key, label, color in _SYSTEMS:
        f = leg["gateway"] if key == "gateway" else leg["baselines"].get(key)
        if f and f.get("available", True):
            out.append((key, label, color, f))
    return out


def _over_time(report: dict[str, Any], out: Path) -> Path:
    legs = report["legs"]
    fig, axes = plt.subplots(len(legs), 3, figsize=(16, 3.6 * len(legs)), squeeze=False)
    for row, leg in zip(axes, legs, strict=True):
        for key, label, color, f in _systems(leg):
            series = f.get("series", {})
            if series.get("throughput_eps"):
                xs, ys = zip(*series["throughput_eps"], strict=True)
                row[0].plot(xs, ys, label=label, color=color, lw=1.4)
            if series.get("p99_ms"):
                xs, ys = zip(*series["p99_ms"], strict=True)
                row[1].plot(xs, ys, label=label, color=color, lw=1.4)
            if series.get("backlog"):
                xs, ys = zip(*series["backlog"], strict=True)
                row[2].plot(xs, ys, label=label, color=color, lw=1.4,
                            ls="-" if key == "gateway" else "--")
        title = f"leg {leg['name']} ({leg['events']} events)"
        row[0].set(title=f"{title}: completions per second", xlabel="s since first arrival",
                   ylabel="events/s")
        row[1].set(title=f"{title}: p99 latency per time bin", xlabel="s since first arrival",
                   ylabel="ms", yscale="log")
        row[2].set(title=f"{title}: backlog (due, not done)",
                   xlabel="s since first arrival", ylabel="events")
        for ax in row:
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    fig.suptitle(f"erpgw bench peak-billing, fsync {report.get('fsync')}: over time "
                 "(no fault windows: faults are not built yet)")
    fig.tight_layout()
    path = out / "over_time.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _cdf(report: dict[str, Any], out: Path) -> Path:
    legs = report["legs"]
    fig, axes = plt.subplots(1, len(legs), figsize=(5.5 * len(legs), 4), squeeze=False)
    for ax, leg in zip(axes[0], legs, strict=True):
        for _key, label, color, f in _systems(leg):
            pts = f.get("cdf") or []
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.step(xs, ys, where="post", label=label, color=color)
        ax.set(title=f"latency CDF, leg {leg['name']}", xlabel="ms (log)",
               ylabel="fraction of events", xscale="log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "latency_cdf.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _bars(report: dict[str, Any], out: Path) -> Path:
    legs = report["legs"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    width = 0.8 / len(_SYSTEMS)
    for i, (key, label, color) in enumerate(_SYSTEMS):
        xs, tput, p99, cpu = [], [], [], []
        for j, leg in enumerate(legs):
            f = leg["gateway"] if key == "gateway" else leg["baselines"].get(key)
            if not f or not f.get("available", True):
                continue
            xs.append(j + (i - len(_SYSTEMS) / 2 + 0.5) * width)
            tput.append(f.get("throughput_eps") or 0.0)
            p99.append(f.get("latency_ms", {}).get("p99") or 0.0)
            cpu.append(f.get("cpu_us_per_event") or 0.0)
        for ax, ys in zip(axes, (tput, p99, cpu), strict=True):
            ax.bar(xs, ys, width, label=label, color=color)
    names = [f"{leg['name']}" for leg in legs]
    for ax, title, unit in zip(axes, ("throughput", "p99 latency", "CPU per event"),
                               ("events/s", "ms (log)", "us/event"), strict=True):
        ax.set_xticks(range(len(legs)), names)
        ax.set(title=f"{title}: gateway vs baselines", ylabel=unit)
        ax.grid(alpha=0.3, axis="y")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "gateway_vs_baselines.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def make_plots(report: dict[str, Any], out: Path) -> list[str]:
    """Draw the three plots into ``out``; the file names written."""
    if not report.get("legs"):
        return []
    return [str(p) for p in (_over_time(report, out), _cdf(report, out), _bars(report, out))]
