"""What every baseline shares: the paced, bounded arrival of events and the stopwatch.

Theory of operation: ``Arrivals`` releases event ``k`` at ``k / rate`` seconds after the start
(all at once for maximum load), but never lets more than ``window`` events be outstanding, the
same bound the billing simulator applies to the gateway (64 issued-but-unanswered webhooks).
An event's clock starts when it is admitted, exactly as the simulator stamps ``issued_at`` when
a delivery slot frees, so baseline and gateway latencies start at the same point: the event
reaching the ingress. The ingress frees the slot when the event is durable (PubAck or batch
commit), as the gateway answers the webhook. A system that cannot keep up therefore delays
arrivals instead of queueing them without bound, and ``keeps_up`` reads that delay.

``Probe`` records admissions and completions (ERP accepted, or acked for the one-hop
baseline), samples the backlog, measures the process's CPU and peak RSS, and turns all of it
into the figures dict the report uses. It runs inside the baseline's own process and event loop.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._proc import cpu_seconds
from ._report import keeps_up
from ._stats import (
    auto_bin,
    backlog_series,
    cdf_points,
    latency_summary,
    rate_series,
    redelivery_stalls,
    window_series,
)

__all__ = ["Arrivals", "Probe"]


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Probe:
    """Arrival and completion times of one run; see the module docstring."""

    def __init__(self, events: int, box_pids: tuple[int, ...] | list[int] = ()) -> None:
        self.events = events
        # Other processes of the box (nats-server, simulator) read over the same window.
        self.box_pids = [p for p in box_pids if p]
        self._box0: float | None = None
        self._box1: float | None = None
        self.arrived: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.duplicates = 0
        self.errors = 0
        self.samples: list[tuple[float, int, int]] = []  # t, arrived, done
        self.finished = asyncio.Event()
        self._cpu0 = 0.0
        self._cpu1: float | None = None
        self._t_start = 0.0

    def _box_cpu(self) -> float | None:
        vals = [cpu_seconds(p) for p in self.box_pids]
        return None if any(v is None for v in vals) else sum(v for v in vals if v is not None)

    def start(self) -> None:
        self._t_start = time.time()
        self._cpu0 = _cpu_s()
        self._box0 = self._box_cpu()

    def arrive(self, key: str) -> float:
        now = time.time()
        self.arrived[key] = now
        return now

    def complete(self, key: str, now: float) -> None:
        if key in self.done:
            self.duplicates += 1
            return
        self.done[key] = now
        if len(self.done) >= self.events and self._cpu1 is None:
            self._cpu1 = _cpu_s()
            self._box1 = self._box_cpu()
            self.finished.set()

    async def sample(self, interval: float = 0.1) -> None:
        """Record (t, arrived, done) until cancelled."""
        while True:
            self.samples.append((time.time(), len(self.arrived), len(self.done)))
            await asyncio.sleep(interval)

    async def wait(self, stall_timeout: float) -> bool:
        """Wait until every event completed; False when nothing moved for ``stall_timeout``."""
        last, last_change = -1, time.monotonic()
        while not self.finished.is_set():
            n = len(self.done)
            if n != last:
                last, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > stall_timeout:
                return False
            try:
                await asyncio.wait_for(self.finished.wait(), 0.5)
            except TimeoutError:
                pass
        return True

    def figures(self, kind: str, rate: float | None, complete: bool,
                generator_cpu_s: float = 0.0) -> dict[str, Any]:
        """The run's figures; ``generator_cpu_s``: a separate load generator's CPU (counted
        in the whole-box figure only)."""
        cpu1 = self._cpu1 if self._cpu1 is not None else _cpu_s()
        box1 = self._box1 if self._box1 is not None else self._box_cpu()
        n = len(self.done)
        box = (None if not n or not self.box_pids or self._box0 is None or box1 is None
               else round(((cpu1 - self._cpu0) + (box1 - self._box0) + generator_cpu_s)
                          / n * 1e6, 1))
        first = min(self.arrived.values()) if self.arrived else self._t_start
        last_arr = max(self.arrived.values()) if self.arrived else first
        last_done = max(self.done.values()) if self.done else first
        span = last_done - first
        lat = [(self.done[k] - self.arrived[k]) * 1000.0 for k in self.done if k in self.arrived]
        ok, lag = keeps_up(rate, len(self.arrived), first, last_arr)
        arr_span = last_arr - first
        bin_s = auto_bin(span)
        return {
            "kind": kind,
            "available": True,
            "complete": complete,
            "events": self.events,
            "completed": n,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "offered_rate": rate,
            "throughput_eps": round(n / span, 1) if span > 0 else 0.0,
            "arrival_rate_eps": (round((len(self.arrived) - 1) / arr_span, 1)
                                 if arr_span > 0 else None),
            "keeps_up": ok,
            "schedule_lag_s": lag,
            "latency_ms": latency_summary(lat),
            "redelivery_stalls": redelivery_stalls(
                (self.arrived[k], (self.done[k] - self.arrived[k]) * 1000.0)
                for k in self.done if k in self.arrived),
            "latency_source": "per-event (admission at the ingress to ERP bulk answer)",
            "cpu_us_per_event": round((cpu1 - self._cpu0) / n * 1e6, 1) if n else None,
            "cpu_scope": "the whole baseline process (ingress, router and adapter)",
            "cpu_us_per_event_box": box,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "wall_s": round(span, 3),
            "series": {
                "bin_s": bin_s,
                "throughput_eps": rate_series(self.done.values(), first, bin_s),
                "p99_ms": window_series(
                    ((self.done[k], (self.done[k] - self.arrived[k]) * 1000.0)
                     for k in self.done if k in self.arrived), first, bin_s),
                "backlog": backlog_series(self.samples, first, rate, self.events),
            },
            "cdf": cdf_points(lat),
        }


class Arrivals:
    """Paced, bounded admission of ``keys`` into an ingress (see the module docstring)."""

    def __init__(self, keys: list[str], rate: float | None, window: int, probe: Probe) -> None:
        self.keys = keys
        self.rate = rate or None
        self.slots = asyncio.Semaphore(window)
        self.probe = probe

    def release(self, count: int = 1) -> None:
        for _ in range(count):
            self.slots.release()

    async def run(self, admit: Callable[[int, str, float], Awaitable[None]]) -> None:
        """Admit every key in order; ``admit(index, key, arrived_at)`` hands it to the ingress.

        The ingress must call ``release()`` once per admitted event when it is durable.
        """
        n = len(self.keys)
        t0 = time.monotonic()
        sent = 0
        while sent < n:
            if self.rate:
                elapsed = time.monotonic() - t0
                due = min(n, math.floor(elapsed * self.rate) + 1)
                if due <= sent:
                    await asyncio.sleep(max(0.0, sent / self.rate - elapsed))
                    continue
            else:
                due = n
            while sent < due:
                await self.slots.acquire()
                key = self.keys[sent]
                await admit(sent, key, self.probe.arrive(key))
                sent += 1
