"""The monitoring core: 1 s metric snapshots, KPIs against SLA targets and monitoring events.
The subjects and every field: docs/monitoring.md.

Theory of operation
-------------------
``Monitor`` is the core. It is built once by the process wiring, like the breaker, so that a
restart of the metrics actor does not reset what it has seen. It never performs I/O: it is fed

* once a tick (``observe``) with the supervision tree's ``statistics()``, the consumers'
  backlog and the DLQ stream's counts, and answers the metrics document;
* every few seconds (``kpis``) and answers the KPI document plus the SLA breaches that started
  or ended since the previous evaluation;
* synchronously, from wherever things happen: ``note_supervisor`` (the supervisor's
  ``on_event``: a bounded queue, never blocks nor raises), ``note_dead_letter`` (the DLQ sink),
  ``note_breaker`` (the ERP poster's transition callback) and ``note_lag`` (the lag probe).

Actor counters start at 0 again when the supervisor restarts their actor; the core keeps
monotonic totals by noticing the child's restart count change (a restarted actor's count is
all new), so the figures on ``mon.metrics`` and ``/metrics`` never go backwards within one
process. When a child exits, ``note_supervisor`` reads the tree once more (the supervisor
still holds the exiting instance), so the work it did since the last tick is not lost either.
Dead letters are counted as the sink reports each one.

Failure recovery time is measured per breaker: from the transition closed→open to the first
successful ERP posting after the breaker closed again (seen within 0.1 s: the metrics actor
polls the posting count while it waits for one), or to the close itself when nothing was
waiting to be posted.

The Prometheus side (``actors.monitor.prometheus``) renders the same documents, plus the
histograms and counters fed as things happen (``posting_observer``, ``watch_http``), from one
registry per ``Monitor``; the NATS side (``actors.monitor.publisher``) publishes them.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from contracts import Subjects

from ..resilience import CircuitBreaker, Limiter, Transition
from ..runtime import SupervisorEvent
from ..stats import IngressCounters, PosterCounters, RevenueCounters, WorkerStats, percentiles
from .prometheus import CONTENT_TYPE, Exposition
from .sla import LOWER_BOUND, SlaConfig

__all__ = ["SCHEMA_VERSION", "LaneWatch", "Monitor", "instance_id", "kpi_subject"]


class _Observed(Protocol):
    """A platform's connection pool (``actors.infra.http.HttpClient``): told of each request."""

    observer: Callable[[str, str, str, str, float], None] | None

SCHEMA_VERSION = 1
log = logging.getLogger("erpgw.monitor")
_json = msgspec.json.Encoder()
_MAX_QUEUED_EVENTS = 1024
_MAX_RECOVERIES = 1000
# The revenue poster's line counters that revenue event accuracy is computed from.
_REVENUE_LINES = ("uploaded_lines", "in_doubt_lines", "rejected_lines", "dead_lettered_lines")
_MAX_SETTLEMENT_CYCLES = 20_000
# The webhook ingress's answers other than a rejection (rejections are counted by code).
_WEBHOOK_OUTCOMES = ("accepted", "duplicate", "ignored")


_HOST = socket.gethostname()


def instance_id() -> str:
    """``host:pid`` of this gateway process; tells several gateways on one broker apart."""
    return f"{_HOST}:{os.getpid()}"


def kpi_subject(subjects: Subjects) -> str:
    """``<prefix>.mon.kpi``: the KPI documents."""
    return f"{subjects.prefix}.mon.kpi"




@dataclass(frozen=True)
class LaneWatch:
    """What the monitor reads for one lane.

    ``intake`` is ``(child, counter)``: the actor that accepts work into the lane and the
    statistics key that counts it. ``consumers`` are ``(stream, durable)`` in pipeline order;
    what the last one settles has left the lane. ``branches`` are the lane's other consumers
    (parallel readers of the same events): reported like the others, never counted as "out".
    """

    lane: str
    intake: tuple[str, str] | None
    consumers: tuple[tuple[str, str], ...]
    branches: tuple[tuple[str, str], ...] = ()

    @property
    def watched(self) -> tuple[tuple[str, str], ...]:
        """Every consumer reported: the pipeline, then the branches."""
        return self.consumers + self.branches


