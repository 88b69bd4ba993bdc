"""The Prometheus side of monitoring: one ``prometheus_client`` registry per gateway process.

``Exposition`` owns the registry. It holds

* a collector of the monitor's latest metrics and KPI documents (``SnapshotCollector``): every
  value on ``GET /metrics`` that is also on ``mon.metrics``/``mon.kpi`` is the same figure,
  milliseconds turned into seconds;
* histograms observed as things happen: invoice posting latency per flow (from the event's
  occurrence at the platform to its posting), and every platform request's latency by
  platform, endpoint (ids folded into ``{id}``), method and status;
* counters of 429 answers by platform and endpoint;
* the process metrics of ``prometheus_client`` (CPU, memory, file descriptors, GC) and
  ``erpgw_build_info``.

The registry is not the library's global default, so several gateways (or tests) in one
interpreter never mix their figures. Names and units follow the Prometheus conventions
(``_seconds``, ``_total`` on counters, base units).
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "HTTP_BUCKETS", "POSTING_BUCKETS", "Exposition", "SnapshotCollector",
           "endpoint_label", "prometheus_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Issue-to-posting latency: a healthy run posts within a second or two; an ERP outage or a
# 429 storm holds postings for minutes. The SLA targets (docs/monitoring.md) fall on buckets.
POSTING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                   1800.0)
# One platform request: milliseconds when healthy, up to the client timeout (10-30 s).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Docs = tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]

_ID_SEGMENT = re.compile(r"^(?!v\d+$).*\d")


def endpoint_label(path: str) -> str:
    """A request path as a low-cardinality label: no query string, and every segment that
    carries a digit (an id, a period) but is not a version (``v1``) folded into ``{id}``."""
    path = path.split("?", 1)[0]
    return "/".join("{id}" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/"))


def _version() -> str:
    try:
        return distribution_version("erpgw")
    except PackageNotFoundError:  # pragma: no cover - a source tree never installed
        return "0+unknown"


class Exposition:
    """One process's Prometheus registry; see the module docstring.

    ``source`` returns the monitor's latest (metrics, KPI) documents, read at each scrape.
    """

    def __init__(self, source: Callable[[], Docs], *, version: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(SnapshotCollector(source))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Info("erpgw_build", "The running erpgw: its version and Python.",
             registry=self.registry).info({"version": version or _version(),
                                           "python": platform.python_version()})
        self.posting_latency = Histogram(
            "erpgw_invoice_posting_latency_seconds",
            "From the event's occurrence at the source platform to its posting at the target "
            "platform, per flow (erp: invoices to the ERP journal, revenue: invoice lines to "
            "the revenue platform).",
            ["flow"], buckets=POSTING_BUCKETS, registry=self.registry)
        self.request_latency = Histogram(
            "erpgw_platform_request_duration_seconds",
            "Duration of each request to a platform, by platform, endpoint, method and status "
            "(the HTTP status, or timeout / connection_error when none came back).",
            ["platform", "endpoint", "method", "status"], buckets=HTTP_BUCKETS,
            registry=self.registry)
        self.rate_limited = Counter(
            "erpgw_platform_rate_limited_responses_total",
            "429 answers from a platform, by platform and endpoint.",
            ["platform", "endpoint"], registry=self.registry)

    def observe_request(self, platform_name: str, method: str, path: str, status: str,
                        seconds: float) -> None:
        """One request to a platform (``HttpClient.observer``). Never raises."""
        endpoint = endpoint_label(path)
        self.request_latency.labels(platform=platform_name, endpoint=endpoint, method=method,
                                    status=status).observe(max(0.0, seconds))
        if status == "429":
            self.rate_limited.labels(platform=platform_name, endpoint=endpoint).inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text format 0.0.4."""
        return generate_latest(self.registry)


def prometheus_text(m: Mapping[str, Any], k: Mapping[str, Any] | None) -> str:
    """The Prometheus text (format 0.0.4) of a metrics document and a KPI document alone."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SnapshotCollector(lambda: (m, k)))
    return generate_latest(registry).decode()


def _is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _family(kind: str, name: str, doc: str, labels: list[str],
            rows: Iterable[tuple[list[str], object]]) -> Metric | None:
    fam: GaugeMetricFamily | CounterMetricFamily
    if kind == "counter":
        fam = CounterMetricFamily(name, doc, labels=labels)
    else:
        fam = GaugeMetricFamily(name, doc, labels=labels)
    n = 0
    for values, value in rows:
        if _is_num(value):
            fam.add_metric(values, float(value))  # type: ignore[arg-type]
            n += 1
    return fam if n else None


class SnapshotCollector(Collector):
    """The monitor's latest documents as metric families (nothing before the first one)."""

    def __init__(self, source: Callable[[], Docs]) -> None:
        self.source = source

    def describe(self) -> Iterable[Metric]:
        return []  # families vary with the documents: never pre-registered names

    def collect(self) -> Iterator[Metric]:
        m, k = self.source()
        if m is None:
            return
        for fam in (*_metrics_families(m), *(_kpi_families(k) if k is not None else ())):
            if fam is not None:
                yield fam


