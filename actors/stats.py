"""Small pure helpers for statistics that actors report."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["percentiles"]


def percentiles(values: Iterable[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles ``{"p50": …, "p95": …, "p99": …, "max": …}`` (0 when empty)."""
    data = sorted(values)
    out: dict[str, float] = {}
    for q in qs:
        key = f"p{q:g}".replace(".", "_")
        if not data:
            out[key] = 0.0
            continue
        rank = max(1, math.ceil(q / 100 * len(data)))
        out[key] = round(data[rank - 1], 3)
    out["max"] = round(data[-1], 3) if data else 0.0
    return out
