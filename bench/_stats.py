"""Pure statistics for the bench: percentiles, latency summaries, CDFs, time series.

Nearest-rank percentiles, the same definition the simulator's audit uses (``sim`` computes
p50/p95/p99/max that way), so a figure computed here from per-event samples and a figure read
from the audit agree on the same data. Everything here is plain synchronous code over lists of
floats: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = [
    "PERCENTILES",
    "LatencySummary",
    "auto_bin",
    "backlog_series",
    "cdf_points",
    "latency_summary",
    "nearest_rank",
    "rate_series",
    "redelivery_stalls",
    "window_series",
]

# (key in the report, percentile)
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99_9", 99.9))

LatencySummary = dict[str, float | int | None]

# An event this much later than the events that arrived around it waited for the consumer's
# ack_wait (30 s) to expire and be redelivered.
STALL_MS = 25_000.0
_NEIGHBOURS = 25  # events on each side of one, by arrival, whose median latency it is held to


def nearest_rank(sorted_values: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile of ascending ``sorted_values``; 0.0 when empty.

    The smallest value with at least ``pct`` % of the values at or below it (rank
    ``ceil(pct/100 * n)``, at least 1). Raises ``ValueError`` for ``pct`` outside 0..100.
    """
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    if not sorted_values:
        return 0.0
    # round() first: 99.9/100*1000 is 999.0000000000001 in floating point, not 999.
    rank = max(1, math.ceil(round(pct / 100.0 * len(sorted_values), 9)))
    return float(sorted_values[rank - 1])


def latency_summary(values_ms: Iterable[float]) -> LatencySummary:
    """p50/p95/p99/p99.9/max/mean (ms, 2 decimals) and the sample count ``n``.

    ``p99_9`` is ``None`` with fewer than 1,000 samples: below that the nearest rank of 99.9 %
    is the maximum, and reporting it under another name would overstate what we know.
    """
    xs = sorted(values_ms)
    n = len(xs)
    out: LatencySummary = {"n": n}
    for key, pct in PERCENTILES:
        if key == "p99_9" and n < 1000:
            out[key] = None
        else:
            out[key] = round(nearest_rank(xs, pct), 2)
    out["max"] = round(xs[-1], 2) if xs else 0.0
    out["mean"] = round(sum(xs) / n, 2) if n else 0.0
    return out


def cdf_points(values: Iterable[float], points: int = 200) -> list[tuple[float, float]]:
    """At most ``points`` (value, cumulative fraction) pairs describing the empirical CDF.

    Always keeps the minimum and the maximum; evenly spaced ranks in between, plus the tail
    ranks above 99 % densely, since the tail is what the bench is about.
    """
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return []
    if points < 2:
        raise ValueError("a CDF needs at least 2 points")
    ranks = {round(i * (n - 1) / (points - 1)) for i in range(points)}
    tail_from = int(n * 0.99)
    step = max(1, (n - tail_from) // max(1, points // 4))
    ranks.update(range(tail_from, n, step))
    ranks.add(n - 1)
    return [(xs[r], (r + 1) / n) for r in sorted(ranks)]


def auto_bin(span_s: float, bins: int = 40) -> float:
    """A bin width giving about ``bins`` bins over ``span_s`` seconds (0.05 s to 5 s)."""
    return round(min(5.0, max(0.05, span_s / bins)), 3)


def rate_series(times: Iterable[float], start: float, bin_s: float) -> list[tuple[float, float]]:
    """Events per second in consecutive bins of ``bin_s`` seconds from ``start``.

    Returns ``(bin start offset s, events/s)``; events before ``start`` count in the first bin.
    Raises ``ValueError`` for a non-positive ``bin_s``.
    """
    if bin_s <= 0:
        raise ValueError("bin_s must be positive")
    counts: dict[int, int] = {}
    for t in times:
        b = max(0, int((t - start) // bin_s))
        counts[b] = counts.get(b, 0) + 1
    if not counts:
        return []
    last = max(counts)
    return [(round(b * bin_s, 3), counts.get(b, 0) / bin_s) for b in range(last + 1)]


def window_series(samples: Iterable[tuple[float, float]], start: float, bin_s: float,
                  pct: float = 99.0) -> list[tuple[float, float]]:
    """The ``pct`` percentile of ``(time, value)`` samples per ``bin_s`` bin from ``start``.

    Bins without a sample are left out (a gap in the plot, not a zero).
    """
    if bin_s <= 0:
        raise ValueError("bin_s must be positive")
    bins: dict[int, list[float]] = {}
    for t, v in samples:
        bins.setdefault(max(0, int((t - start) // bin_s)), []).append(v)
    return [(round(b * bin_s, 3), round(nearest_rank(sorted(vs), pct), 2))
            for b, vs in sorted(bins.items())]


def backlog_series(samples: Iterable[tuple[float, int, int]], first: float, rate: float | None,
                   events: int) -> list[tuple[float, int]]:
    """Backlog over time from ``(t, arrived, done)`` samples: ``(t - first, backlog)``.

    At maximum load the backlog is what arrived and is not done yet. At an offered rate it is
    what was *due* by the schedule (event ``k`` due ``k / rate`` after ``first``) and is not
    done: a system that cannot keep up slows arrivals down (admission is bounded), so counting
    only arrived events would hide exactly the backlog that grows.
    """
    out = []
    for t, arrived, done in samples:
        if t < first:
            continue
        due = arrived if not rate else max(arrived, min(events, math.floor((t - first) * rate) + 1))
        out.append((round(t - first, 3), max(0, due - done)))
    return out


def redelivery_stalls(arrivals_latencies: Iterable[tuple[float, float]]) -> int:
    """How many events waited for a redelivery: ``(arrival time, latency ms)`` pairs whose
    latency is at least ``STALL_MS`` above the median latency of the events that arrived just
    before and after them (``_NEIGHBOURS`` on each side).

    Held to its neighbours, not to a fixed bound: under a growing backlog every event's latency
    climbs past 30 s together (a queue, not a stall), while a redelivered event stands out from
    those that arrived with it by about ``ack_wait``.
    """
    pairs = sorted(arrivals_latencies)
    lat = [ms for _t, ms in pairs]
    stalls = 0
    for i, ms in enumerate(lat):
        if ms < STALL_MS:
            continue
        around = sorted(lat[max(0, i - _NEIGHBOURS):i] + lat[i + 1:i + 1 + _NEIGHBOURS])
        if not around or ms - around[len(around) // 2] >= STALL_MS:
            stalls += 1
    return stalls