class _Totals:
    """Monotonic totals from actor counters that start at 0 again when the actor restarts."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, float]] = {}  # key -> (child restarts, raw value)
        self._total: dict[str, float] = {}

    def update(self, key: str, restarts: int, raw: float) -> float:
        seen = self._seen.get(key)
        if seen is None:
            inc = raw
        elif seen[0] != restarts or raw < seen[1]:
            inc = raw  # a fresh actor instance: all its count is new
        else:
            inc = raw - seen[1]
        self._seen[key] = (restarts, raw)
        self._total[key] = self._total.get(key, 0.0) + inc
        return self._total[key]

    def get(self, key: str) -> float:
        return self._total.get(key, 0.0)


class _Outage:
    """One breaker's open period, until the first posting after it closed."""

    __slots__ = ("closed_at", "postings_before", "start", "start_wall")

    def __init__(self, start: float, start_wall: float) -> None:
        self.start = start
        self.start_wall = start_wall
        self.closed_at: float | None = None
        self.postings_before = 0.0


def _num(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else default


def _rate(now: float, before: float, dt: float) -> float:
    return round(max(0.0, now - before) / dt, 3) if dt > 0 else 0.0


class Monitor:
    """The monitoring core; see the module docstring. Not thread-safe: the event loop's thread.

    ``clock`` is the monotonic clock the breakers and limiters run on; ``wall`` gives unix
    seconds for the documents' ``at``.
    """

    def __init__(self, *, lanes: Sequence[LaneWatch], posting_child: str,
                 breakers: Sequence[CircuitBreaker] = (), limiters: Sequence[Limiter] = (),
                 sla: SlaConfig | None = None, instance: str | None = None,
                 revenue_child: str | None = None,
                 tree: Callable[[], Mapping[str, Any]] | None = None,
                 ingress_child: str | None = None, version: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.lanes = tuple(lanes)
        self.posting_child = posting_child
        # The revenue poster, whose line counters give revenue event accuracy (None: not run).
        self.revenue_child = revenue_child
        # The webhook ingress, whose answers are counted by outcome and code (None: not run).
        self.ingress_child = ingress_child
        self.breakers = tuple(breakers)
        self.limiters = tuple(limiters)
        self.sla = sla or SlaConfig()
        self.tree = tree  # the supervision tree's statistics, read when a child exits
        self.instance = instance or instance_id()
        self.clock = clock
        self.wall = wall
        self._t0 = clock()
        self._totals = _Totals()
        self._webhook_codes: set[str] = set()
        self._seq = 0
        self._last_at: float | None = None
        self._prev: dict[str, float] = {}  # totals at the previous snapshot, for the rates
        self._lag: list[float] = []
        self._lag_last = 0.0
        self._events: deque[tuple[str, bytes]] = deque(maxlen=_MAX_QUEUED_EVENTS)
        self.events_dropped = 0
        self._escalations = 0
        self._dead: dict[tuple[str, str], int] = {}
        self._outages: dict[str, _Outage] = {}
        self._postings_seen: deque[tuple[float, float]] = deque(maxlen=8)
        self._recoveries: deque[float] = deque(maxlen=_MAX_RECOVERIES)
        self._recovery_count = 0
        self._recovery_max: float | None = None
        self._over_target = 0
        self._breaches: dict[str, float] = {}  # KPI name -> wall time the breach started
        self._breach_count: dict[str, int] = {}
        self._kpi_seq = 0
        self._kpi_prev: tuple[float, float] | None = None  # (monotonic, postings) at last KPI
        self.last_metrics: dict[str, Any] | None = None
        self.last_kpis: dict[str, Any] | None = None
        # Close readiness (``note_close``): the close-watch actor's latest figures, if it runs.
        self._close: dict[str, Any] | None = None
        # Unresolved dead letters nearing the DLQ's max_age (``note_dlq_expiry``): the
        # dlq-expiry actor's latest count, if it runs.
        self._dlq_expiring: int | None = None
        # Set by the running metrics actor: publish queued events now, not at the next tick.
        self.waker: Callable[[], None] | None = None
        # Flow 3: payment received at the gateway -> payable posted in the ERP (ms), recent.
        self._settlement_cycles: deque[float] = deque(maxlen=_MAX_SETTLEMENT_CYCLES)
        self.settlements_posted = 0
        # This process's Prometheus registry: the documents above, histograms, process metrics.
        self.exposition = Exposition(lambda: (self.last_metrics, self.last_kpis),
                                     version=version)

    # -- synchronous notes from where things happen -------------------------------------------

    def note_supervisor(self, ev: SupervisorEvent) -> None:
        """Queue a supervisor event for ``<prefix>.mon.events.supervisor``. Runs in the
        supervisor's host task: never blocks, never raises (a full queue drops the oldest)."""
        if ev.kind == "escalated":
            self._escalations += 1
        if ev.kind in ("failed", "exited", "stopped") and self.tree is not None:
            # The supervisor still holds the exiting instance: its counts are final now, and
            # the next instance starts again from 0.
            try:
                tree = self.tree()
                self._absorb(tree)
                self._postings(tree, self.clock())
            except Exception:  # monitoring must never disturb supervision
                log.warning("monitor: cannot read the exiting actor's counters", exc_info=True)
        self._queue("supervisor", {
            "kind": "supervisor", "event": ev.kind, "at": self.wall(), "instance": self.instance,
            "supervisor": ev.supervisor, "child": ev.child, "restarts": ev.restarts,
            "error": ev.error, "monotonic_at": ev.at})

    def note_settlement_cycle(self, ms: float) -> None:
        """A partner settlement's payable was posted in the ERP ``ms`` after its payment
        reached the gateway (flow 3's cycle time, ``partner_settlement_cycle_ms``)."""
        self._settlement_cycles.append(max(0.0, ms))
        self.settlements_posted += 1

    def note_close(self, doc: Mapping[str, Any]) -> None:
        """The latest close readiness (``actors.close.kpi_document``: ``blocking``, items
        blocking the close of the watched periods, and each period's count by kind), published
        as the KPI document's ``close`` section. Runs in the close-watch actor; never raises."""
        self._close = dict(doc)

    def note_dlq_expiry(self, count: int) -> None:
        """The latest count of unresolved dead letters nearing the DLQ stream's max_age
        (``actors.dlq_expiry``), published as ``dlq.expiring``. Runs in the dlq-expiry
        actor; never raises."""
        self._dlq_expiring = int(count)

    def note_dead_letter(self, lane: str, code: str) -> None:
        """Count one dead letter (the sink publishes its event itself). Never raises."""
        key = (lane, code)
        self._dead[key] = self._dead.get(key, 0) + 1

    def note_breaker(self, t: Transition) -> bytes:
        """Record a breaker transition for the recovery KPI; returns its monitoring event
        (JSON for ``<prefix>.mon.events.breaker``). Never raises."""
        target, source = str(t.target), str(t.source)
        outage = self._outages.get(t.breaker)
        if target == "open":
            if outage is None:
                self._outages[t.breaker] = _Outage(t.at, self.wall() - (self.clock() - t.at))
            else:
                outage.closed_at = None  # re-opened before any posting: the same outage
        elif target == "closed" and outage is not None:
            outage.closed_at = t.at
            outage.postings_before = self._postings_before(t.at)
        return _json.encode({
            "kind": "breaker", "event": str(t.event), "at": self.wall(),
            "instance": self.instance, "breaker": t.breaker, "source": source,
            "target": target, "reason": t.reason, "monotonic_at": t.at})

    def note_lag(self, lag_s: float) -> None:
        """One sample of the event-loop lag probe (seconds late). Never raises."""
        self._lag_last = max(0.0, lag_s)
        if len(self._lag) < 10_000:
            self._lag.append(self._lag_last)

    def _queue(self, kind: str, doc: Mapping[str, Any]) -> None:
        if len(self._events) == self._events.maxlen:
            self.events_dropped += 1
        self._events.append((kind, _json.encode(doc)))
        if self.waker is not None:
            self.waker()

    def drain_events(self) -> list[tuple[str, bytes]]:
        """Queued ``(kind, JSON)`` events, oldest first; the queue is emptied."""
        out = list(self._events)
        self._events.clear()
        return out

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    # -- recovery time -----------------------------------------------------------------------

    @property
    def awaiting_posting(self) -> bool:
        """A breaker closed and the first posting after it is not seen yet."""
        return any(o.closed_at is not None for o in self._outages.values())

    def _postings_before(self, at: float) -> float:
        before = [total for seen_at, total in self._postings_seen if seen_at <= at]
        return before[-1] if before else (self._postings_seen[0][1] if self._postings_seen
                                          else 0.0)

    def _postings(self, tree: Mapping[str, Any], now: float) -> tuple[float, float, float]:
        """(created, replayed, their sum) accumulated from the posting child's counters."""
        child = _child(tree, self.posting_child)
        restarts = int(_num(child.get("restarts")))
        poster = PosterCounters.of(child.get("actor") or {})
        created = self._totals.update("postings.created", restarts, poster.posted)
        replayed = self._totals.update("postings.replayed", restarts, poster.replayed)
        self._postings_seen.append((now, created + replayed))
        return created, replayed, created + replayed

    def poll_postings(self, tree: Mapping[str, Any]) -> None:
        """Between ticks, while ``awaiting_posting``: look for the first posting after a close
        (the metrics actor calls this from its lag probe, 10 times a second)."""
        now = self.clock()
        _, _, total = self._postings(tree, now)
        self._settle(now, total, idle=False)

    def _settle(self, now: float, postings: float, *, idle: bool) -> None:
        for name, outage in list(self._outages.items()):
            if outage.closed_at is None:
                continue
            if postings > outage.postings_before:
                end = now
            elif idle:
                end = outage.closed_at  # nothing was waiting: recovered when it closed
            else:
                continue
            took = max(0.0, end - outage.start)
            self._recoveries.append(took)
            self._recovery_count += 1
            self._recovery_max = took if self._recovery_max is None else max(
                self._recovery_max, took)
            target = self.sla.failure_recovery_s
            if target > 0 and took > target:
                self._over_target += 1
            del self._outages[name]

    # -- the metrics document ----------------------------------------------------------------

    def _absorb(self, tree: Mapping[str, Any]) -> None:
        """Fold the actors' counters into the monotonic totals."""
        for watch in self.lanes:
            if watch.intake is not None:
                child = _child(tree, watch.intake[0])
                self._totals.update(f"{watch.lane}.in", int(_num(child.get("restarts"))),
                                    _num((child.get("actor") or {}).get(watch.intake[1])))
            for stream, durable in watch.watched:
                child = _consumer_child(tree, stream, durable)
                restarts = int(_num(child.get("restarts")))
                stats = WorkerStats.of(child.get("actor") or {})
                key = f"{watch.lane}.{durable}"
                self._totals.update(f"{key}.processed", restarts, stats.processed)
                self._totals.update(f"{key}.failed", restarts, stats.failed)
                self._totals.update(f"{key}.retried", restarts, stats.retried)
        if self.ingress_child is not None:
            child = _child(tree, self.ingress_child)
            restarts = int(_num(child.get("restarts")))
            hooks = IngressCounters.of(child.get("actor") or {})
            for name, n in (("accepted", hooks.accepted), ("duplicate", hooks.duplicate),
                            ("ignored", hooks.ignored)):
                self._totals.update(f"webhooks.{name}", restarts, n)
            for code, n in hooks.rejected.items():
                self._webhook_codes.add(code)
                self._totals.update(f"webhooks.rejected.{code}", restarts, n)
        if self.revenue_child is not None:
            child = _child(tree, self.revenue_child)
            restarts = int(_num(child.get("restarts")))
            lines = RevenueCounters.of(child.get("actor") or {})
            for name, n in (("uploaded_lines", lines.uploaded_lines),
                            ("in_doubt_lines", lines.in_doubt_lines),
                            ("rejected_lines", lines.rejected_lines),
                            ("dead_lettered_lines", lines.dead_lettered_lines)):
                self._totals.update(f"revenue.{name}", restarts, n)

    def observe(self, tree: Mapping[str, Any], backlog: Mapping[str, tuple[int, int]],
                dlq_counts: tuple[int, int] | None) -> dict[str, Any]:
        """The metrics document for this tick (see docs/monitoring.md).

        ``backlog`` maps a durable to ``(pending, ack_pending)`` (missing: the broker did not
        answer); ``dlq_counts`` is ``(letters, resolutions)`` stored in the DLQ stream, or
        ``None`` when unknown.
        """
        now, wall = self.clock(), self.wall()
        dt = now - self._last_at if self._last_at is not None else now - self._t0
        self._last_at = now
        self._seq += 1
        self._absorb(tree)
        created, replayed, postings = self._postings(tree, now)
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION, "instance": self.instance, "seq": self._seq, "at": wall,
            "uptime_s": round(now - self._t0, 3), "interval_s": round(dt, 3),
        }
        rates: dict[str, float] = {}

        def total(key: str) -> int:
            value = self._totals.get(key)
            rates[key] = _rate(value, self._prev.get(key, 0.0), dt)
            self._prev[key] = value
            return int(value)

        lanes: dict[str, Any] = {}
        for watch in self.lanes:
            lane: dict[str, Any] = {"in": 0, "in_per_s": 0.0}
            if watch.intake is not None:
                lane["in"] = total(f"{watch.lane}.in")
                lane["in_per_s"] = rates[f"{watch.lane}.in"]
            consumers: dict[str, Any] = {}
            for stream, durable in watch.watched:
                stats = WorkerStats.of(_consumer_child(tree, stream, durable).get("actor") or {})
                key = f"{watch.lane}.{durable}"
                pending = backlog.get(durable)
                consumers[durable] = {
                    "processed": total(f"{key}.processed"),
                    "processed_per_s": rates[f"{key}.processed"],
                    "failed": total(f"{key}.failed"),
                    "failed_per_s": rates[f"{key}.failed"],
                    "retried": total(f"{key}.retried"),
                    "in_flight": stats.in_flight,
                    "pending": pending[0] if pending else None,
                    "ack_pending": pending[1] if pending else None,
                }
            lane["out"], lane["out_per_s"] = 0, 0.0
            if watch.consumers:
                last = consumers[watch.consumers[-1][1]]
                lane["out"] = last["processed"] + last["failed"]
                lane["out_per_s"] = round(last["processed_per_s"] + last["failed_per_s"], 3)
            lane["pending"] = sum(c["pending"] or 0 for c in consumers.values())
            lane["ack_pending"] = sum(c["ack_pending"] or 0 for c in consumers.values())
            lane["consumers"] = consumers
            lanes[watch.lane] = lane
        doc["lanes"] = lanes
        doc["backlog"] = {d: {"pending": p, "ack_pending": a} for d, (p, a) in backlog.items()}

        latency = PosterCounters.of(_child(tree, self.posting_child).get("actor")
                                    or {}).latency_ms
        doc["latency_ms"] = {"invoice_posting": {
            "p50": latency.get("p50", 0.0), "p95": latency.get("p95", 0.0),
            "p99": latency.get("p99", 0.0), "max": latency.get("max", 0.0),
            "postings": int(postings)}}
        doc["postings"] = {"created": int(created), "replayed": int(replayed),
                           "per_s": _rate(postings, self._prev.get("postings", 0.0), dt)}
        self._prev["postings"] = postings

        if self.ingress_child is not None:
            doc["webhooks"] = {
                **{name: int(self._totals.get(f"webhooks.{name}")) for name in _WEBHOOK_OUTCOMES},
                "rejected": {code: int(self._totals.get(f"webhooks.rejected.{code}"))
                             for code in sorted(self._webhook_codes)}}
        doc["breakers"] = {b.name: self._breaker(b, now) for b in self.breakers}
        doc["limiters"] = {lim.name: self._limiter(lim, now) for lim in self.limiters}

        dead = sum(self._dead.values())
        by_lane: dict[str, int] = {}
        for (lane_name, _code), n in self._dead.items():
            by_lane[lane_name] = by_lane.get(lane_name, 0) + n
        doc["dlq"] = {
            "dead_lettered": dead,
            "dead_lettered_per_s": _rate(dead, self._prev.get("dlq", 0.0), dt),
            "by_lane": by_lane,
            "by_code": {f"{lane_name}/{code}": n for (lane_name, code), n
                        in sorted(self._dead.items())},
            "stored": dlq_counts[0] if dlq_counts else None,
            "resolved": dlq_counts[1] if dlq_counts else None,
            "unresolved": max(0, dlq_counts[0] - dlq_counts[1]) if dlq_counts else None,
            "expiring": self._dlq_expiring,
        }
        self._prev["dlq"] = float(dead)

        doc["supervisor"] = {
            "name": tree.get("name"),
            "restarts": int(_num(tree.get("restarts"))),
            "escalations": self._escalations,
            "children": {c.get("name", "?"): {"state": c.get("state"),
                                              "restarts": int(_num(c.get("restarts"))),
                                              "last_error": c.get("last_error")}
                         for c in tree.get("children") or []},
        }
        lags = self._lag
        doc["event_loop"] = {
            "lag_ms": round(self._lag_last * 1000, 3),
            "lag_max_ms": round(max(lags) * 1000, 3) if lags else 0.0,
            "lag_mean_ms": round(sum(lags) / len(lags) * 1000, 3) if lags else 0.0,
            "samples": len(lags),
        }
        self._lag = []
        doc["events_dropped"] = self.events_dropped
        doc["actors"] = dict(tree)

        poster_backlog = backlog.get(_durable_of(self.lanes, self.posting_child) or "")
        idle = poster_backlog is not None and sum(poster_backlog) == 0
        self._settle(now, postings, idle=idle)
        self.last_metrics = doc
        return doc

    def _breaker(self, b: CircuitBreaker, now: float) -> dict[str, Any]:
        s = b.stats()
        retry_in = b.retry_in(now)
        return {"state": s.state,
                "retry_in_s": round(retry_in, 3) if math.isfinite(retry_in) else None,
                "consecutive_failures": s.consecutive_failures,
                "failure_ratio": round(s.failure_ratio, 4),
                "trips": s.trips, "reopens": s.reopens, "closes": s.closes,
                "successes": s.successes, "failures": s.failures,
                "rejections": s.rejections, "refused": s.refused}

    def _limiter(self, lim: Limiter, now: float) -> dict[str, Any]:
        s = lim.statistics()
        hold = lim.hold_until
        return {"rate": round(_num(s["rate"]), 3), "configured_rate": s["configured_rate"],
                "burst": s["burst"], "tokens": round(_num(s["tokens"]), 3),
                "in_flight": s["in_flight"], "concurrency": s["concurrency"],
                "hold_s": round(max(0.0, hold - now), 3) if math.isfinite(hold) else 0.0,
                "granted": s["granted"], "refused": s["refused"],
                "throttles": s["throttles"],
                # False while the rate-limiter actor is down: the account grants nothing (F35).
                "open": bool(s.get("open", True))}

    # -- the KPI document --------------------------------------------------------------------

    def kpis(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The KPI document and the SLA events (breach started/ended) since the last call.

        Built from the latest metrics document; call ``observe`` first.
        """
        now, wall = self.clock(), self.wall()
        m = self.last_metrics or {}
        lat = (m.get("latency_ms") or {}).get("invoice_posting") or {}
        postings = float(lat.get("postings", 0))
        prev = self._kpi_prev
        rate = _rate(postings, prev[1], now - prev[0]) if prev else 0.0
        self._kpi_prev = (now, postings)
        self._kpi_seq += 1
        ongoing = [now - o.start for o in self._outages.values()]
        recent = list(self._recoveries)
        recovery = {
            "incidents": self._recovery_count,
            "last_s": round(recent[-1], 3) if recent else None,
            "max_s": round(self._recovery_max, 3) if self._recovery_max is not None else None,
            "mean_s": round(sum(recent) / len(recent), 3) if recent else None,
            "ongoing_s": round(max(ongoing), 3) if ongoing else None,
            "over_target": self._over_target,
        }
        dlq = m.get("dlq") or {}
        revenue, accuracy = self._revenue_accuracy()
        has_latency = postings > 0
        values: dict[str, float | None] = {
            "invoice_posting_p50_ms": lat.get("p50") if has_latency else None,
            "invoice_posting_p95_ms": lat.get("p95") if has_latency else None,
            "invoice_posting_p99_ms": lat.get("p99") if has_latency else None,
            "failure_recovery_s": round(max(ongoing), 3) if ongoing else 0.0,
            "dlq_unresolved": dlq.get("unresolved"),
            "revenue_event_accuracy": accuracy,
        }
        events: list[dict[str, Any]] = []
        checks: dict[str, Any] = {}
        for name, target in self.sla.targets().items():
            value = values.get(name)
            was = self._breaches.get(name)
            if value is None:
                breached = was is not None
            else:
                breached = value < target if name in LOWER_BOUND else value > target
            if breached and was is None:
                self._breaches[name] = wall
                self._breach_count[name] = self._breach_count.get(name, 0) + 1
                events.append({"kind": "sla", "event": "started", "at": wall,
                               "instance": self.instance, "sla": name, "target": target,
                               "value": value, "since": wall})
            elif not breached and was is not None:
                del self._breaches[name]
                events.append({"kind": "sla", "event": "ended", "at": wall,
                               "instance": self.instance, "sla": name, "target": target,
                               "value": value, "since": was,
                               "duration_s": round(wall - was, 3)})
            checks[name] = {"target": target, "value": value, "breached": breached,
                            "since": self._breaches.get(name),
                            "breaches": self._breach_count.get(name, 0)}
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION, "instance": self.instance, "seq": self._kpi_seq, "at": wall,
            "metrics_seq": m.get("seq"),
            "invoice_posting_latency_ms": {k: lat.get(k, 0.0) for k in
                                           ("p50", "p95", "p99", "max")},
            "invoices_posted": int(postings),
            "invoices_posted_per_s": rate,
            "failure_recovery": recovery,
            "revenue_event_accuracy": accuracy,
            "revenue_lines": revenue,
            "partner_settlement_cycle_ms": {
                **percentiles(self._settlement_cycles, (50, 99)),
                "settlements": self.settlements_posted},
            "dlq": {"dead_lettered": dlq.get("dead_lettered", 0), "stored": dlq.get("stored"),
                    "unresolved": dlq.get("unresolved"), "expiring": self._dlq_expiring},
            "sla": {"ok": not self._breaches, "breached": sorted(self._breaches),
                    "checks": checks},
            # Items blocking the close (``erpgw close status``); null until the close-watch
            # actor has made its first pass (or when it does not run).
            "close": self._close,
        }
        self.last_kpis = doc
        return doc, events

    def _revenue_accuracy(self) -> tuple[dict[str, int] | None, float | None]:
        """The revenue poster's line totals and revenue event accuracy: lines uploaded exactly
        once ÷ lines that should have been (uploaded + in doubt + rejected + dead-lettered).
        ``(None, None)`` without a revenue poster; accuracy ``None`` before its first line."""
        if self.revenue_child is None:
            return None, None
        lines = {name.removesuffix("_lines"): int(self._totals.get(f"revenue.{name}"))
                 for name in _REVENUE_LINES}
        due = sum(lines.values())
        return lines, (round(lines["uploaded"] / due, 6) if due else None)

    # -- Prometheus ----------------------------------------------------------------------------

    def posting_observer(self, flow: str) -> Callable[[float], None]:
        """A callback for one flow's poster: each call observes one posting's latency (ms,
        from the event's occurrence to its posting) in the posting-latency histogram."""
        histogram = self.exposition.posting_latency.labels(flow=flow)
        return lambda ms: histogram.observe(max(0.0, ms) / 1000)

    def watch_http(self, *clients: _Observed) -> None:
        """Observe every request of these platform clients (latency by endpoint and status,
        429 answers)."""
        for client in clients:
            client.observer = self.exposition.observe_request

    def watch_breakers(self, *breakers: CircuitBreaker) -> None:
        """Report these breakers too (those made after the monitor, e.g. per flow)."""
        known = {b.name for b in self.breakers}
        self.breakers += tuple(b for b in breakers if b.name not in known)

    def prometheus(self) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for ``GET /metrics``: this process's registry in
        the Prometheus text format 0.0.4 (503 before the first snapshot)."""
        if self.last_metrics is None:
            return 503, CONTENT_TYPE, b"# no metrics snapshot yet\n"
        return 200, CONTENT_TYPE, self.exposition.render()


def _child(tree: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for c in tree.get("children") or []:
        if c.get("name") == name:
            return c  # type: ignore[no-any-return]
    return {}


def _consumer_child(tree: Mapping[str, Any], stream: str, durable: str) -> Mapping[str, Any]:
    for c in tree.get("children") or []:
        if (c.get("actor") or {}).get("consumer") == f"{stream}/{durable}":
            return c  # type: ignore[no-any-return]
    return _child(tree, durable)


def _durable_of(lanes: Iterable[LaneWatch], child: str) -> str | None:
    for watch in lanes:
        for _stream, durable in watch.consumers:
            if durable == child:
                return durable
    return None
