"""The synchronous lane end to end: a real nats-server, the simulator's CPQ over HTTP and the
gateway in this process. Request/reply over NATS (``nats.micro`` service) and over HTTP, the
discount rule, malformed requests, a CPQ slower than the deadline and the service discovery.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client

import sim
from actors.infra import NatsBus
from actors.sync.rules import cpq_refusal, resolve_deadline_ms
from contracts import (
    DEADLINE_HEADER,
    ContractError,
    OrderDecision,
    PricingDecision,
    Subjects,
    SyncDecided,
    SyncError,
    SyncReply,
    derive_id,
)
from gateway.app import run_gateway
from gateway.broker import EmbeddedBroker, free_port
from gateway.config import Config, load_config

from .conftest import _start, _stop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SUBJECTS = Subjects()
_replies = msgspec.json.Decoder(SyncReply)
_decided = msgspec.json.Decoder(SyncDecided)
# Can ``PUT /sim/v1/faults`` slow CPQ down at run time? Until the simulator's runtime faults
# have a ``cpq`` section, the slow-CPQ test starts its simulator with ``cpq_latency_ms``.
RUNTIME_CPQ_FAULTS = "cpq" in {f.name for f in msgspec.structs.fields(sim.Faults)}

# prod_platform lists at 49,900 USD cents, prod_seats at 2,500 (the simulator's catalog).
BASKET = [{"product_id": "prod_platform", "quantity": 2}, {"product_id": "prod_seats",
                                                          "quantity": 10}]
SUBTOTAL = 2 * 49_900 + 10 * 2_500


@dataclass
class Lane:
    cfg: Config
    nc: Client
    bus: NatsBus
    http_url: str
    sim_url: str

    async def ask(self, subject: str, doc: Any, *, deadline_ms: int | None = None,
                  timeout: float = 5.0, raw: bytes | None = None) -> tuple[SyncReply, Any]:
        headers = {DEADLINE_HEADER: str(deadline_ms)} if deadline_ms is not None else None
        msg = await self.nc.request(subject, raw if raw is not None else msgspec.json.encode(doc),
                                    timeout=timeout, headers=headers)
        return _replies.decode(msg.data), msg.headers or {}

    async def post(self, path: str, doc: Any, *, headers: dict[str, str] | None = None,
                   raw: bytes | None = None) -> tuple[int, SyncReply]:
        async with aiohttp.ClientSession() as s, s.post(
                self.http_url + path, data=raw if raw is not None else msgspec.json.encode(doc),
                headers=headers) as r:
            return r.status, _replies.decode(await r.read())

    async def put_faults(self, doc: Any) -> None:
        async with aiohttp.ClientSession() as s, s.put(f"{self.sim_url}/sim/v1/faults",
                                                       data=msgspec.json.encode(doc)) as r:
            assert r.status == 200, await r.text()

    async def follow_ups(self, subject: str, *, at_least: int, within: float = 10.0
                         ) -> list[tuple[dict[str, str], SyncDecided]]:
        stream = SUBJECTS.stream("commercial")
        with anyio.fail_after(within):
            while True:
                stored = await self.bus.scan(stream, subject=subject)
                if len(stored) >= at_least:
                    return [(m.headers, _decided.decode(m.data)) for m in stored]
                await anyio.sleep(0.05)


@asynccontextmanager
async def lane_stack(broker: EmbeddedBroker, tmp_path: Path, *, cpq_latency_ms: int = 0,
                     **cpq: Any) -> AsyncIterator[Lane]:
    """The simulator (CPQ with ``cpq_latency_ms``) and a gateway pricing through it."""
    sim_cfg = sim.SimConfig(port=free_port(), seed=5, cpq_latency_ms=cpq_latency_ms)
    sim_ready = anyio.Event()
    sim_task = await _start(sim.serve(sim_cfg, ready=sim_ready), sim_ready)
    sim_url = f"http://127.0.0.1:{sim_cfg.port}"
    port = free_port()
    cfg = load_config(env={}, overrides={
        "data_dir": str(tmp_path / "gw"),
        "nats": {"url": broker.url},
        "http": {"port": port},
        "admin": {"port": free_port()},  # the lane's HTTP face
        "erp": {"base_url": sim_url, "timeout_s": 5.0},
        # A generous default: only the slow-CPQ test means to miss its deadline.
        "cpq": {"base_url": sim_url, "timeout_s": 5.0, "default_deadline_ms": 3000, **cpq},
    })
    ready = anyio.Event()
    gw_task = await _start(run_gateway(cfg, ready=ready, handle_signals=False), ready)
    nc = await nats.connect(broker.url, **broker.nats_options())
    bus = await NatsBus.connect(broker.url, auth=broker.auth())
    try:
        yield Lane(cfg, nc, bus, f"http://127.0.0.1:{cfg.admin.port}", sim_url)
    finally:
        await nc.close()
        await bus.close()
        await _stop(gw_task)
        await _stop(sim_task)


async def test_pricing_and_order_over_nats(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with lane_stack(broker, tmp_path) as lane:
        reply, headers = await lane.ask(SUBJECTS.sync_pricing_validate, {
            "request_id": "req-1", "currency": "USD", "items": BASKET, "discount_bp": 500})
        assert isinstance(reply, PricingDecision), reply
        assert (reply.request_id, reply.status, reply.code) == ("req-1", "accepted", "")
        assert (reply.requested_discount_bp, reply.approved_discount_bp) == (500, 1000)
        assert reply.pricing is not None and reply.follow_up_subject is None
        assert [(ln.product_id, ln.list_unit_amount, ln.amount) for ln in reply.pricing.lines] \
            == [("prod_platform", 49_900, 99_800), ("prod_seats", 2_500, 25_000)]
        discount = 6_240  # 5 % of 124,800
        assert (reply.pricing.subtotal, reply.pricing.discount, reply.pricing.total) == (
            124_800, discount, 118_560)
        assert "Nats-Service-Error-Code" not in headers

        order, _ = await lane.ask(SUBJECTS.sync_order_accept, {
            "order_id": "ord-1", "customer_id": "cus-1", "currency": "USD", "items": BASKET,
            "discount_bp": 500, "expected_total": SUBTOTAL - discount})
        assert isinstance(order, OrderDecision), order
        assert (order.order_id, order.status) == ("ord-1", "accepted")
        assert order.request_id  # generated when the caller gives none

        # Quoted one price, priced another: refused, naming the field.
        order, _ = await lane.ask(SUBJECTS.sync_order_accept, {
            "order_id": "ord-2", "customer_id": "cus-1", "currency": "USD", "items": BASKET,
            "expected_total": SUBTOTAL - 1})
        assert isinstance(order, OrderDecision)
        assert (order.status, order.code, order.path) == (
            "rejected", "order.price_mismatch", "$.expected_total")

        # CPQ does not know the product: refused with CPQ's reason and the request's path.
        reply, _ = await lane.ask(SUBJECTS.sync_pricing_validate, {
            "currency": "USD", "items": [{"product_id": "prod_nope", "quantity": 1}]})
        assert isinstance(reply, PricingDecision)
        assert (reply.status, reply.code, reply.path) == (
            "rejected", "pricing.cpq_rejected", "$.items[0].product_id")
        assert "cpq.unknown_product" in reply.message


async def test_pricing_and_order_over_http(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with lane_stack(broker, tmp_path) as lane:
        status, reply = await lane.post("/sync/v1/pricing/validate", {
            "currency": "JPY", "items": [{"product_id": "prod_api", "quantity": 3}]})
        assert status == 200 and isinstance(reply, PricingDecision), reply
        assert reply.status == "accepted" and reply.pricing is not None
        assert reply.pricing.total == 3 * 225  # 150 USD cents x 1.5 -> 225 yen, no discount

        status, reply = await lane.post("/sync/v1/orders/accept", {
            "order_id": "ord-9", "customer_id": "cus-9", "currency": "USD", "items": BASKET,
            "discount_bp": 1200, "deal": {"deal_id": "deal-9", "approved_discount_bp": 1500},
            "expected_total": 109_824})  # 124,800 less 12 % (14,976)
        assert status == 200 and isinstance(reply, OrderDecision), reply
        assert (reply.status, reply.approved_discount_bp) == ("accepted", 1500)

        status, reply = await lane.post("/sync/v1/pricing/validate", {
            "currency": "USD", "items": BASKET, "discount_bp": 1001})
        assert status == 200 and isinstance(reply, PricingDecision)
        assert (reply.status, reply.code, reply.path) == (
            "rejected", "pricing.discount_not_approved", "$.discount_bp")

        status, reply = await lane.post("/sync/v1/orders/accept", {"order_id": "o"})
        assert status == 400 and isinstance(reply, SyncError)
        assert (reply.code, reply.path) == ("contract.missing_field", "$")
        assert "customer_id" in reply.message or "currency" in reply.message or \
            "items" in reply.message

        status, reply = await lane.post("/sync/v1/pricing/validate", {
            "currency": "USD", "items": BASKET}, headers={DEADLINE_HEADER: "-5"})
        assert status == 400 and isinstance(reply, SyncError)
        assert (reply.code, reply.path) == ("sync.invalid_deadline", DEADLINE_HEADER)


async def test_a_discount_above_the_approval_is_refused(broker: EmbeddedBroker,
                                                        tmp_path: Path) -> None:
    async with lane_stack(broker, tmp_path, max_discount_bp=1000) as lane:
        cases = [
            # (discount, deal's approval or None for the configured maximum, status)
            (1000, None, "accepted"),
            (1001, None, "rejected"),
            (1800, 2000, "accepted"),   # a deal may approve more than the maximum ...
            (800, 500, "rejected"),     # ... or less
        ]
        for discount, approval, status in cases:
            doc: dict[str, Any] = {"currency": "EUR", "items": BASKET, "discount_bp": discount}
            if approval is not None:
                doc["deal"] = {"deal_id": "deal-1", "approved_discount_bp": approval}
            reply, _ = await lane.ask(SUBJECTS.sync_pricing_validate, doc)
            assert isinstance(reply, PricingDecision)
            assert reply.status == status, (discount, approval, reply)
            if status == "rejected":
                assert (reply.code, reply.path, reply.pricing) == (
                    "pricing.discount_not_approved", "$.discount_bp", None)
                assert reply.approved_discount_bp == (approval or 1000)

        reply, _ = await lane.ask(SUBJECTS.sync_order_accept, {
            "order_id": "o-1", "customer_id": "c-1", "currency": "EUR", "items": BASKET,
            "discount_bp": 100, "deal": {"deal_id": "deal-old", "approved_discount_bp": 900,
                                         "valid_until": "2020-01-31"}})
        assert isinstance(reply, OrderDecision)
        assert (reply.status, reply.code, reply.path) == (
            "rejected", "pricing.deal_expired", "$.deal.valid_until")


@pytest.mark.parametrize(("raw", "headers", "code", "path"), [
    (b"{not json", None, "contract.malformed", "$"),
    (b'{"currency": "USD", "items": [{"product_id": "p", "quantity": 0}]}', None,
     "contract.constraint", "$.items[0].quantity"),
    (b'{"currency": "USD", "items": [{"product_id": "p", "quantity": 1.5}]}', None,
     "contract.invalid_type", "$.items[0].quantity"),
    (b'{"currency": "XXX", "items": [{"product_id": "p", "quantity": 1}]}', None,
     "money.unknown_currency", "$.currency"),
    (b'{"currency": "USD", "items": [{"product_id": "p", "quantity": 1},'
     b' {"product_id": "p", "quantity": 2}]}', None, "sync.duplicate_item",
     "$.items[1].product_id"),
    (b'{"currency": "USD", "items": [{"product_id": "p", "quantity": 1}]}', "soon",
     "sync.invalid_deadline", DEADLINE_HEADER),
])
async def test_a_malformed_request_gets_an_error_with_code_and_path(
        broker: EmbeddedBroker, tmp_path: Path, raw: bytes, headers: str | None, code: str,
        path: str) -> None:
    async with lane_stack(broker, tmp_path) as lane:
        msg = await lane.nc.request(SUBJECTS.sync_pricing_validate, raw, timeout=5,
                                    headers={DEADLINE_HEADER: headers} if headers else None)
        reply = _replies.decode(msg.data)
        assert isinstance(reply, SyncError), reply
        assert (reply.code, reply.path, reply.retryable) == (code, path, False)
        assert "Traceback" not in reply.message
        # A generic NATS services client sees an error reply too.
        assert msg.headers is not None and msg.headers["Nats-Service-Error-Code"] == "400"
        assert msg.headers["Nats-Service-Error"].startswith(code)


async def test_a_slow_cpq_gets_a_pending_answer_in_time_then_a_follow_up(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    latency_ms, deadline_ms = 1200, 250
    async with lane_stack(broker, tmp_path,
                          cpq_latency_ms=0 if RUNTIME_CPQ_FAULTS else latency_ms) as lane:
        if RUNTIME_CPQ_FAULTS:
            await lane.put_faults({"cpq": {"latency_ms": latency_ms}})
        # Over NATS, the deadline in the header. The requester waits longer than the
        # deadline: how soon the answer comes is a bench figure, not a test's; what is tested
        # is that the answer is the pending one, not the CPQ's (which takes far longer).
        reply, _ = await lane.ask(SUBJECTS.sync_pricing_validate, {
            "request_id": "slow-1", "currency": "USD", "items": BASKET, "discount_bp": 300},
            deadline_ms=deadline_ms, timeout=10)
        assert isinstance(reply, PricingDecision), reply
        assert reply.status == "accepted_pending_validation" and reply.pricing is None
        assert reply.follow_up_subject == SUBJECTS.sync_decided("pricing.validate")
        # Over HTTP, the deadline as a field; 202 like any accepted-for-later answer.
        status, order = await lane.post("/sync/v1/orders/accept", {
            "request_id": "slow-2", "order_id": "ord-slow", "customer_id": "cus-1",
            "currency": "USD", "items": BASKET, "deadline_ms": deadline_ms,
            "expected_total": SUBTOTAL})
        assert status == 202 and isinstance(order, OrderDecision)
        assert order.status == "accepted_pending_validation"

        # The final decisions follow on the commercial lane, once each, with the derived id.
        [(headers, event)] = await lane.follow_ups(reply.follow_up_subject, at_least=1)
        assert headers["Nats-Msg-Id"] == event.event_id == derive_id(
            "sync", "pricing.validate", "slow-1", "decided")
        assert (event.request_id, event.operation) == ("slow-1", "pricing.validate")
        assert isinstance(event.decision, PricingDecision)
        assert event.decision.status == "accepted" and event.decision.pricing is not None
        assert event.decision.pricing.total == 121_056  # 124,800 less 3 % (3,744)
        [(_, event)] = await lane.follow_ups(SUBJECTS.sync_decided("order.accept"), at_least=1)
        assert isinstance(event.decision, OrderDecision)
        assert (event.decision.order_id, event.decision.status) == ("ord-slow", "accepted")

        # The caller retries the same request: still pending, still one follow-up stored.
        reply, _ = await lane.ask(SUBJECTS.sync_pricing_validate, {
            "request_id": "slow-1", "currency": "USD", "items": BASKET, "discount_bp": 300},
            deadline_ms=deadline_ms, timeout=10)
        assert isinstance(reply, PricingDecision)
        assert reply.status == "accepted_pending_validation"
        # A later request with the same slow CPQ: once its follow-up is stored, a second
        # validation started by the retry (earlier, same latency) would be stored too.
        later, _ = await lane.ask(SUBJECTS.sync_pricing_validate, {
            "request_id": "slow-3", "currency": "USD", "items": BASKET, "discount_bp": 300},
            deadline_ms=deadline_ms, timeout=10)
        assert isinstance(later, PricingDecision)
        assert later.status == "accepted_pending_validation"
        stored = await lane.follow_ups(reply.follow_up_subject or "", at_least=2)
        assert sorted(e.request_id for _, e in stored) == ["slow-1", "slow-3"]
        # Canonical consumers (commercial.evt.>) never see the follow-ups.
        assert await lane.bus.stream_messages(SUBJECTS.stream("commercial"),
                                              SUBJECTS.lane_events("commercial")) == 0


async def test_the_service_answers_discovery(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with lane_stack(broker, tmp_path) as lane:
        ping = msgspec.json.decode((await lane.nc.request("$SRV.PING", b"", timeout=5)).data)
        assert (ping["name"], ping["type"]) == ("erpgw-sync", "io.nats.micro.v1.ping_response")
        info = msgspec.json.decode(
            (await lane.nc.request("$SRV.INFO.erpgw-sync", b"", timeout=5)).data)
        assert info["id"] == ping["id"]
        assert {(e["name"], e["subject"]) for e in info["endpoints"]} == {
            ("pricing-validate", "erpgw.sync.pricing.validate"),
            ("order-accept", "erpgw.sync.order.accept")}
        await lane.ask(SUBJECTS.sync_pricing_validate, {"currency": "USD", "items": BASKET})
        stats = msgspec.json.decode(
            (await lane.nc.request(f"$SRV.STATS.erpgw-sync.{ping['id']}", b"",
                                   timeout=5)).data)
        pricing = next(e for e in stats["endpoints"] if e["name"] == "pricing-validate")
        assert pricing["num_requests"] == 1 and pricing["data"]["accepted"] == 1


async def test_cpq_down_is_a_retryable_error(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with lane_stack(broker, tmp_path,
                          base_url=f"http://127.0.0.1:{free_port()}") as lane:
        reply, headers = await lane.ask(SUBJECTS.sync_pricing_validate,
                                        {"currency": "USD", "items": BASKET})
        assert isinstance(reply, SyncError), reply
        assert (reply.code, reply.retryable) == ("sync.cpq_unavailable", True)
        assert headers["Nats-Service-Error-Code"] == "503"


async def test_stopping_finishes_a_pending_decision(broker: EmbeddedBroker,
                                                    tmp_path: Path) -> None:
    """A graceful stop waits for a detached CPQ call and publishes its follow-up."""
    sim_cfg = sim.SimConfig(port=free_port(), seed=5, cpq_latency_ms=800)
    sim_ready = anyio.Event()
    sim_task = await _start(sim.serve(sim_cfg, ready=sim_ready), sim_ready)
    sim_url = f"http://127.0.0.1:{sim_cfg.port}"
    cfg = load_config(env={}, overrides={
        "data_dir": str(tmp_path / "gw"), "nats": {"url": broker.url},
        "http": {"port": free_port()}, "admin": {"port": free_port()},
        "erp": {"base_url": sim_url},
        "cpq": {"base_url": sim_url, "timeout_s": 5.0}})
    ready = anyio.Event()
    gw_task = await _start(run_gateway(cfg, ready=ready, handle_signals=False), ready)
    bus = await NatsBus.connect(broker.url, auth=broker.auth())
    nc = await nats.connect(broker.url, **broker.nats_options())
    try:
        msg = await nc.request(SUBJECTS.sync_pricing_validate, msgspec.json.encode({
            "request_id": "stop-1", "currency": "USD", "items": BASKET}),
            timeout=2, headers={DEADLINE_HEADER: "100"})
        reply = _replies.decode(msg.data)
        assert isinstance(reply, PricingDecision)
        assert reply.status == "accepted_pending_validation"
        await _stop(gw_task)  # while CPQ is still pricing
        stored = await bus.scan(SUBJECTS.stream("commercial"),
                                subject=SUBJECTS.sync_decided("pricing.validate"))
        [event] = [_decided.decode(m.data) for m in stored]
        assert event.request_id == "stop-1" and event.decision.status == "accepted"
    finally:
        await nc.close()
        await bus.close()
        await _stop(gw_task)
        await _stop(sim_task)


@pytest.mark.parametrize(("header", "field", "expected"), [
    (None, None, 300), ("250", None, 250), (None, 120, 120), ("250", 120, 120),
    (" 90 ", 120, 90), ("600000", None, 600_000),
])
def test_the_tighter_deadline_wins(header: str | None, field: int | None,
                                   expected: int) -> None:
    assert resolve_deadline_ms(header, field, 300) == expected


@pytest.mark.parametrize("header", ["0", "-1", "1.5", "abc", "", "600001"])
def test_a_bad_deadline_header_is_refused(header: str) -> None:
    with pytest.raises(ContractError) as info:
        resolve_deadline_ms(header, None, 300)
    assert (info.value.code, info.value.path) == ("sync.invalid_deadline", DEADLINE_HEADER)


def test_cpq_refusals_point_into_the_request() -> None:
    r = cpq_refusal(422, '{"code": "cpq.no_price", "message": "no JPY", "path": "$.currency"}')
    assert (r.code, r.path) == ("pricing.cpq_rejected", "$.currency")
    assert "cpq.no_price" in r.message
    r = cpq_refusal(400, "<html>bad gateway</html>")
    assert (r.code, r.path) == ("pricing.cpq_rejected", "$")


async def test_a_full_lane_answers_sync_overloaded_at_once(broker: EmbeddedBroker,
                                                           tmp_path: Path) -> None:
    """docs/errors.md: ``sync.overloaded`` (503, retryable) when ``cpq.max_pending`` CPQ calls
    are running. One slow call, detached after its pending answer, fills a lane of one; the
    next request, over NATS and over HTTP, is refused with the code instead of queueing."""
    async with lane_stack(broker, tmp_path, cpq_latency_ms=20_000, max_pending=1,
                          max_in_flight=1) as lane:
        first, _ = await lane.ask(SUBJECTS.sync_pricing_validate, {
            "request_id": "busy-1", "currency": "USD", "items": BASKET},
            deadline_ms=100, timeout=10)
        assert isinstance(first, PricingDecision)
        assert first.status == "accepted_pending_validation"  # its CPQ call runs on
        refused, headers = await lane.ask(SUBJECTS.sync_pricing_validate, {
            "request_id": "busy-2", "currency": "USD", "items": BASKET}, timeout=10)
        assert isinstance(refused, SyncError), refused
        assert (refused.code, refused.retryable) == ("sync.overloaded", True)
        assert headers["Nats-Service-Error-Code"] == "503"
        status, over_http = await lane.post("/sync/v1/pricing/validate", {
            "request_id": "busy-3", "currency": "USD", "items": BASKET})
        assert status == 503 and isinstance(over_http, SyncError)
        assert over_http.code == "sync.overloaded"
