"""Billing: invoice generation (pure) and signed webhook delivery over real HTTP."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime

import anyio
import msgspec
import pytest
from aiohttp import web

from contracts import SignatureError
from contracts.platforms.billing import BillingEvent, BillingInvoice
from contracts.platforms.signing import SIGNATURE_HEADER, verify
from sim import SimConfig, generate_invoices
from sim._billing import BACKOFF_CAP_S, backoff_delay, due_count

from .conftest import HOST, Http, free_port, running_app, running_sim

NOW = datetime(2025, 11, 27, 10, 0, tzinfo=UTC).timestamp()
SECRET = "whsec_test"
EVENT = msgspec.json.Decoder(BillingEvent)


def check_invariants(invoice: BillingInvoice) -> None:
    lines = invoice.lines.data
    assert 1 <= len(lines) <= 5
    for line in lines:
        assert 1 <= line.quantity <= 100
        assert 100 <= line.unit_amount <= 50_000
        assert line.amount == line.quantity * line.unit_amount
    assert sum(line.amount for line in lines) == invoice.subtotal
    assert invoice.subtotal + invoice.tax == invoice.total
    assert 0 <= invoice.tax <= invoice.subtotal * 0.2 + 1
    assert invoice.currency in {"usd", "eur", "gbp", "jpy"}
    assert invoice.version == 1
    assert invoice.period_start <= invoice.created <= invoice.period_end


# -- generation (pure) ----------------------------------------------------------------------


def test_generation_is_deterministic_for_a_seed() -> None:
    a = generate_invoices(50, seed=7, start_index=1, now=NOW)
    b = generate_invoices(50, seed=7, start_index=1, now=NOW)
    assert msgspec.json.encode(a) == msgspec.json.encode(b)


def test_generation_differs_for_another_seed() -> None:
    a = generate_invoices(50, seed=7, start_index=1, now=NOW)
    b = generate_invoices(50, seed=8, start_index=1, now=NOW)
    assert [i.id for i in a] == [i.id for i in b]  # ids are positional
    assert [i.total for i in a] != [i.total for i in b]


def test_generation_does_not_depend_on_how_a_run_is_split() -> None:
    whole = generate_invoices(30, seed=3, start_index=1, now=NOW)
    parts = generate_invoices(10, 3, 1, now=NOW) + generate_invoices(20, 3, 11, now=NOW)
    assert whole == parts


def test_generated_invoices_are_well_formed_and_realistically_mixed() -> None:
    invoices = generate_invoices(2000, seed=7, start_index=1, now=NOW)
    assert [i.id for i in invoices[:2]] == ["in_000001", "in_000002"]
    assert len({i.id for i in invoices}) == 2000
    for invoice in invoices:
        check_invariants(invoice)
    currencies = {c: sum(i.currency == c for i in invoices) for c in ("usd", "eur", "gbp", "jpy")}
    assert currencies["usd"] > 1000
    assert all(n > 20 for n in currencies.values()), currencies
    assert {len(i.lines.data) for i in invoices} == {1, 2, 3, 4, 5}
    assert any(i.tax == 0 for i in invoices) and any(i.tax > 0 for i in invoices)
    # The period is November 2025 (UTC), whole month.
    assert invoices[0].period_start == int(datetime(2025, 11, 1, tzinfo=UTC).timestamp())
    assert invoices[0].period_end == int(datetime(2025, 12, 1, tzinfo=UTC).timestamp()) - 1


def test_december_period_ends_at_new_year() -> None:
    dec = datetime(2025, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    (invoice,) = generate_invoices(1, 1, 1, now=dec)
    assert invoice.period_end == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) - 1


def test_generation_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="start_index"):
        generate_invoices(1, 7, 0, now=NOW)
    with pytest.raises(ValueError, match="count"):
        generate_invoices(-1, 7, 1, now=NOW)


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [
        (1, 0.0, 0.025),
        (1, 0.999999, 0.05),
        (2, 0.0, 0.05),
        (3, 0.5, 0.15),
        (6, 0.0, 0.8),
        (7, 0.0, 1.0),
        (7, 0.999999, 2.0),
        (50, 0.0, 1.0),
        (5000, 0.5, 1.5),
    ],
)
def test_backoff_doubles_from_50ms_and_caps_at_2s(
    attempt: int, jitter: float, expected: float
) -> None:
    assert backoff_delay(attempt, jitter) == pytest.approx(expected, abs=1e-5)
    assert backoff_delay(attempt, jitter) <= BACKOFF_CAP_S


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(0, 0.5)


@pytest.mark.parametrize(
    ("elapsed", "rate", "total", "expected"),
    [
        (0.0, 0.0, 500, 500),
        (0.0, 10.0, 500, 1),
        (0.099, 10.0, 500, 1),
        (0.1, 10.0, 500, 2),
        (1.0, 10.0, 5, 5),
        (-1.0, 10.0, 5, 1),
    ],
)
def test_due_count_paces_by_rate(elapsed: float, rate: float, total: int, expected: int) -> None:
    assert due_count(elapsed, rate, total) == expected


# -- delivery over real HTTP ----------------------------------------------------------------


class Receiver:
    """A webhook endpoint that verifies every signature and fails some first attempts."""

    def __init__(self, *, fail_first_every: int = 0) -> None:
        self.fail_first_every = fail_first_every
        self.bodies: dict[str, list[bytes]] = defaultdict(list)
        self.bad_signatures: list[str] = []
        self.bad_content_types: list[str] = []
        self.invoices: dict[str, BillingInvoice] = {}
        self.app = web.Application()
        self.app.router.add_post("/hook", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.content_type != "application/json":
            self.bad_content_types.append(request.content_type)
        try:
            verify(request.headers.get(SIGNATURE_HEADER), body, [SECRET], now=time.time())
        except SignatureError as exc:
            self.bad_signatures.append(exc.code)
            return web.Response(status=400)
        event = EVENT.decode(body)
        self.bodies[event.id].append(body)
        self.invoices[event.data.object.id] = event.data.object
        number = int(event.data.object.id.removeprefix("in_"))
        first = len(self.bodies[event.id]) == 1
        if self.fail_first_every and number % self.fail_first_every == 0 and first:
            return web.Response(status=500)
        return web.Response(status=204)


async def wait_done(http: Http, run_id: str, within: float = 30.0) -> dict[str, object]:
    with anyio.fail_after(within):
        while True:
            status = (await http.get(f"/billing/v1/bill-runs/{run_id}")).body
            if status["done"]:
                return status  # type: ignore[no-any-return]
            await anyio.sleep(0.02)


async def test_bill_run_delivers_every_event_signed_and_retries_failures() -> None:
    receiver = Receiver(fail_first_every=10)
    hook_port = free_port()
    config = SimConfig(
        port=free_port(),
        webhook_url=f"http://{HOST}:{hook_port}/hook",
        webhook_secret=SECRET,
        delivery_concurrency=8,
        seed=42,
    )
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        created = await http.post("/billing/v1/bill-runs", json={"invoices": 200})
        assert created.status == 202
        assert created.body == {"bill_run_id": "br_000001", "invoices": 200}

        status = await wait_done(http, "br_000001")
        assert status["issued"] == status["accepted"] == 200
        assert status["pending"] == 0
        assert status["attempts"] == 220

        retried = await http.get("/billing/v1/events/evt_in_000010")
        assert retried.body["attempts"] == 2
        assert retried.body["last_status"] == 204
        assert retried.body["accepted_at"] >= retried.body["issued_at"]
        once = await http.get("/billing/v1/events/evt_in_000011")
        assert once.body["attempts"] == 1

        audit = (await http.get("/sim/v1/audit")).body
        assert (audit["issued"], audit["accepted"], audit["posted"]) == (200, 200, 0)
        assert audit["unposted_count"] == 200

    assert receiver.bad_signatures == []
    assert receiver.bad_content_types == []
    assert len(receiver.bodies) == 200
    attempts = {event_id: len(bodies) for event_id, bodies in receiver.bodies.items()}
    twice = sorted(e for e, n in attempts.items() if n == 2)
    assert twice == [f"evt_in_{n:06d}" for n in range(10, 201, 10)]
    assert all(n in (1, 2) for n in attempts.values())
    for event_id in twice:  # encoded once: every attempt carries the same bytes
        first, second = receiver.bodies[event_id]
        assert first == second
    for body_list in receiver.bodies.values():
        event = EVENT.decode(body_list[0])
        assert event.type == "invoice.finalized"
        assert event.id == f"evt_{event.data.object.id}"
        check_invariants(event.data.object)
    # The sim serves the same invoices generate_invoices makes for its seed.
    expected = generate_invoices(1, 42, 7, now=receiver.invoices["in_000007"].created)
    assert receiver.invoices["in_000007"] == expected[0]


async def test_connection_errors_are_retried_until_the_receiver_appears() -> None:
    receiver = Receiver()
    hook_port = free_port()
    config = SimConfig(
        port=free_port(),
        webhook_url=f"http://{HOST}:{hook_port}/hook",
        webhook_secret=SECRET,
        delivery_concurrency=4,
    )
    async with running_sim(config) as http:
        await http.post("/billing/v1/bill-runs", json={"invoices": 3})
        with anyio.fail_after(10):
            while True:
                events = [
                    (await http.get(f"/billing/v1/events/evt_in_00000{n}")).body for n in (1, 2, 3)
                ]
                if all(e and e["attempts"] >= 2 for e in events):
                    break
                await anyio.sleep(0.02)
        assert all(e["last_status"] == 0 and e["accepted_at"] is None for e in events)
        assert (await http.get("/billing/v1/bill-runs/br_000001")).body["accepted"] == 0

        async with running_app(receiver.app, hook_port):
            status = await wait_done(http, "br_000001", within=15)
    assert status["accepted"] == 3
    assert sorted(receiver.bodies) == ["evt_in_000001", "evt_in_000002", "evt_in_000003"]


async def test_rate_paces_issuance_and_ids_continue_across_runs() -> None:
    receiver = Receiver()
    hook_port = free_port()
    config = SimConfig(
        port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook", webhook_secret=SECRET
    )
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        await http.post("/billing/v1/bill-runs", json={"invoices": 10, "rate": 50})
        await wait_done(http, "br_000001")
        first = (await http.get("/billing/v1/events/evt_in_000001")).body
        last = (await http.get("/billing/v1/events/evt_in_000010")).body
        # Ten events at 50/s: the last is due 9/50 = 0.18 s after the first.
        assert 0.17 <= last["issued_at"] - first["issued_at"] < 2.0

        second = await http.post("/billing/v1/bill-runs", json={"invoices": 5})
        assert second.body["bill_run_id"] == "br_000002"
        await wait_done(http, "br_000002")
    assert "evt_in_000015" in receiver.bodies
    assert len(receiver.bodies) == 15


async def test_reset_forgets_runs_but_never_reuses_ids() -> None:
    receiver = Receiver()
    hook_port = free_port()
    config = SimConfig(
        port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook", webhook_secret=SECRET
    )
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        await http.post("/billing/v1/bill-runs", json={"invoices": 4})
        await wait_done(http, "br_000001")

        assert (await http.post("/sim/v1/reset")).body == {"reset": True}
        assert (await http.get("/billing/v1/bill-runs/br_000001")).status == 404
        audit = (await http.get("/sim/v1/audit")).body
        assert (audit["issued"], audit["accepted"]) == (0, 0)

        again = await http.post("/billing/v1/bill-runs", json={"invoices": 2})
        assert again.body["bill_run_id"] == "br_000002"
        await wait_done(http, "br_000002")
        audit = (await http.get("/sim/v1/audit")).body
        assert (audit["issued"], audit["accepted"]) == (2, 2)
    assert sorted(receiver.bodies)[-2:] == ["evt_in_000005", "evt_in_000006"]


async def test_reset_stops_a_run_in_progress() -> None:
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/hook")
    async with running_sim(config) as http:
        await http.post("/billing/v1/bill-runs", json={"invoices": 1000, "rate": 20})
        with anyio.fail_after(30):  # the run is under way (an event, not a time)
            while (await http.get("/billing/v1/bill-runs/br_000001")).body["issued"] < 2:
                await anyio.sleep(0.02)
        await http.post("/sim/v1/reset")
        # The new epoch works: a fresh run is issued (and keeps failing to deliver, silently).
        await http.post("/billing/v1/bill-runs", json={"invoices": 2})
        with anyio.fail_after(30):
            while True:
                if (await http.get("/billing/v1/bill-runs/br_000002")).body["issued"] == 2:
                    break
                await anyio.sleep(0.02)
        # By the time the new run has issued both, the stopped one (20/s) would have issued
        # more if it went on: the audit holds the new run's 2 alone.
        audit = (await http.get("/sim/v1/audit")).body
        assert audit["issued"] == 2


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"invoices": 0}, "$.invoices"),
        ({"invoices": 1_000_001}, "$.invoices"),
        ({"invoices": 5, "rate": -1}, "$.rate"),
        ({"invoices": 5, "rate": 1e300}, "$.rate"),
        ({"invoices": "5"}, "$.invoices"),
        ({}, "$"),
    ],
)
async def test_bad_bill_run_requests_answer_400_naming_the_field(
    sim: Http, body: dict[str, object], path: str
) -> None:
    reply = await sim.post("/billing/v1/bill-runs", json=body)
    assert reply.status == 400
    assert reply.body["path"] == path
    assert reply.body["code"].startswith("contract.")
    assert reply.body["message"]


async def test_unknown_bill_run_and_event_answer_404(sim: Http) -> None:
    for path in (
        "/billing/v1/bill-runs/br_999999",
        "/billing/v1/events/evt_in_999999",
        "/billing/v1/events/nonsense",
    ):
        reply = await sim.get(path)
        assert reply.status == 404
        assert reply.body["code"] == "not_found"
