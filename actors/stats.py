"""Helpers for the statistics that actors report: percentiles, and the typed worker counters."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

__all__ = ["WorkerStats", "percentiles"]

log = logging.getLogger("erpgw.stats")
_warned: set[str] = set()


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


class WorkerStats(msgspec.Struct, kw_only=True):
    """The counters every JetStream worker reports (the common part of ``statistics()``).

    The monitor reads a worker's statistics through this struct, so renaming a counter is a
    type error rather than a KPI silently stuck at 0.
    """

    name: str = ""
    consumer: str = ""
    processed: int = 0  # deliveries acked after their effect was durable
    failed: int = 0  # deliveries dead-lettered
    retried: int = 0  # deliveries handed back with a delay (nak) for another attempt
    in_flight: int = 0
    batches: int = 0
    last_error: str | None = None

    @classmethod
    def of(cls, statistics: Mapping[str, Any]) -> WorkerStats:
        """Read from an actor's ``statistics()`` (its other keys ignored); the zero stats
        when they are not a worker's."""
        try:
            return msgspec.convert(statistics, cls)
        except msgspec.ValidationError as exc:
            if str(exc) not in _warned:  # loud once: a counter of the wrong type reads as 0
                _warned.add(str(exc))
                log.warning("worker statistics of %r do not read as WorkerStats: %s",
                            statistics.get("name"), exc)
            return cls()
