"""Every metric the shipped alert rules and Grafana dashboard name exists in a real scrape of a
gateway that has done some work (a posting and a dead letter), so no rule or panel watches a
name that never comes. A family the process declares (HELP/TYPE) counts even before its first
sample (a 429 counter in a run without a 429)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.broker import EmbeddedBroker
from tests.deploy.test_prometheus_rules import dashboard_metrics, rule_metrics

from .conftest import billing_event, running_gateway, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _names(text: str) -> set[str]:
    """Sample names, and the names a declared family's samples take."""
    out: set[str] = set()
    for fam in text_string_to_metric_families(text):
        out |= {s.name for s in fam.samples}
        if fam.type == "counter":
            out.add(fam.name + "_total")
        elif fam.type == "histogram":
            out |= {fam.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        else:
            out.add(fam.name)
    return out


async def _scrape(s: aiohttp.ClientSession, port: int) -> str:
    async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
        return await r.text() if r.status == 200 else ""


async def test_every_metric_the_alerts_and_the_dashboard_name_is_scraped(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    wanted = rule_metrics() | dashboard_metrics()
    names: set[str] = set()
    async with running_gateway(broker, tmp_path, sim_url) as gw, aiohttp.ClientSession() as s:
        port = gw.cfg.admin.port
        body = msgspec.json.encode(billing_event(501))
        assert (await gw.post(body, signed(body)))[0] == 200
        with anyio.fail_after(30):  # posted: the histogram has its first observation
            while 'erpgw_invoice_posting_latency_seconds_count{flow="erp"} 1.0' \
                    not in await _scrape(s, port):
                await anyio.sleep(0.2)
        async with s.put(f"{sim_url}/sim/v1/faults",
                         json={"erp": {"error_rate": 1.0, "status": 422}}) as r:
            assert r.status < 300
        body = msgspec.json.encode(billing_event(502))
        assert (await gw.post(body, signed(body)))[0] == 200
        with anyio.move_on_after(30):
            while not wanted <= names:  # until the dead letter and the KPIs show
                await anyio.sleep(0.2)
                names = _names(await _scrape(s, port))
    assert wanted - names == set()
