"""The billing webhook ingress against a real broker: what is accepted, what is refused,
and that nothing refused is ever published."""

from __future__ import annotations

import io
import time

import aiohttp
import msgspec
import pytest

from gateway.app import CONSUMERS

from .conftest import LiveGateway, billing_event, signed

pytestmark = pytest.mark.integration


async def test_valid_webhook_is_published_once(live_gateway: LiveGateway) -> None:
    body = msgspec.json.encode(billing_event(1))
    status, doc = await live_gateway.post(body, signed(body))
    assert (status, doc["status"]) == (200, "accepted")
    # the same event again (a fresh signature, as a platform retry would send it)
    status, doc2 = await live_gateway.post(body, signed(body))
    assert (status, doc2["status"]) == (200, "duplicate")
    assert doc2["id"] == doc["id"]
    assert await live_gateway.billing_messages() == 1


@pytest.mark.parametrize(
    ("make_headers", "status", "code"),
    [
        (lambda b: {"Content-Type": "application/json"}, 401, "signature.missing"),
        (lambda b: signed(b, secret="wrong"), 401, "signature.mismatch"),
        (lambda b: signed(b, at=int(time.time()) - 600), 401, "signature.stale"),
        (lambda b: signed(b, at=int(time.time()) + 600), 401, "signature.stale"),
        (lambda b: {"Billing-Signature": "t=abc,v1=00"}, 400, "signature.malformed"),
    ],
)
async def test_bad_signatures_publish_nothing(live_gateway: LiveGateway, make_headers,  # type: ignore[no-untyped-def]
                                              status: int, code: str) -> None:
    body = msgspec.json.encode(billing_event(2))
    got, doc = await live_gateway.post(body, make_headers(body))
    assert (got, doc["code"]) == (status, code)
    assert "evt_2" not in str(doc)  # the payload is never echoed
    assert await live_gateway.billing_messages() == 0


async def test_altered_body_is_refused(live_gateway: LiveGateway) -> None:
    body = msgspec.json.encode(billing_event(3))
    headers = signed(body)
    tampered = body.replace(b'"total":3300', b'"total":3301')
    status, doc = await live_gateway.post(tampered, headers)
    assert (status, doc["code"]) == (401, "signature.mismatch")
    assert await live_gateway.billing_messages() == 0


@pytest.mark.parametrize(
    ("mutate", "status", "code", "path"),
    [
        (lambda b: b.replace(b'"total":3300', b'"total":3300.5'), 400,
         "contract.invalid_type", "$.data.object.total"),
        (lambda b: b.replace(b'"customer":"cus_1",', b""), 400, "contract.missing_field",
         "$.data.object"),
        (lambda b: b[:40], 400, "contract.malformed", "$"),
        (lambda b: b.replace(b'"total":3300', b'"total":3400'), 422, "invoice.total_mismatch",
         "$.data.object"),
        (lambda b: b.replace(b'"currency":"usd"', b'"currency":"xxx"'), 422,
         "money.unknown_currency", "$.data.object"),
    ],
)
async def test_bad_bodies_name_the_field(live_gateway: LiveGateway, mutate, status: int,  # type: ignore[no-untyped-def]
                                         code: str, path: str) -> None:
    body = mutate(msgspec.json.encode(billing_event(4)))
    got, doc = await live_gateway.post(body, signed(body))
    assert (got, doc["code"], doc["path"]) == (status, code, path)
    assert await live_gateway.billing_messages() == 0


async def test_oversized_body_is_refused_before_reading(live_gateway: LiveGateway) -> None:
    body = b'{"pad":"' + b"x" * (2 * 1024 * 1024) + b'"}'
    async with aiohttp.ClientSession() as s, s.post(
            live_gateway.url, data=io.BytesIO(body), headers=signed(body)) as r:
        assert r.status == 413
        assert (await r.json())["code"] == "body.too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 4096

    async with aiohttp.ClientSession() as s, s.post(
            live_gateway.url, data=chunks(), headers=signed(b"")) as r:
        assert r.status == 413
        assert (await r.json())["code"] == "body.too_large"
    assert await live_gateway.billing_messages() == 0


async def test_bad_input_does_not_disturb_good_traffic(live_gateway: LiveGateway) -> None:
    good = 0
    for n in range(10, 30):
        body = msgspec.json.encode(billing_event(n))
        if n % 2:
            status, _ = await live_gateway.post(body, signed(body, secret="wrong"))
            assert status == 401
        else:
            status, _ = await live_gateway.post(body, signed(body))
            assert status == 200
            good += 1
    assert await live_gateway.billing_messages() == good


async def test_drifted_event_type_is_refused_with_its_code(live_gateway: LiveGateway) -> None:
    """F28(d): a renamed enum value in a family we handle is drift: 422 naming $.type."""
    evt = billing_event(6)
    body = msgspec.json.encode(msgspec.structs.replace(evt, type="invoice.finalised"))
    status, doc = await live_gateway.post(body, signed(body))
    assert (status, doc["code"], doc["path"]) == (422, "webhook.unknown_event_type", "$.type")
    assert await live_gateway.billing_messages() == 0


async def test_unsubscribed_event_type_is_acknowledged_not_published(
        live_gateway: LiveGateway) -> None:
    evt = billing_event(5)
    body = msgspec.json.encode(msgspec.structs.replace(evt, type="customer.updated"))
    status, doc = await live_gateway.post(body, signed(body))
    assert (status, doc["status"]) == (200, "ignored")
    assert await live_gateway.billing_messages() == 0


async def test_duplicate_webhooks_post_once(live_gateway: LiveGateway) -> None:
    """F22: the same event delivered 5 times, some concurrently → exactly one ERP posting."""
    import anyio

    body = msgspec.json.encode(billing_event(77))
    statuses: list[int] = []

    async def send() -> None:
        status, _ = await live_gateway.post(body, signed(body))
        statuses.append(status)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(send)
    await send()
    await send()
    assert statuses == [200] * 5
    with anyio.fail_after(20):
        while not await live_gateway.erp_postings("in_000077"):
            await anyio.sleep(0.05)
    await live_gateway.wait_idle()  # a second posting, if there were one, has arrived now
    postings = await live_gateway.erp_postings("in_000077")
    assert len(postings) == 1
    assert postings[0]["amount"] == 3300
    assert await live_gateway.billing_messages() == 1


async def test_metrics_snapshots_on_nats(live_gateway: LiveGateway) -> None:
    """Any NATS client can watch the gateway: JSON on erpgw.mon.metrics every second."""
    import anyio
    import nats

    nc = await nats.connect(live_gateway.cfg.nats.url, **live_gateway.nats_options())
    try:
        sub = await nc.subscribe(live_gateway.subjects.metrics)
        body = msgspec.json.encode(billing_event(90))
        assert (await live_gateway.post(body, signed(body)))[0] == 200
        with anyio.fail_after(15):
            while True:
                msg = await sub.next_msg(timeout=5)
                doc = msgspec.json.decode(msg.data)
                children = doc["actors"]["children"]
                erp = next(c for c in children if c["name"] == "erp-journal")
                if (erp["actor"] or {}).get("posted", 0) >= 1:
                    break
        # every consumer's backlog, of every lane
        assert set(doc["backlog"]) == {d for _, d, _ in CONSUMERS}
        assert erp["actor"]["latency_ms"]["p50"] > 0
        ingress = next(c for c in children if c["name"] == "billing-ingress")
        assert ingress["actor"]["accepted"] == 1
    finally:
        await nc.close()