def _metrics_families(m: Mapping[str, Any]) -> Iterator[Metric | None]:
    g, c = "gauge", "counter"
    yield _family(g, "erpgw_metrics_snapshot_seq",
                  "Sequence number of the metrics snapshot these figures come from.", [],
                  [([], m.get("seq"))])
    yield _family(g, "erpgw_uptime_seconds", "Seconds since the gateway's monitor started.", [],
                  [([], m.get("uptime_s"))])
    lanes: Mapping[str, Any] = m.get("lanes") or {}
    yield _family(c, "erpgw_lane_in", "Events accepted into the lane at its intake.", ["lane"],
                  [([n], ln["in"]) for n, ln in lanes.items()])
    yield _family(c, "erpgw_lane_out",
                  "Events settled by the lane's last stage (processed or dead-lettered).",
                  ["lane"], [([n], ln["out"]) for n, ln in lanes.items()])
    yield _family(g, "erpgw_lane_throughput_per_second",
                  "Events per second over the last snapshot interval, into and out of the lane.",
                  ["lane", "direction"], [([n, d], ln[f"{d}_per_s"]) for n, ln in lanes.items()
                                          for d in ("in", "out")])
    yield _family(g, "erpgw_lane_pending", "Messages of the lane not yet delivered, all its "
                  "consumers.", ["lane"], [([n], ln.get("pending")) for n, ln in lanes.items()])
    cons = [(n, name, v) for n, ln in lanes.items() for name, v in ln["consumers"].items()]
    lc = ["lane", "consumer"]
    yield _family(c, "erpgw_consumer_processed", "Messages a consumer processed and acked.", lc,
                  [([n, name], v["processed"]) for n, name, v in cons])
    yield _family(c, "erpgw_consumer_failed", "Messages a consumer dead-lettered.", lc,
                  [([n, name], v["failed"]) for n, name, v in cons])
    yield _family(c, "erpgw_consumer_retries",
                  "Deliveries a consumer handed back for a later retry (nak with backoff).", lc,
                  [([n, name], v.get("retried")) for n, name, v in cons])
    yield _family(g, "erpgw_consumer_pending",
                  "Messages in the stream not yet delivered to the consumer.", lc,
                  [([n, name], v["pending"]) for n, name, v in cons])
    yield _family(g, "erpgw_consumer_ack_pending",
                  "Messages delivered to the consumer and not yet acknowledged.", lc,
                  [([n, name], v["ack_pending"]) for n, name, v in cons])
    postings = m.get("postings") or {}
    yield _family(c, "erpgw_erp_postings",
                  "Journal entries the ERP accepted: created, or replayed under a known key.",
                  ["outcome"], [([o], postings.get(o)) for o in ("created", "replayed")])
    breakers: Mapping[str, Any] = m.get("breakers") or {}
    yield _family(g, "erpgw_breaker_state", "1 for the state each circuit breaker is in.",
                  ["breaker", "state"], [([b, s], 1 if v["state"] == s else 0)
                                         for b, v in breakers.items()
                                         for s in ("closed", "open", "half_open")])
    yield _family(c, "erpgw_breaker_trips", "Times a breaker opened from closed.", ["breaker"],
                  [([b], v["trips"]) for b, v in breakers.items()])
    yield _family(c, "erpgw_breaker_failures", "Calls that failed through the platform's fault.",
                  ["breaker"], [([b], v["failures"]) for b, v in breakers.items()])
    yield _family(c, "erpgw_breaker_rejections",
                  "Calls refused without trying because the breaker was open.", ["breaker"],
                  [([b], v.get("rejections")) for b, v in breakers.items()])
    limiters: Mapping[str, Any] = m.get("limiters") or {}
    for key, name, doc in (
            ("rate", "erpgw_limiter_rate_per_second", "Permits per second now (adaptive)."),
            ("burst", "erpgw_limiter_burst", "Bucket size."),
            ("tokens", "erpgw_limiter_tokens", "Tokens in the bucket at its last use."),
            ("in_flight", "erpgw_limiter_in_flight", "Permits taken and not yet released."),
            ("hold_s", "erpgw_limiter_hold_seconds", "Seconds left of a 429/Retry-After hold.")):
        yield _family(g, name, doc, ["limiter"], [([n], v[key]) for n, v in limiters.items()])
    yield _family(c, "erpgw_limiter_throttles", "429 answers the limiter adapted to.",
                  ["limiter"], [([n], v["throttles"]) for n, v in limiters.items()])
    dlq = m.get("dlq") or {}
    yield _family(c, "erpgw_dead_letters",
                  "Messages this gateway process dead-lettered, by lane and error code.",
                  ["lane", "code"], [(key.split("/", 1), n)
                                     for key, n in (dlq.get("by_code") or {}).items()])
    yield _family(g, "erpgw_dlq_stored", "Dead letters stored in the DLQ stream (all time).", [],
                  [([], dlq.get("stored"))])
    yield _family(g, "erpgw_dlq_unresolved", "Dead letters neither replayed nor purged.", [],
                  [([], dlq.get("unresolved"))])
    yield _family(g, "erpgw_dlq_expiring",
                  "Unresolved dead letters older than dlq.expiry_warn_fraction of the DLQ "
                  "stream's max_age (dropped by the broker at max_age).", [],
                  [([], dlq.get("expiring"))])
    yield from _webhook_families(m)
    sup = m.get("supervisor") or {}
    yield _family(c, "erpgw_supervisor_restarts", "Child restarts by the supervisor.",
                  ["supervisor"], [([str(sup.get("name"))], sup.get("restarts"))])
    yield _family(c, "erpgw_supervisor_escalations",
                  "Times a supervisor gave up (restart intensity exceeded).", ["supervisor"],
                  [([str(sup.get("name"))], sup.get("escalations"))])
    children: Mapping[str, Any] = sup.get("children") or {}
    yield _family(c, "erpgw_actor_restarts", "Restarts of each supervised actor.", ["actor"],
                  [([n], v["restarts"]) for n, v in children.items()])
    yield _family(g, "erpgw_actor_running", "1 while the actor is running.", ["actor"],
                  [([n], 1 if v["state"] == "running" else 0) for n, v in children.items()])
    loop = m.get("event_loop") or {}
    yield _family(g, "erpgw_event_loop_lag_seconds",
                  "Event-loop lag: last probe, and the largest over the snapshot interval.",
                  ["stat"], [(["last"], _seconds(loop.get("lag_ms"))),
                             (["max"], _seconds(loop.get("lag_max_ms")))])


