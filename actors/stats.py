"""Helpers for the statistics that actors report: percentiles, and the typed worker counters."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Self

import msgspec

__all__ = ["Counters", "IngressCounters", "PosterCounters", "RevenueCounters", "WorkerStats",
           "absent", "percentiles"]

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


class Counters(msgspec.Struct, kw_only=True):
    """What the monitor reads of one actor's ``statistics()``, as a typed struct: the monitor
    reads attributes (a misspelt counter there is a type error) and
    ``tests/integration/test_statistics_contract.py`` checks that a running gateway's actors
    report every field (a counter renamed in an actor fails it instead of reading as 0)."""

    @classmethod
    def of(cls, statistics: Mapping[str, Any]) -> Self:
        """Read from an actor's ``statistics()`` (its other keys ignored); the zero counters
        when they do not read as ``cls`` (logged once per problem)."""
        try:
            return msgspec.convert(statistics, cls)
        except msgspec.ValidationError as exc:
            if str(exc) not in _warned:  # loud once: a counter of the wrong type reads as 0
                _warned.add(str(exc))
                log.warning("statistics of %r do not read as %s: %s",
                            statistics.get("name"), cls.__name__, exc)
            return cls()


def absent(cls: type[Counters], statistics: Mapping[str, Any]) -> list[str]:
    """The fields of ``cls`` that ``statistics`` lacks (what would silently read as 0)."""
    return [f for f in cls.__struct_fields__ if f not in statistics]


class WorkerStats(Counters, kw_only=True):
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


class IngressCounters(Counters, kw_only=True):
    """The webhook ingress's answers (``actors.ingress.server``): stored, stored before,
    ignored, and rejections by error code."""

    accepted: int = 0
    duplicate: int = 0
    ignored: int = 0
    rejected: dict[str, int] = msgspec.field(default_factory=dict)


class PosterCounters(WorkerStats, kw_only=True):
    """The ERP poster's postings (``actors.erp.poster``): created, found already posted on a
    replay, and the posting latency percentiles of the recent postings (ms)."""

    posted: int = 0
    replayed: int = 0
    latency_ms: dict[str, float] = msgspec.field(default_factory=dict)


class RevenueCounters(Counters, kw_only=True):
    """The revenue poster's line counters (``actors.revenue.poster``) that revenue event
    accuracy is computed from."""

    uploaded_lines: int = 0
    in_doubt_lines: int = 0
    rejected_lines: int = 0
    dead_lettered_lines: int = 0
