"""Business monitoring as a subscriber and a scraper see it: the 1 s metrics document, the KPI
document with an SLA breach, the DLQ event and the Prometheus text of the same figures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts import LANES
from gateway.app import CONSUMERS
from gateway.broker import EmbeddedBroker

from .conftest import LiveGateway, billing_event, running_gateway, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
async def watched_gateway(broker: EmbeddedBroker, tmp_path: Path,
                          sim_url: str) -> AsyncIterator[LiveGateway]:
    """A live gateway with KPIs every second and an absurdly low posting-latency target."""
    async with running_gateway(broker, tmp_path, sim_url,
                               sla={"kpi_interval_s": 1.0, "invoice_posting_p99_ms": 0.001,
                                    "dlq_unresolved": 5}) as gw:
        yield gw


class Watcher:
    """Everything on ``erpgw.mon.>``, decoded, by subject."""

    def __init__(self) -> None:
        self.docs: dict[str, list[dict[str, Any]]] = {}

    async def on(self, msg: Any) -> None:
        self.docs.setdefault(msg.subject, []).append(msgspec.json.decode(msg.data))

    def last(self, subject: str) -> dict[str, Any] | None:
        docs = self.docs.get(subject)
        return docs[-1] if docs else None

    async def wait(self, subject: str, pred: Any, timeout: float = 15) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                for doc in self.docs.get(subject, []):
                    if pred(doc):
                        return doc
                await anyio.sleep(0.05)


async def _post_invoices(gw: LiveGateway, first: int, n: int) -> None:
    for i in range(first, first + n):
        body = msgspec.json.encode(billing_event(i))
        status, _ = await gw.post(body, signed(body))
        assert status == 200


async def _scrape(gw: LiveGateway) -> tuple[int, str, str]:
    url = f"{gw.admin_url}/metrics"
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, r.headers["Content-Type"], await r.text()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _one(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
         **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_metrics_kpis_events_and_prometheus(watched_gateway: LiveGateway) -> None:
    gw = watched_gateway
    s = gw.subjects
    w = Watcher()
    nc = await nats.connect(gw.cfg.nats.url, **gw.nats_options())
    try:
        await nc.subscribe(s.mon_wildcard, cb=w.on)
        await nc.flush()
        await _post_invoices(gw, 300, 4)
        m = await w.wait(s.metrics, lambda d: d["postings"]["created"] >= 4)

        # -- the metrics document, field by field ---------------------------------------
        assert m["v"] == 1 and m["instance"].endswith(":" + m["instance"].rsplit(":", 1)[1])
        assert m["seq"] >= 1 and 0.5 <= m["interval_s"] <= 3 and m["uptime_s"] > 0
        lane = m["lanes"]["billing"]
        assert lane["in"] == 4 and lane["out"] == 4
        # the pipeline, then the lane's branches (parallel readers of the same events)
        assert set(lane["consumers"]) == {d for ln, d, _ in CONSUMERS if ln == "billing"}
        router, poster = lane["consumers"]["invoice-router"], lane["consumers"]["erp-journal"]
        assert router["processed"] == 4 and poster["processed"] == 4
        assert router["failed"] == 0 and poster["in_flight"] == 0
        assert {router["pending"], router["ack_pending"]} <= {0}
        assert set(m["backlog"]) == {d for _, d, _ in CONSUMERS}  # kept for old readers
        assert set(m["lanes"]) == set(LANES)
        # every invoice went through within the sampled seconds: some interval saw it move
        seen = w.docs[s.metrics]
        assert max(d["lanes"]["billing"]["in_per_s"] for d in seen) > 0
        assert max(d["lanes"]["billing"]["out_per_s"] for d in seen) > 0
        assert max(d["postings"]["per_s"] for d in seen) > 0
        lat = m["latency_ms"]["invoice_posting"]
        assert lat["postings"] == 4 and 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert m["postings"] == {"created": 4, "replayed": 0, "per_s": m["postings"]["per_s"]}
        brk = m["breakers"]["erp.journal_bulk"]
        assert brk["state"] == "closed" and brk["trips"] == 0 and brk["successes"] >= 1
        lim = m["limiters"]["erp"]
        assert lim["rate"] == lim["configured_rate"] == 50.0 and lim["burst"] == 20
        assert lim["granted"] >= 1 and lim["throttles"] == 0 and lim["hold_s"] == 0
        assert m["dlq"]["dead_lettered"] == 0 and m["dlq"]["stored"] == 0
        assert m["dlq"]["unresolved"] == 0
        sup = m["supervisor"]
        assert sup["name"] == "gateway" and sup["restarts"] == 0 and sup["escalations"] == 0
        assert {c["state"] for c in sup["children"].values()} == {"running"}
        loop = m["event_loop"]
        assert loop["samples"] >= 5 and 0 <= loop["lag_ms"] <= loop["lag_max_ms"] < 1000
        names = {c["name"] for c in m["actors"]["children"]}
        assert {"erp-journal", "invoice-router", "billing-ingress", "metrics"} <= names

        # -- KPIs, and a breach of the absurd 0.001 ms target ----------------------------
        k = await w.wait(f"{s.prefix}.mon.kpi", lambda d: d["invoices_posted"] >= 4)
        assert k["v"] == 1 and k["instance"] == m["instance"]
        assert k["invoice_posting_latency_ms"]["p99"] > 0.001
        assert k["failure_recovery"] == {"incidents": 0, "last_s": None, "max_s": None,
                                         "mean_s": None, "ongoing_s": None, "over_target": 0}
        sla = k["sla"]
        assert sla["ok"] is False and sla["breached"] == ["invoice_posting_p99_ms"]
        p99 = sla["checks"]["invoice_posting_p99_ms"]
        assert p99["target"] == 0.001 and p99["breached"] and p99["value"] > 0.001
        assert p99["since"] is not None and p99["breaches"] == 1
        assert sla["checks"]["failure_recovery_s"] == {
            "target": 300.0, "value": 0.0, "breached": False, "since": None, "breaches": 0}
        assert "invoice_posting_p50_ms" not in sla["checks"]  # 0: no target
        ev = await w.wait(s.mon_event("sla"), lambda d: d["event"] == "started")
        assert ev["sla"] == "invoice_posting_p99_ms" and ev["value"] > ev["target"]

        # -- a dead letter: its event, its counts ----------------------------------------
        async with aiohttp.ClientSession() as http, http.put(
                f"{gw.sim_url}/sim/v1/faults",
                json={"erp": {"error_rate": 1.0, "status": 422}}) as r:
            assert r.status < 300
        await _post_invoices(gw, 400, 1)
        dl = await w.wait(s.mon_event("dlq"), lambda d: True)
        assert dl["kind"] == "dlq" and dl["event"] == "dead_lettered"
        assert dl["lane"] == "billing" and dl["code"] == "http.rejected"
        assert dl["business_key"] == "billing:in_000400:v1" and dl["bytes"] > 0
        assert dl["dlq_subject"] == "erpgw.dlq.billing.http_rejected"
        assert "data" not in dl and dl["instance"] == m["instance"]
        m = await w.wait(s.metrics, lambda d: d["dlq"]["stored"] == 1)
        assert m["dlq"]["dead_lettered"] == 1 and m["dlq"]["unresolved"] == 1
        assert m["dlq"]["by_lane"] == {"billing": 1}
        assert m["dlq"]["by_code"] == {"billing/http.rejected": 1}
        assert m["lanes"]["billing"]["consumers"]["erp-journal"]["failed"] == 1
        k = await w.wait(f"{s.prefix}.mon.kpi", lambda d: d["dlq"]["unresolved"] == 1)
        assert k["dlq"] == {"dead_lettered": 1, "stored": 1, "unresolved": 1,
                            "expiring": k["dlq"]["expiring"]}
        assert k["dlq"]["expiring"] in (None, 0)  # the letter is seconds old
        assert k["sla"]["checks"]["dlq_unresolved"]["breached"] is False  # target 5

        # -- Prometheus: parses, and its figures are the JSON's --------------------------
        status, ctype, text = await _scrape(gw)
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        p = _samples(text)
        seq = int(_one(p, "erpgw_metrics_snapshot_seq"))
        m = await w.wait(s.metrics, lambda d: d["seq"] == seq)
        lane = m["lanes"]["billing"]
        assert _one(p, "erpgw_lane_in_total", lane="billing") == lane["in"] == 5
        assert _one(p, "erpgw_lane_out_total", lane="billing") == lane["out"] == 5
        for c, v in lane["consumers"].items():
            assert _one(p, "erpgw_consumer_processed_total", lane="billing",
                        consumer=c) == v["processed"]
            assert _one(p, "erpgw_consumer_failed_total", lane="billing",
                        consumer=c) == v["failed"]
            assert _one(p, "erpgw_consumer_pending", lane="billing", consumer=c) == v["pending"]
        assert _one(p, "erpgw_erp_postings_total", outcome="created") == 4
        lat = m["latency_ms"]["invoice_posting"]
        # the posting latency histogram: one observation per posting, buckets cumulative
        assert _one(p, "erpgw_invoice_posting_latency_seconds_count", flow="erp") == \
            lat["postings"] == 4
        assert _one(p, "erpgw_invoice_posting_latency_seconds_bucket", flow="erp",
                    le="+Inf") == 4
        assert 0 < _one(p, "erpgw_invoice_posting_latency_seconds_sum", flow="erp") <= \
            4 * lat["max"] / 1000 + 1e-6
        # the ERP's requests, by endpoint and status: 4 posted (200), the rejected one (422)
        bulk = {"platform": "erp", "endpoint": "/erp/v1/journal-entries/bulk", "method": "POST"}
        assert _one(p, "erpgw_platform_request_duration_seconds_count", status="200",
                    **bulk) >= 1
        assert _one(p, "erpgw_platform_request_duration_seconds_count", status="422",
                    **bulk) >= 1
        # every breaker of the process, and every lane's consumers
        breakers = {lbl["breaker"] for (name, labels) in p if name == "erpgw_breaker_state"
                    for lbl in [dict(labels)]}
        assert breakers == {"erp.journal_bulk", "revenue.batches", "billing.usage_bulk",
                                "partner.settlements", "partner.attributions",
                                "erp.vendor_bills", "erp.sales_orders", "revenue.contracts",
                                "cpq.price", "saga.partner", "saga.cpq", "saga.billing",
                                "saga.erp", "saga.revenue"}
        pending = {(dict(labels)["lane"], dict(labels)["consumer"]) for (name, labels) in p
                   if name == "erpgw_consumer_pending"}
        assert pending == {(ln, d) for ln, d, _ in CONSUMERS}
        assert _one(p, "erpgw_webhooks_total", outcome="accepted", code="") == 5
        assert _one(p, "process_open_fds") > 0
        assert "erpgw_build_info" in {name for name, _ in p}
        assert _one(p, "erpgw_dead_letters_total", lane="billing", code="http.rejected") == 1
        assert _one(p, "erpgw_dlq_unresolved") == m["dlq"]["unresolved"] == 1
        assert _one(p, "erpgw_breaker_state", breaker="erp.journal_bulk", state="closed") == 1
        assert _one(p, "erpgw_breaker_trips_total", breaker="erp.journal_bulk") == 0
        assert _one(p, "erpgw_limiter_rate_per_second", limiter="erp") == 50.0
        assert _one(p, "erpgw_supervisor_restarts_total", supervisor="gateway") == 0
        assert _one(p, "erpgw_actor_running", actor="erp-journal") == 1
        assert _one(p, "erpgw_event_loop_lag_seconds", stat="max") == pytest.approx(
            m["event_loop"]["lag_max_ms"] / 1000)
        assert _one(p, "erpgw_sla_breached", sla="invoice_posting_p99_ms") == 1
        assert _one(p, "erpgw_sla_target", sla="invoice_posting_p99_ms") == 0.001
        types = {f.name: f.type for f in text_string_to_metric_families(text)}
        assert types["erpgw_invoice_posting_latency_seconds"] == "histogram"
        assert types["erpgw_platform_request_duration_seconds"] == "histogram"
        assert types["erpgw_lane_in"] == "counter"  # the parser drops the _total suffix
        assert types["erpgw_consumer_pending"] == "gauge"
    finally:
        await nc.close()
