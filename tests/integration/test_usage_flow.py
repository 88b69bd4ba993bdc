"""Flow 4 end to end: usage records → gateway → billing rating and revenue, each record once.

A real broker, the simulator over HTTP and an in-process gateway. The simulator's usage run is
the ground truth (record ids and quantities); its audit's ``usage`` section counts, per record,
how often billing rated it and how often the revenue platform recorded it.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from actors.infra.bus import OutMsg
from contracts import BusinessKey, UsageRecorded, derive_id, make_envelope
from gateway.app import USAGE_CONSUMER
from gateway.broker import EmbeddedBroker

from .conftest import LiveGateway, running_gateway

pytestmark = pytest.mark.integration

TOKEN = "usage_test_token"
USAGE = {"api_tokens": [TOKEN], "max_records": 200, "batch": 64, "max_bulk_items": 20}


async def _call(method: str, url: str, *, body: Any = None, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(
            method, url, data=msgspec.json.encode(body) if body is not None else data,
            headers={"Content-Type": "application/json", **(headers or {})}) as r:
        raw = await r.read()
        return r.status, msgspec.json.decode(raw) if raw else None


def _usage_url(gw: LiveGateway) -> str:
    return gw.url.replace("/webhooks/billing", "/usage/v1/records")


async def _send(gw: LiveGateway, records: list[Any], token: str = TOKEN) -> tuple[int, Any]:
    return await _call("POST", _usage_url(gw), body=records,
                       headers={"Authorization": f"Bearer {token}"})


async def _audit(gw: LiveGateway) -> dict[str, Any]:
    status, doc = await _call("GET", f"{gw.sim_url}/sim/v1/audit")
    assert status == 200
    usage: dict[str, Any] = doc["usage"]
    return usage


async def _drained(gw: LiveGateway, expected: int, timeout: float = 60.0) -> dict[str, Any]:
    """The usage audit once the revenue platform recorded ``expected`` records and the usage
    consumer has nothing pending or unacknowledged."""
    deadline = time.monotonic() + timeout
    while True:
        usage = await _audit(gw)
        pending = await gw.bus.consumer_pending(gw.subjects.stream("usage"), USAGE_CONSUMER)
        if usage["revenue_recorded"] >= expected and pending == (0, 0):
            return usage
        assert time.monotonic() < deadline, f"not drained: {usage} pending {pending}"
        await anyio.sleep(0.2)


async def test_each_usage_record_counts_once_in_billing_and_revenue(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    async with running_gateway(
            broker, tmp_path, sim_url, usage=USAGE,
            revenue_breaker={"consecutive_failures": 2, "open_for": 0.3,
                             "open_for_cap": 0.5}) as gw:
        status, run = await _call("POST", f"{sim_url}/sim/v1/usage-runs",
                                  body={"count": 400, "seed": 11, "subscriptions": 6,
                                        "period": "2026-10"})
        assert status == 201 and run["count"] == 400
        records = run["records"]
        # The revenue platform is down at first: billing rates the records, the revenue
        # uploads fail and the records come back (a redelivery) until it is up again.
        assert (await _call("PUT", f"{sim_url}/sim/v1/faults",
                            body={"revenue": {"outage": True}}))[0] == 200
        http_part, direct = records[:380], records[380:]
        for i in range(0, len(http_part), 95):
            status, doc = await _send(gw, http_part[i:i + 95])
            assert status == 200, doc
            assert doc["accepted"] == len(http_part[i:i + 95])
        # Duplicates on purpose: a whole request again, and one record twice in a request.
        status, doc = await _send(gw, http_part[:95])
        assert (status, doc["accepted"], doc["duplicate"]) == (200, 0, 95)
        status, doc = await _send(gw, [http_part[100], http_part[100], http_part[101]])
        assert (status, doc["accepted"], doc["duplicate"]) == (200, 0, 3)
        # Published straight onto the stream by another client, as JSON envelopes.
        for rec in direct:
            payload = UsageRecorded(
                usage_id=rec["id"], subscription_id=rec["subscription"],
                customer_id=rec["customer"], product_id=rec["product"], meter=rec["meter"],
                quantity=rec["quantity"],
                window_start=datetime.fromisoformat(rec["windowStart"]),
                window_end=datetime.fromisoformat(rec["windowEnd"]),
                recorded_at=datetime.fromisoformat(rec["windowEnd"]))
            env = make_envelope(payload, source="billing",
                                key=BusinessKey(source="billing", object_id=rec["id"]))
            await gw.bus.publish(OutMsg(subject=gw.subjects.for_type(env.type),
                                        data=msgspec.json.encode(env),
                                        msg_id=derive_id("usage", rec["id"])))
        with anyio.fail_after(30):  # the first batches are rated, then refused by revenue
            while (await _audit(gw))["billed"] < 64:
                await anyio.sleep(0.05)
        assert (await _audit(gw))["revenue_recorded"] == 0
        assert (await _call("DELETE", f"{sim_url}/sim/v1/faults"))[0] == 200
        usage = await _drained(gw, 400)
        assert await gw.bus.stream_messages(gw.subjects.dlq_stream) == 0
    assert usage["generated"] == 400
    assert usage["billed"] == usage["revenue_recorded"] == 400
    assert usage["billing_missing"] == usage["revenue_missing"] == 0  # LOST 0
    assert usage["billing_duplicates"] == usage["revenue_duplicates"] == 0  # DUP 0
    assert usage["billing_unexpected"] == usage["revenue_unexpected"] == 0
    assert usage["quantity_mismatches"] == 0
    assert usage["quantity_billed"] == usage["quantity_generated"]
    assert usage["amount_billed"] == usage["amount_revenue"]
    assert usage["aggregates"] < 400  # aggregated, not one item per record


def _record(n: int, **over: Any) -> dict[str, Any]:
    rec = {"id": f"u{n}", "subscription": "sub_1", "customer": "cus_1", "product": "prod_api",
           "meter": "api_calls", "quantity": 3, "windowStart": "2026-10-01T00:00:00Z",
           "windowEnd": "2026-10-01T01:00:00Z"}
    return rec | over


async def test_bad_usage_input_is_refused_with_a_specific_code(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    async with running_gateway(broker, tmp_path, sim_url,
                               usage=USAGE | {"max_records": 3}) as gw:
        url = _usage_url(gw)
        cases: list[tuple[dict[str, str], bytes, int, str, str | None]] = [
            ({}, b"[]", 401, "usage.unauthorized", "Authorization"),
            ({"Authorization": "Bearer wrong"}, b"[]", 401, "usage.unauthorized",
             "Authorization"),
            ({"Authorization": f"Basic {TOKEN}"}, b"[]", 401, "usage.unauthorized",
             "Authorization"),
            ({"Authorization": f"Bearer {TOKEN}"}, b"[not json", 400, "contract.malformed",
             "$"),
            ({"Authorization": f"Bearer {TOKEN}"},
             msgspec.json.encode([_record(1), _record(2, quantity="3")]), 400,
             "contract.invalid_type", "$[1].quantity"),
            ({"Authorization": f"Bearer {TOKEN}"},
             msgspec.json.encode([_record(1, quantity=-1)]), 400, "contract.constraint",
             "$[0].quantity"),
            ({"Authorization": f"Bearer {TOKEN}"},
             msgspec.json.encode([_record(1, meter="")]), 400, "contract.constraint",
             "$[0].meter"),
            ({"Authorization": f"Bearer {TOKEN}"},
             msgspec.json.encode([_record(1), _record(2, windowEnd="2026-09-30T00:00:00Z")]),
             422, "period.reversed", "$[1].windowEnd"),
            ({"Authorization": f"Bearer {TOKEN}"},
             msgspec.json.encode([_record(i) for i in range(4)]), 413,
             "usage.too_many_records", "$"),
        ]
        for headers, body, status, code, path in cases:
            got, doc = await _call("POST", url, data=body, headers=headers)
            assert (got, doc["code"], doc.get("path")) == (status, code, path), (headers, body)
        # Nothing of a refused request was published.
        assert await gw.bus.stream_messages(gw.subjects.stream("usage")) == 0
        got, doc = await _call("POST", url, data=b"x" * (70 * 1024),
                               headers={"Authorization": f"Bearer {TOKEN}"})
        assert (got, doc["code"]) == (413, "body.too_large")
