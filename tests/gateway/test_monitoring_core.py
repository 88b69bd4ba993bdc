"""The monitoring core and the dashboard's view, without I/O: totals that survive actor
restarts, rates, failure recovery time, SLA breaches, supervisor events, the Prometheus text
(read back with the reference parser) and what ``erpgw monitor`` shows."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from actors.monitor import LaneWatch, Monitor, SlaConfig, prometheus_text
from actors.resilience import BreakerConfig, CircuitBreaker, RateLimiter
from actors.runtime import SupervisorEvent
from gateway.commands.monitor import MonitorView, describe_event, sparkline
from gateway.config import ConfigError, load_config

S = "ERPGW_BILLING"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def tree(*, accepted: int = 0, routed: int = 0, posted: int = 0, failed: int = 0,
         replayed: int = 0, poster_restarts: int = 0, p99: float = 0.0) -> dict[str, Any]:
    lat = {"p50": p99 / 2, "p95": p99 * 0.9, "p99": p99, "max": p99}
    return {"name": "gateway", "state": "running", "restarts": poster_restarts, "children": [
        {"name": "erp-journal", "state": "running", "restarts": poster_restarts,
         "last_error": None,
         "actor": {"consumer": f"{S}/erp-journal", "processed": posted + replayed,
                   "failed": failed, "in_flight": 0, "posted": posted, "replayed": replayed,
                   "latency_ms": lat}},
        {"name": "invoice-router", "state": "running", "restarts": 0, "last_error": None,
         "actor": {"consumer": f"{S}/invoice-router", "processed": routed, "failed": 0,
                   "in_flight": 0}},
        {"name": "billing-ingress", "state": "running", "restarts": 0, "last_error": None,
         "actor": {"accepted": accepted}},
    ]}


def monitor(clock: Clock, sla: SlaConfig | None = None, **kw: Any) -> Monitor:
    return Monitor(lanes=[LaneWatch("billing", intake=("billing-ingress", "accepted"),
                                    consumers=((S, "invoice-router"), (S, "erp-journal")))],
                   posting_child="erp-journal", sla=sla, instance="host:1", clock=clock,
                   wall=lambda: 1_700_000_000 + clock.t, **kw)


IDLE = {"invoice-router": (0, 0), "erp-journal": (0, 0)}


def test_totals_and_rates_survive_actor_restarts() -> None:
    clock = Clock()
    mon = monitor(clock)
    clock.t += 1
    m = mon.observe(tree(accepted=10, routed=10, posted=8), IDLE, (0, 0))
    assert m["seq"] == 1 and m["interval_s"] == 1.0 and m["instance"] == "host:1"
    lane = m["lanes"]["billing"]
    assert (lane["in"], lane["in_per_s"], lane["out"], lane["out_per_s"]) == (10, 10.0, 8, 8.0)
    clock.t += 2
    # the poster crashed and restarted: its own count is back to 3; the total goes on
    m = mon.observe(tree(accepted=12, routed=12, posted=3, poster_restarts=1), IDLE, None)
    lane = m["lanes"]["billing"]
    assert lane["consumers"]["erp-journal"]["processed"] == 11
    assert lane["consumers"]["erp-journal"]["processed_per_s"] == 1.5
    assert (lane["in"], lane["in_per_s"]) == (12, 1.0)
    assert m["postings"] == {"created": 11, "replayed": 0, "per_s": 1.5}
    assert m["dlq"]["stored"] is None and m["dlq"]["unresolved"] is None  # broker silent


def test_a_crashing_actors_last_counts_are_kept() -> None:
    clock = Clock()
    state = {"t": tree(posted=5, routed=5)}
    mon = monitor(clock, tree=lambda: state["t"])
    mon.observe(state["t"], IDLE, None)
    state["t"] = tree(posted=9, routed=9)  # 4 more, then it crashed before the next tick
    mon.note_supervisor(SupervisorEvent("gateway", "erp-journal", "failed", 0, "boom", 1.0))
    state["t"] = tree(posted=2, routed=11, poster_restarts=1)
    m = mon.observe(state["t"], IDLE, None)
    assert m["lanes"]["billing"]["consumers"]["erp-journal"]["processed"] == 11
    assert m["postings"]["created"] == 11


def test_supervisor_events_are_queued_bounded_and_wake_the_publisher() -> None:
    clock = Clock()
    mon = monitor(clock)
    woken = []
    mon.waker = lambda: woken.append(1)
    mon.note_supervisor(SupervisorEvent("gateway", "erp-journal", "restarting", 2, "x", 5.0))
    mon.note_supervisor(SupervisorEvent("gateway", "erp-journal", "escalated", 3, "x", 6.0))
    assert len(woken) == 2 and mon.has_events
    events = [(k, msgspec.json.decode(d)) for k, d in mon.drain_events()]
    assert [k for k, _ in events] == ["supervisor", "supervisor"]
    first = events[0][1]
    assert first == {"kind": "supervisor", "event": "restarting", "at": 1_700_000_100.0,
                     "instance": "host:1", "supervisor": "gateway", "child": "erp-journal",
                     "restarts": 2, "error": "x", "monotonic_at": 5.0}
    assert not mon.has_events
    for i in range(1100):
        mon.note_supervisor(SupervisorEvent("gateway", "c", "started", i, None, 0.0))
    assert len(mon.drain_events()) == 1024 and mon.events_dropped == 1100 - 1024
    m = mon.observe(tree(), IDLE, None)
    assert m["supervisor"]["escalations"] == 1 and m["events_dropped"] == 76


def test_failure_recovery_from_open_to_the_first_posting_after_close() -> None:
    clock = Clock()
    breaker = CircuitBreaker("erp", BreakerConfig(consecutive_failures=2, open_for=1.0))
    mon = monitor(clock, SlaConfig(failure_recovery_s=2.0), breakers=[breaker])
    mon.observe(tree(posted=5), IDLE, None)
    for _ in range(2):
        assert breaker.allow(clock.t)
        breaker.record_failure(clock.t)
    (opened,) = breaker.drain_transitions()
    event = msgspec.json.decode(mon.note_breaker(opened))
    assert (event["kind"], event["source"], event["target"]) == ("breaker", "closed", "open")
    assert event["at"] == 1_700_000_100.0 and event["breaker"] == "erp"
    clock.t += 1.5
    m = mon.observe(tree(posted=5), IDLE, None)
    assert m["breakers"]["erp"]["state"] == "open" and m["breakers"]["erp"]["trips"] == 1
    k, events = mon.kpis()
    assert k["failure_recovery"]["ongoing_s"] == 1.5 and events == []
    clock.t += 1.0  # 2.5 s into the outage: over the 2 s target
    k, events = mon.kpis()
    assert k["sla"]["checks"]["failure_recovery_s"]["breached"] is True
    assert [(e["sla"], e["event"]) for e in events] == [("failure_recovery_s", "started")]
    assert breaker.allow(clock.t)  # half-open probe succeeds: closed
    breaker.record_success(clock.t)
    for t in breaker.drain_transitions():
        mon.note_breaker(t)
    assert mon.awaiting_posting
    clock.t += 0.1
    mon.poll_postings(tree(posted=5))  # nothing posted yet
    assert mon.awaiting_posting
    clock.t += 0.1
    mon.poll_postings(tree(posted=7))
    assert not mon.awaiting_posting
    k, events = mon.kpis()
    rec = k["failure_recovery"]
    assert rec == {"incidents": 1, "last_s": 2.7, "max_s": 2.7, "mean_s": 2.7,
                   "ongoing_s": None, "over_target": 1}
    assert [(e["event"], e["duration_s"]) for e in events] == [("ended", 0.2)]


def test_recovery_ends_at_the_close_when_nothing_was_waiting() -> None:
    clock = Clock()
    breaker = CircuitBreaker("erp", BreakerConfig(consecutive_failures=1, open_for=1.0))
    mon = monitor(clock, breakers=[breaker])
    mon.observe(tree(posted=1), IDLE, None)
    assert breaker.allow(clock.t)
    breaker.record_failure(clock.t)
    clock.t += 1.0
    assert breaker.allow(clock.t)
    breaker.record_rejection(clock.t)  # the probe was answered: closed, but nothing posted
    for t in breaker.drain_transitions():
        mon.note_breaker(t)
    clock.t += 5.0
    mon.observe(tree(posted=1), IDLE, None)  # backlog empty: recovered at the close
    k, _ = mon.kpis()
    assert k["failure_recovery"]["last_s"] == 1.0


def test_sla_latency_breach_starts_and_ends() -> None:
    clock = Clock()
    mon = monitor(clock, SlaConfig(invoice_posting_p99_ms=100.0, dlq_unresolved=0))
    mon.observe(tree(), IDLE, (0, 0))
    k, events = mon.kpis()  # no posting yet: no value, no breach
    assert k["sla"]["checks"]["invoice_posting_p99_ms"]["value"] is None and events == []
    assert k["sla"]["ok"] is True and set(k["sla"]["checks"]) == {
        "invoice_posting_p99_ms", "failure_recovery_s", "dlq_unresolved"}
    mon.observe(tree(posted=3, p99=250.0), IDLE, (2, 1))
    k, events = mon.kpis()
    assert k["sla"]["breached"] == ["dlq_unresolved", "invoice_posting_p99_ms"]
    assert {(e["sla"], e["event"]) for e in events} == {
        ("invoice_posting_p99_ms", "started"), ("dlq_unresolved", "started")}
    assert k["dlq"] == {"dead_lettered": 0, "stored": 2, "unresolved": 1, "expiring": None}
    clock.t += 3
    mon.observe(tree(posted=9, p99=80.0), IDLE, (2, 2))
    k, events = mon.kpis()
    assert k["sla"]["ok"] is True and k["invoices_posted"] == 9
    assert k["invoices_posted_per_s"] == 2.0
    assert {(e["sla"], e["event"], e["duration_s"]) for e in events} == {
        ("invoice_posting_p99_ms", "ended", 3.0), ("dlq_unresolved", "ended", 3.0)}
    assert k["sla"]["checks"]["invoice_posting_p99_ms"]["breaches"] == 1


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_prometheus_text_parses_and_carries_the_json_figures() -> None:
    clock = Clock()
    limiter = RateLimiter("erp")
    mon = monitor(clock, breakers=[CircuitBreaker("erp.journal_bulk")], limiters=[limiter])
    assert mon.prometheus()[0] == 503  # nothing observed yet
    mon.note_dead_letter("billing", 'odd"code\\x')
    clock.t += 1
    m = mon.observe(tree(accepted=4, routed=4, posted=3, failed=1, p99=1234.5), IDLE, (1, 0))
    k, _ = mon.kpis()
    status, ctype, body = mon.prometheus()
    assert status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8"
    snapshot = _samples(prometheus_text(m, k))
    samples = _samples(body.decode())
    assert snapshot.items() <= samples.items()  # the scrape carries every document figure
    assert samples[("erpgw_lane_in_total", (("lane", "billing"),))] == 4
    assert samples[("erpgw_lane_out_total", (("lane", "billing"),))] == 4
    assert samples[("erpgw_consumer_failed_total",
                    (("consumer", "erp-journal"), ("lane", "billing")))] == 1
    assert samples[("erpgw_consumer_retries_total",
                    (("consumer", "erp-journal"), ("lane", "billing")))] == 0
    assert samples[("erpgw_dead_letters_total",
                    (("code", 'odd"code\\x'), ("lane", "billing")))] == 1
    assert samples[("erpgw_dlq_unresolved", ())] == 1
    assert samples[("erpgw_limiter_rate_per_second", (("limiter", "erp"),))] == 100
    assert samples[("erpgw_sla_target", (("sla", "invoice_posting_p99_ms"),))] == 5000
    assert samples[("erpgw_breaker_state", (("breaker", "erp.journal_bulk"),
                                            ("state", "closed")))] == 1
    families = _families(body.decode())
    assert families["erpgw_lane_in"].type == "counter"
    assert families["erpgw_breaker_state"].type == "gauge"
    # the process's own figures: build info and the process collector
    (build,) = families["erpgw_build_info"].samples
    assert build.name == "erpgw_build_info" and build.labels["version"]
    assert samples[("process_cpu_seconds_total", ())] > 0
    # every family has HELP and TYPE
    assert all(f.documentation for f in families.values())


def test_histograms_of_postings_and_platform_requests() -> None:
    from actors.infra.http import HttpClient

    clock = Clock()
    mon = monitor(clock)
    erp = mon.posting_observer("erp")
    for ms in (40.0, 400.0, 4000.0, 400_000.0):
        erp(ms)
    client = HttpClient("http://erp.invalid", platform="erp")
    mon.watch_http(client)
    assert client.observer is not None
    client.observer("erp", "POST", "/erp/v1/journal-entries/bulk", "200", 0.02)
    client.observer("erp", "POST", "/erp/v1/journal-entries/bulk", "429", 0.003)
    client.observer("partner", "GET", "/partner/v1/attributions/in_0042?x=1", "timeout", 10.0)
    clock.t += 1
    mon.observe(tree(), IDLE, None)
    text = mon.prometheus()[2].decode()
    families = _families(text)
    assert families["erpgw_invoice_posting_latency_seconds"].type == "histogram"
    assert families["erpgw_platform_request_duration_seconds"].type == "histogram"
    samples = _samples(text)
    flow = (("flow", "erp"),)
    assert samples[("erpgw_invoice_posting_latency_seconds_count", flow)] == 4
    assert samples[("erpgw_invoice_posting_latency_seconds_sum", flow)] == pytest.approx(404.44)
    assert samples[("erpgw_invoice_posting_latency_seconds_bucket", (("flow", "erp"),
                                                                     ("le", "0.05")))] == 1
    assert samples[("erpgw_invoice_posting_latency_seconds_bucket", (("flow", "erp"),
                                                                     ("le", "5.0")))] == 3
    assert samples[("erpgw_invoice_posting_latency_seconds_bucket", (("flow", "erp"),
                                                                     ("le", "+Inf")))] == 4
    bulk = (("endpoint", "/erp/v1/journal-entries/bulk"), ("method", "POST"),
            ("platform", "erp"))
    assert samples[("erpgw_platform_request_duration_seconds_count",
                    (*bulk[:2], ("platform", "erp"), ("status", "429")))] == 1
    assert samples[("erpgw_platform_rate_limited_responses_total",
                    (("endpoint", "/erp/v1/journal-entries/bulk"), ("platform", "erp")))] == 1
    # ids and query strings are folded out of the endpoint label
    assert samples[("erpgw_platform_request_duration_seconds_count",
                    (("endpoint", "/partner/v1/attributions/{id}"), ("method", "GET"),
                     ("platform", "partner"), ("status", "timeout")))] == 1


def test_each_monitor_has_its_own_registry() -> None:
    a, b = monitor(Clock()), monitor(Clock())
    a.posting_observer("erp")(100.0)
    for mon in (a, b):
        mon.clock.t += 1  # type: ignore[attr-defined]
        mon.observe(tree(), IDLE, None)
    count = ("erpgw_invoice_posting_latency_seconds_count", (("flow", "erp"),))
    assert _samples(a.prometheus()[2].decode())[count] == 1
    assert count not in _samples(b.prometheus()[2].decode())


def test_webhook_answers_are_counted_by_outcome_and_code() -> None:
    clock = Clock()
    mon = monitor(clock, ingress_child="billing-ingress")
    t = tree(accepted=5)
    t["children"][2]["actor"].update(duplicate=2, ignored=1,
                                     rejected={"webhook.bad_signature": 3})
    clock.t += 1
    m = mon.observe(t, IDLE, None)
    assert m["webhooks"] == {"accepted": 5, "duplicate": 2, "ignored": 1,
                             "rejected": {"webhook.bad_signature": 3}}
    samples = _samples(mon.prometheus()[2].decode())
    assert samples[("erpgw_webhooks_total", (("code", ""), ("outcome", "accepted")))] == 5
    assert samples[("erpgw_webhooks_total", (("code", "webhook.bad_signature"),
                                             ("outcome", "rejected")))] == 3


def test_sla_config_section() -> None:
    cfg = load_config(env={"ERPGW_SLA_INVOICE_POSTING_P99_MS": "750"},
                      overrides={"sla": {"dlq_unresolved": 0, "invoice_posting_p95_ms": 300}})
    assert cfg.sla.targets() == {"invoice_posting_p95_ms": 300.0, "invoice_posting_p99_ms": 750.0,
                                 "failure_recovery_s": 300.0, "dlq_unresolved": 0.0}
    assert load_config(env={}).sla.kpi_interval_s == 5.0
    for bad in ({"kpi_interval_s": 0}, {"failure_recovery_s": -1}, {"dlq_unresolved": -2},
                {"p99": 1}):
        with pytest.raises(ConfigError, match="sla"):
            load_config(env={}, overrides={"sla": bad})


def test_sparkline() -> None:
    assert sparkline([], 10) == ""
    assert sparkline([0, 0], 10) == "▁▁"
    assert sparkline([0, 5, 10], 10) == "▁▅█"
    assert sparkline([1, 2, 3, 4], 2) == "▆█"


def _metrics(instance: str, seq: int, out: float = 3.0) -> dict[str, Any]:
    clock = Clock()
    mon = monitor(clock, breakers=[CircuitBreaker("erp.journal_bulk")],
                  limiters=[RateLimiter("erp")])
    mon.instance = instance
    clock.t += 1
    doc = mon.observe(tree(accepted=int(out), routed=int(out), posted=int(out), p99=42.0),
                      IDLE, (0, 0))
    doc["seq"] = seq
    return doc


def test_view_follows_one_gateway_and_keeps_recent_events() -> None:
    view = MonitorView("erpgw", history=3)
    assert view.feed("erpgw.mon.metrics", _metrics("a:1", 1), now=10.0) == "metrics"
    assert view.feed("erpgw.mon.metrics", _metrics("b:2", 1), now=10.5) is None  # not followed
    assert view.feed("other.mon.metrics", _metrics("a:1", 2), now=11.0) is None
    assert view.feed("erpgw.mon.events.dlq", {"kind": "dlq", "lane": "billing",
                                               "code": "http.rejected", "at": 1.0}) == "event"
    assert view.feed("erpgw.mon.recon.break", {"what": "missing"}) == "event"
    for seq in (2, 3, 4):
        view.feed("erpgw.mon.metrics", _metrics("a:1", seq), now=10.0 + seq)
    summary = view.summary()
    assert summary["instance"] == "a:1" and summary["instances"] == ["a:1", "b:2"]
    assert summary["metrics"]["seq"] == 4 and summary["throughput"] == {"billing": [3.0] * 3}
    assert [e["kind"] for e in summary["events"]] == ["dlq", "recon.break"]
    # the followed gateway went silent: the view moves to the one still talking
    assert view.feed("erpgw.mon.metrics", _metrics("b:2", 9), now=30.0) == "metrics"
    assert view.instance == "b:2" and view.summary()["throughput"] == {"billing": [3.0]}
    pinned = MonitorView("erpgw", instance="b:2")
    assert pinned.feed("erpgw.mon.metrics", _metrics("a:1", 1), now=1.0) is None
    assert pinned.feed("erpgw.mon.kpi", {"instance": "b:2", "sla": {"ok": True}}) == "kpi"


def test_view_renders_every_panel() -> None:
    view = MonitorView("erpgw")
    console = Console(record=True, width=170, color_system=None)
    console.print(view.render(now=0.0, source="nats://x:4222"))
    assert "waiting for erpgw.mon.metrics on nats://x:4222" in console.export_text()
    view.feed("erpgw.mon.metrics", _metrics("a:1", 7), now=100.0)
    view.feed("erpgw.mon.kpi", {"instance": "a:1", "failure_recovery": {"incidents": 1,
                                "last_s": 2.5, "ongoing_s": None},
                                "sla": {"ok": False, "checks": {"invoice_posting_p99_ms": {
                                    "target": 1.0, "value": 42.0, "breached": True}}}})
    view.feed("erpgw.mon.events.breaker", {"kind": "breaker", "breaker": "erp.journal_bulk",
                                           "source": "closed", "target": "open",
                                           "reason": "3 consecutive failures", "at": 5.0})
    console = Console(record=True, width=170, color_system=None)
    console.print(view.render(now=105.0))
    text = console.export_text()
    for part in ("a:1", "snapshot #7", "5.0s ago", "SLA BREACHED", "billing", "invoice-router",
                 "erp-journal", "latency p99", "42 ms", "last recovery", "2.5 s",
                 "invoice_posting_p99_ms", "BREACHED", "erp.journal_bulk", "closed", "100/100",
                 "dead letters", "unresolved", "supervisor gateway",
                 "billing-ingress", "closed → open: 3 consecutive failures",
                 "no mon.recon.report yet"):
        assert part in text, part
    view.feed("erpgw.mon.recon.report", {"instance": "a:1", "period": "2026-11", "checked": 120,
                                         "matched": 117, "breaks": {"missing": 2, "amount": 1,
                                                                    "orphan": 0},
                                         "repaired": 2, "accuracy": 0.975})
    console = Console(record=True, width=200, color_system=None)
    console.print(view.render(now=105.0))
    text = console.export_text()
    for part in ("reconciliation", "2026-11", "120 / 117", "missing 2, amount 1", "0.97"):
        assert part in text, part
    assert "orphan 0" not in text  # classes without a break are left out
    assert view.summary()["recon"]["matched"] == 117


def test_event_lines() -> None:
    assert describe_event({"kind": "sla", "sla": "x", "event": "started", "value": 2.5,
                           "target": 1}) == "x breach started: 2.50 vs target 1"
    assert describe_event({"kind": "supervisor", "child": "erp-journal", "event": "failed",
                           "restarts": 1, "error": "boom"}) == \
        "erp-journal failed (restarts 1): boom"
    assert describe_event({"kind": "recon", "subject": "s", "at": 1, "break": "missing"}) == \
        '{"break":"missing"}'


def test_worker_stats_read_typed_and_a_wrong_type_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    from actors.stats import WorkerStats

    good = {"name": "erp-journal", "consumer": f"{S}/erp-journal", "processed": 7,
            "failed": 1, "retried": 2, "in_flight": 0, "batches": 3, "last_error": None,
            "posted": 7, "latency_ms": {"p50": 1.0}}  # a subclass's extra keys are ignored
    assert WorkerStats.of(good) == WorkerStats(name="erp-journal", consumer=f"{S}/erp-journal",
                                               processed=7, failed=1, retried=2, batches=3)
    assert msgspec.structs.asdict(WorkerStats.of(good)).keys() <= good.keys()
    with caplog.at_level("WARNING", logger="erpgw.stats"):
        assert WorkerStats.of({"name": "odd", "processed": "many"}) == WorkerStats()
    assert "processed" in caplog.text
