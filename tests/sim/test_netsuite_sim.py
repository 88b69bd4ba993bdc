"""The simulator's NetSuite face over HTTP: TBA required (NetSuite's 401 body), the bulk API
not served, the concurrency limit answered with NetSuite's 429 body, the scenario key."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from actors.infra.http import HttpClient, PlatformRejected, PlatformUnavailable
from actors.platforms.auth import AuthSettings, load_auth
from sim import SimConfig, load_scenario
from sim._netsuite_tba import DEMO_TBA

from .conftest import HOST, free_port, running_sim

RECORD = "/services/rest/record/v1/journalEntry/eid:in_1"
BODY = (b'{"externalId":"in_1","currency":{"refName":"USD"},"tranDate":"2026-11-30",'
        b'"line":{"items":[{"account":{"id":"1100"},"debit":12.34},'
        b'{"account":{"id":"4000"},"credit":12.34}]}}')


def config(**kw: Any) -> SimConfig:
    return SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x", seed=3,
                     erp_dialect="netsuite", **kw)


async def test_unsigned_requests_get_netsuites_401_and_the_bulk_api_is_gone() -> None:
    async with running_sim(config()) as http:
        reply = await http.call("PUT", RECORD, data=BODY)
        assert reply.status == 401
        detail = reply.body["o:errorDetails"][0]
        assert detail["o:errorCode"] == "INVALID_LOGIN" and reply.body["status"] == 401
        bulk = await http.post("/erp/v1/journal-entries/bulk", json={"items": []})
        assert bulk.status in (404, 405)
        assert (await http.get("/erp/v1/journal-entries")).body["items"] == []


async def test_over_the_limit_gets_netsuites_429() -> None:
    auth = load_auth(AuthSettings(
        type="oauth1_tba", account=DEMO_TBA.account, consumer_key=DEMO_TBA.consumer_key,
        consumer_secret=DEMO_TBA.consumer_secret, token_id=DEMO_TBA.token_id,
        token_secret=DEMO_TBA.token_secret), environ={})
    async with running_sim(config(netsuite_concurrency_limit=1, netsuite_latency_ms=200)) as h:
        async with HttpClient(h.base, platform="erp", max_connections=8) as erp:
            async def get(i: int) -> str:
                path = f"/services/rest/record/v1/journalEntry/eid:in_{i}"
                try:
                    await erp.request("GET", path, None,
                                      headers=await auth.headers("GET", erp.url(path), None))
                except PlatformUnavailable as exc:
                    return exc.code
                except PlatformRejected as exc:
                    body = msgspec.json.decode(exc.body)
                    return str(body["o:errorDetails"][0]["o:errorCode"])
                return "ok"
            codes = await asyncio.gather(*(get(i) for i in range(4)))
    assert "http.rate_limited" in codes and "NONEXISTENT_ID" in codes


def test_the_scenario_file_names_the_dialect(tmp_path: Any) -> None:
    path = tmp_path / "s.toml"
    path.write_text('erp_dialect = "netsuite"\n')
    assert load_scenario(path).erp_dialect == "netsuite"
