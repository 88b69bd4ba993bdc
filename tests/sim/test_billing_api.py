"""The billing API beyond bill runs: the events list with a cursor, Idempotency-Key on writes,
and 429 with Retry-After above the configured request rate."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from contracts.platforms.billing import BillingEvent, BillingEventList
from sim import SimConfig
from sim._billing import TokenBucket

from .conftest import HOST, Http, free_port, running_app, running_sim
from .receiver import GatewayLike

LIST = msgspec.json.Decoder(BillingEventList)
EVENT = msgspec.json.Decoder(BillingEvent)


async def issued(http: Http, run_id: str, n: int) -> None:
    with anyio.fail_after(10):
        while (await http.get(f"/billing/v1/bill-runs/{run_id}")).body["issued"] < n:
            await anyio.sleep(0.02)


async def page(http: Http, query: str = "") -> BillingEventList:
    async with http.session.get(f"{http.base}/billing/v1/events{query}") as resp:
        assert resp.status == 200, await resp.text()
        return LIST.decode(await resp.read())


# -- the events list ---------------------------------------------------------------------------


async def test_events_list_pages_with_a_cursor_and_matches_the_webhooks() -> None:
    receiver = GatewayLike("whsec_demo")
    hook_port = free_port()
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook", seed=4)
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        await http.post("/billing/v1/bill-runs", json={"invoices": 25})
        await issued(http, "br_000001", 25)
        events: list[BillingEvent] = []
        cursor = ""
        pages = []
        while True:
            p = await page(http, f"?limit=10&after={cursor}")
            pages.append((len(p.data), p.has_more))
            events += p.data
            cursor = p.next_cursor
            if not p.has_more:
                break
        assert pages == [(10, True), (10, True), (5, False)]
        assert [e.id for e in events] == [f"evt_in_{i:06d}" for i in range(1, 26)]
        # Nothing new: an empty page and the same cursor, so a poller keeps its place.
        empty = await page(http, f"?after={cursor}")
        assert (empty.data, empty.has_more, empty.next_cursor) == ([], False, cursor)
        # A new bill run: the poller catches up with exactly the new events.
        await http.post("/billing/v1/bill-runs", json={"invoices": 3})
        await issued(http, "br_000002", 3)
        more = await page(http, f"?after={cursor}")
        assert [e.id for e in more.data] == ["evt_in_000026", "evt_in_000027", "evt_in_000028"]
        with anyio.fail_after(10):
            while len(receiver.bodies) < 28:
                await anyio.sleep(0.02)
    # The list serves the very events the webhooks carried.
    for e in events + more.data:
        assert EVENT.decode(receiver.bodies[e.id][0]) == e


async def test_default_page_size_and_cursor_survives_reset() -> None:
    receiver = GatewayLike("whsec_demo")  # issuance waits for deliveries beyond 64 pending
    hook_port = free_port()
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook")
    async with running_app(receiver.app, hook_port), running_sim(config) as sim:
        await sim.post("/billing/v1/bill-runs", json={"invoices": 120})
        await issued(sim, "br_000001", 120)
        first = await page(sim)
        assert len(first.data) == 100 and first.has_more
        last = (await page(sim, "?after=" + first.next_cursor)).next_cursor
        await sim.post("/sim/v1/reset")
        assert (await page(sim)).data == []
        await sim.post("/billing/v1/bill-runs", json={"invoices": 2})
        await issued(sim, "br_000002", 2)
        after_reset = await page(sim, f"?after={last}")
    assert [e.id for e in after_reset.data] == ["evt_in_000121", "evt_in_000122"]


@pytest.mark.parametrize(
    ("query", "name"),
    [("?after=abc", "after"), ("?after=-1", "after"), ("?limit=0", "limit"),
     ("?limit=1001", "limit"), ("?limit=ten", "limit")],
)
async def test_bad_list_parameters_answer_400_naming_them(sim: Http, query: str,
                                                          name: str) -> None:
    reply = await sim.get(f"/billing/v1/events{query}")
    assert reply.status == 400
    assert reply.body["path"] == name
    assert name in reply.body["message"]


# -- Idempotency-Key ---------------------------------------------------------------------------


async def post_run(http: Http, body: dict[str, Any], key: str | None) -> tuple[int, Any, Any]:
    headers = {} if key is None else {"Idempotency-Key": key}
    async with http.session.post(f"{http.base}/billing/v1/bill-runs", json=body,
                                 headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_idempotency_key_replays_the_stored_response_and_refuses_a_new_body(
    sim: Http,
) -> None:
    status, body, headers = await post_run(sim, {"invoices": 3}, "run-1")
    assert (status, body) == (202, {"bill_run_id": "br_000001", "invoices": 3})
    assert "Idempotent-Replayed" not in headers
    # The same key and body (spelt differently on the wire): the stored response, no new run.
    async with sim.session.post(f"{sim.base}/billing/v1/bill-runs",
                                data=b'{ "rate": 0.0, "invoices": 3 }',
                                headers={"Idempotency-Key": "run-1"}) as resp:
        assert resp.status == 202
        assert await resp.json() == body
        assert resp.headers["Idempotent-Replayed"] == "true"
    assert (await sim.get("/billing/v1/bill-runs/br_000002")).status == 404
    # The same key with another body: 422, nothing started.
    status, error, _ = await post_run(sim, {"invoices": 4}, "run-1")
    assert status == 422
    assert error["code"] == "idempotency.key_reused"
    assert (await sim.get("/billing/v1/bill-runs/br_000002")).status == 404
    # Another key, or no key: new runs.
    assert (await post_run(sim, {"invoices": 3}, "run-2"))[1]["bill_run_id"] == "br_000002"
    assert (await post_run(sim, {"invoices": 3}, None))[1]["bill_run_id"] == "br_000003"
    assert (await post_run(sim, {"invoices": 3}, None))[1]["bill_run_id"] == "br_000004"


async def test_bad_idempotency_keys_and_bodies_store_nothing(sim: Http) -> None:
    status, error, _ = await post_run(sim, {"invoices": 3}, "k" * 256)
    assert status == 400 and error["path"] == "Idempotency-Key"
    status, error, _ = await post_run(sim, {"invoices": 0}, "k1")
    assert status == 400 and error["path"] == "$.invoices"
    status, body, _ = await post_run(sim, {"invoices": 2}, "k1")  # the key is still free
    assert (status, body["bill_run_id"]) == (202, "br_000001")


# -- request-rate limit ------------------------------------------------------------------------


def test_token_bucket_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert [bucket.take(0.0), bucket.take(0.0)] == [0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(100.0) == 0.0  # never banks more than the burst
    assert bucket.take(100.0) == 0.0
    assert bucket.take(100.0) > 0


async def test_billing_answers_429_with_retry_after_above_its_rate() -> None:
    """Above its rate billing answers 429 with Retry-After. No timing is assumed: requests go
    out until the first 429 (however slow the machine, the burst of 3 is served first), and
    the refill is awaited for the Retry-After the answer names."""
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x",
                       billing_rate_limit=1.0, billing_rate_burst=3)
    async with running_sim(config) as http:
        served = 0
        while (limited := await http.get("/billing/v1/events")).status == 200:
            served += 1
            assert served < 50, "never rate limited"
        assert served >= 3  # the burst
        assert limited.status == 429
        assert limited.body["code"] == "billing.rate_limited"
        retry_after = int(limited.headers["Retry-After"])
        assert retry_after >= 1
        writes = 0
        while (refused := await http.post("/billing/v1/bill-runs", json={"invoices": 1})
               ).status != 429:
            writes += 1
            assert writes < 50, "writes never rate limited"
        assert refused.body["code"] == "billing.rate_limited"
        # Other platforms are not limited by billing's rate.
        assert (await http.get("/erp/v1/governance")).status == 200
        audit = (await http.get("/sim/v1/audit")).body
        assert audit["faults"]["http"]["billing/api"] == {"rate_limited": 2}
        await anyio.sleep(retry_after)  # what the answer asks for: a token is back by then
        assert (await http.get("/billing/v1/events")).status == 200
