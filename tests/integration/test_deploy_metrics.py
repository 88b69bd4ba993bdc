"""Every metric the shipped alert rules name exists in a real scrape of a gateway that has
done some work (a posting and a dead letter), so no rule watches a name that never comes."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.broker import EmbeddedBroker
from tests.deploy.test_prometheus_rules import rule_metrics

from .conftest import billing_event, running_gateway, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def test_every_metric_the_alerts_name_is_scraped(broker: EmbeddedBroker, tmp_path: Path,
                                                       sim_url: str) -> None:
    async with running_gateway(broker, tmp_path, sim_url) as gw, aiohttp.ClientSession() as s:
        for n, fault in ((1, None), (2, {"erp": {"error_rate": 1.0, "status": 422}})):
            if fault is not None:
                async with s.put(f"{sim_url}/sim/v1/faults", json=fault) as r:
                    assert r.status < 300
            body = msgspec.json.encode(billing_event(500 + n))
            assert (await gw.post(body, signed(body)))[0] == 200
        names: set[str] = set()
        with anyio.move_on_after(30):
            while not rule_metrics() <= names:  # until the posting and the letter show
                await anyio.sleep(0.2)
                async with s.get(f"http://127.0.0.1:{gw.cfg.http.port}/metrics") as r:
                    if r.status != 200:
                        continue
                    text = await r.text()
                names = {sample.name for fam in text_string_to_metric_families(text)
                         for sample in fam.samples}
    assert rule_metrics() - names == set()