def _seconds(ms: object) -> float | None:
    return round(float(ms) / 1000, 6) if _is_num(ms) else None  # type: ignore[arg-type]


def _webhook_families(m: Mapping[str, Any]) -> Iterator[Metric | None]:
    hooks: Mapping[str, Any] = m.get("webhooks") or {}
    rows: list[tuple[list[str], object]] = []
    for outcome in ("accepted", "duplicate", "ignored"):
        rows.append(([outcome, ""], hooks.get(outcome)))
    for code, n in (hooks.get("rejected") or {}).items():
        rows.append((["rejected", str(code)], n))
    yield _family("counter", "erpgw_webhooks",
                  "Webhook deliveries answered by the ingress, by outcome (accepted, duplicate, "
                  "ignored, rejected) and error code (rejected only).", ["outcome", "code"],
                  rows)


def _kpi_families(k: Mapping[str, Any]) -> Iterator[Metric | None]:
    g, c = "gauge", "counter"
    rec = k.get("failure_recovery") or {}
    yield _family(c, "erpgw_failure_recoveries",
                  "Breaker outages recovered (first posting after the close).", [],
                  [([], rec.get("incidents"))])
    yield _family(g, "erpgw_failure_recovery_seconds",
                  "Failure recovery time: last and longest recovery, and the outage going on.",
                  ["stat"], [([s], rec.get(f"{s}_s")) for s in ("last", "max")]
                  + [(["ongoing"], rec.get("ongoing_s") or 0.0)])  # 0: no outage going on
    yield _family(g, "erpgw_revenue_event_accuracy",
                  "Revenue lines uploaded exactly once / lines that should have been.", [],
                  [([], k.get("revenue_event_accuracy"))])
    cycle = k.get("partner_settlement_cycle_ms") or {}
    if cycle.get("settlements"):
        yield _family(g, "erpgw_partner_settlement_cycle_seconds",
                      "Partner settlement cycle time (payment at the gateway -> ERP payable), "
                      "by quantile over the recent settlements.", ["quantile"],
                      [([q], _seconds(cycle.get(f"p{p}"))) for q, p in (("0.5", "50"),
                                                                        ("0.99", "99"))])
    yield _family(c, "erpgw_partner_settlements",
                  "Partner settlements whose payable the ERP recorded (cycle times measured).",
                  [], [([], cycle.get("settlements"))])
    periods: Mapping[str, Any] = (k.get("close") or {}).get("periods") or {}
    yield _family(g, "erpgw_close_blocking",
                  "Items blocking the close of a month (erpgw close status), by month.",
                  ["period"], [([p], v.get("blocking")) for p, v in sorted(periods.items())])
    checks: Mapping[str, Any] = (k.get("sla") or {}).get("checks") or {}
    yield _family(g, "erpgw_sla_target", "SLA target of a KPI (its unit is in the name).",
                  ["sla"], [([n], v["target"]) for n, v in checks.items()])
    yield _family(g, "erpgw_sla_value", "The KPI's value at the last evaluation.", ["sla"],
                  [([n], v["value"]) for n, v in checks.items()])
    yield _family(g, "erpgw_sla_breached", "1 while the KPI breaches its SLA target.", ["sla"],
                  [([n], 1 if v["breached"] else 0) for n, v in checks.items()])
    yield _family(c, "erpgw_sla_breaches", "Breaches that started.", ["sla"],
                  [([n], v["breaches"]) for n, v in checks.items()])
