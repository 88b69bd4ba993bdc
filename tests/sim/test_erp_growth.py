"""ERP growth: GL balances by period, period close, the account-wide concurrency limit, the
governance endpoint, and the response shapes published in ``contracts.platforms.erp``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import pytest

from contracts.platforms.erp import (
    PERIOD_CLOSED,
    REQUEST_LIMIT_EXCEEDED,
    GlBalances,
    Governance,
    JournalEntryList,
    PeriodStatus,
)
from sim import SimConfig
from sim._erp import ErpLedger

from .conftest import HOST, Http, free_port, running_sim
from .test_erp import bulk, entry, struct

BULK = "/erp/v1/journal-entries/bulk"


def dated(n: int, day: str, *, amount: int = 1200, currency: str = "USD") -> dict[str, Any]:
    e = entry(key=f"key-{n}", external_id=f"in_{n:06d}", amount=amount, currency=currency)
    e["tranDate"] = day
    return e


async def decode(http: Http, path: str, type_: type[Any], method: str = "GET") -> Any:
    async with http.session.request(method, http.base + path) as resp:
        assert resp.status == 200, await resp.text()
        return msgspec.json.decode(await resp.read(), type=type_)


async def test_gl_balances_sum_each_account_per_period_and_currency(sim: Http) -> None:
    results = await bulk(
        sim,
        dated(1, "2025-11-03", amount=1200),
        dated(2, "2025-11-30", amount=500),
        dated(3, "2025-12-01", amount=700),
        dated(4, "2025-11-15", amount=300, currency="EUR"),
        dated(1, "2025-11-03", amount=1200),  # a replay: counted once
        dated(5, "2025-11-04", amount=999) | {
            "lines": [{"account": "1200", "debit": 5}, {"account": "4000", "credit": 4}]},
    )
    assert [r["status"] for r in results] == ["created"] * 4 + ["replayed", "rejected"]
    nov = await decode(sim, "/erp/v1/gl/balances?period=2025-11", GlBalances)
    assert not nov.closed
    assert [(b.account, b.currency, b.debit, b.credit, b.balance) for b in nov.balances] == [
        ("1200", "EUR", 300, 0, 300),
        ("1200", "USD", 1700, 0, 1700),
        ("2200", "EUR", 0, 200, -200),
        ("2200", "USD", 0, 400, -400),
        ("4000", "EUR", 0, 100, -100),
        ("4000", "USD", 0, 1300, -1300),
    ]
    for cur in ("USD", "EUR"):  # every period balances per currency
        assert sum(b.balance for b in nov.balances if b.currency == cur) == 0
    dec = await decode(sim, "/erp/v1/gl/balances?period=2025-12", GlBalances)
    assert {(b.account, b.balance) for b in dec.balances} == {("1200", 700), ("4000", -500),
                                                               ("2200", -200)}
    empty = await decode(sim, "/erp/v1/gl/balances?period=2025-10", GlBalances)
    assert empty == GlBalances(period="2025-10", closed=False, balances=[])


@pytest.mark.parametrize("query", ["", "?period=2025-13", "?period=2025-1", "?period=nov"])
async def test_gl_balances_need_a_valid_period(sim: Http, query: str) -> None:
    reply = await sim.get(f"/erp/v1/gl/balances{query}")
    assert reply.status == 400
    assert reply.body["path"] == "period"


async def test_closing_a_period_rejects_new_postings_into_it(sim: Http) -> None:
    (before,) = await bulk(sim, dated(1, "2025-11-10"))
    assert before["status"] == "created"
    closed = await decode(sim, "/erp/v1/periods/2025-11/close", PeriodStatus, method="POST")
    assert (closed.period, closed.status) == ("2025-11", "closed")
    assert closed.closed_at is not None
    again = await decode(sim, "/erp/v1/periods/2025-11/close", PeriodStatus, method="POST")
    assert again == closed  # idempotent: the first close time stays

    late, replay, december = await bulk(sim, dated(2, "2025-11-30"), dated(1, "2025-11-10"),
                                        dated(3, "2025-12-01"))
    assert late["status"] == "rejected"
    assert late["error"]["code"] == PERIOD_CLOSED
    assert "2025-11" in late["error"]["message"]
    assert replay == {**before, "status": "replayed"}  # created before the close: still a replay
    assert december["status"] == "created"
    # A rejected key is not remembered: posted again into an open period, it is created.
    (moved,) = await bulk(sim, dated(2, "2025-12-02"))
    assert moved["status"] == "created"

    nov = await decode(sim, "/erp/v1/gl/balances?period=2025-11", GlBalances)
    assert nov.closed
    assert sum(b.debit for b in nov.balances) == 1200  # only the entry before the close
    periods = (await sim.get("/erp/v1/periods")).body
    assert periods == {"items": [{"period": "2025-11", "status": "closed",
                                  "closedAt": closed.closed_at}]}
    audit = (await sim.get("/sim/v1/audit")).body
    assert audit["postings"] == 3
    assert (await sim.post("/erp/v1/periods/2025-00/close")).status == 400
    await sim.post("/sim/v1/reset")
    assert (await sim.get("/erp/v1/periods")).body == {"items": []}


def test_invalid_tran_date_is_rejected() -> None:
    ledger = ErpLedger()
    bad = [struct(key=f"k{i}", external_id=f"x{i}") for i in range(3)]
    bad = [msgspec.structs.replace(e, tran_date=d)
           for e, d in zip(bad, ["2025-02-30", "20251127", "2025-11-27"], strict=True)]
    results = ledger.post(bad, now=1.0)
    assert [r.status for r in results] == ["rejected", "rejected", "created"]
    assert results[0].error is not None and "tranDate" in results[0].error.message


async def test_concurrency_limit_answers_sss_request_limit_exceeded() -> None:
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:1/x",
                       erp_concurrency_limit=2)
    async with running_sim(config) as http:
        await http.put("/sim/v1/faults", json={"erp": {"latency_ms": 2_000}})
        replies: list[Any] = []
        governance: list[Governance] = []

        async def one(n: int) -> None:
            replies.append(await http.post(BULK, json={"items": [dated(n, "2025-11-01")]}))

        async def until(done: Callable[[Governance], bool]) -> Governance:
            with anyio.fail_after(30):  # a guard against a hang, not a speed target
                while not done(gov := await decode(http, "/erp/v1/governance", Governance)):
                    await anyio.sleep(0.01)
            return gov

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 1)
            tg.start_soon(one, 2)
            await until(lambda g: g.in_flight == 2)  # both sleep in the injected latency
            tg.start_soon(one, 3)
            tg.start_soon(one, 4)
            governance.append(await until(lambda g: g.limited_requests == 2))
        statuses = sorted(r.status for r in replies)
        assert statuses == [200, 200, 429, 429]
        for r in replies:
            if r.status == 429:
                assert r.body["code"] == REQUEST_LIMIT_EXCEEDED
                assert r.headers["Retry-After"] == "1"
        (gov,) = governance
        assert (gov.concurrency_limit, gov.in_flight, gov.limited_requests) == (2, 2, 2)
        assert gov.max_bulk_items == 1000
        after = await decode(http, "/erp/v1/governance", Governance)
        assert after.in_flight == 0
        audit = (await http.get("/sim/v1/audit")).body
        assert audit["postings"] == 2
        assert audit["faults"]["http"]["erp/account"] == {"concurrency_limit": 2}


async def test_no_limit_by_default_and_governance_reports_it(sim: Http) -> None:
    gov = (await sim.get("/erp/v1/governance")).body
    assert gov == {"concurrencyLimit": 0, "inFlight": 0, "maxBulkItems": 1000,
                   "limitedRequests": 0, "closedPeriods": [], "requests": 0,
                   "requestTimes": []}


async def test_lookup_answers_the_contract_shape(sim: Http) -> None:
    await bulk(sim, entry(), entry(key="k2", external_id="in_000002:v2"))
    listed = await decode(sim, "/erp/v1/journal-entries?externalId=in_000001", JournalEntryList)
    (posting,) = listed.items
    assert (posting.id, posting.external_id, posting.version) == ("JE-1", "in_000001", None)
    versioned = await decode(sim, "/erp/v1/journal-entries?externalId=in_000002:v2",
                             JournalEntryList)
    assert versioned.items[0].version == 2
