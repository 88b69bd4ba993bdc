"""Retries and platform errors as a scrape shows them: an ERP answering 503 makes the poster
hand the invoice back for a later attempt (counted), every answer lands in the request
histogram under its status, and the invoice is posted once the ERP recovers."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.broker import EmbeddedBroker

from .conftest import billing_event, running_gateway, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

BULK = {"platform": "erp", "endpoint": "/erp/v1/journal-entries/bulk", "method": "POST"}


def _value(text: str, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


async def test_a_503_is_retried_counted_and_then_posted(broker: EmbeddedBroker, tmp_path: Path,
                                                        sim_url: str) -> None:
    async with running_gateway(broker, tmp_path, sim_url) as gw, aiohttp.ClientSession() as s:
        url = f"{gw.admin_url}/metrics"

        async def scrape() -> str:
            async with s.get(url) as r:
                return await r.text() if r.status == 200 else ""

        async with s.put(f"{sim_url}/sim/v1/faults",
                         json={"erp": {"error_rate": 1.0, "status": 503}}) as r:
            assert r.status < 300
        body = msgspec.json.encode(billing_event(700))
        assert (await gw.post(body, signed(body)))[0] == 200
        retries = ("erpgw_consumer_retries_total", {"lane": "billing", "consumer": "erp-journal"})
        with anyio.fail_after(30):
            while _value(await scrape(), retries[0], **retries[1]) < 1:
                await anyio.sleep(0.2)
        text = await scrape()
        assert _value(text, "erpgw_platform_request_duration_seconds_count", status="503",
                      **BULK) >= 1
        assert _value(text, "erpgw_erp_postings_total", outcome="created") == 0

        async with s.put(f"{sim_url}/sim/v1/faults", json={"erp": {}}) as r:
            assert r.status < 300
        with anyio.fail_after(60):  # the retry (after its backoff, maybe a breaker probe)
            while _value(await scrape(), "erpgw_erp_postings_total", outcome="created") < 1:
                await anyio.sleep(0.2)
        text = await scrape()
        assert _value(text, "erpgw_platform_request_duration_seconds_count", status="200",
                      **BULK) >= 1
        assert _value(text, "erpgw_invoice_posting_latency_seconds_count", flow="erp") == 1
