"""The simulated usage rating and its audit (pure), and the usage routes over HTTP."""

from __future__ import annotations

from typing import Any

from contracts.platforms.revenue import RevenueLineIn
from contracts.platforms.usage import UsageItemIn, UsageRunRequest
from sim._usage import UsageBook, generate_usage, usage_audit

from .conftest import Http


def item(iid: str, ids: list[str], qty: int, meter: str = "api_calls") -> UsageItemIn:
    return UsageItemIn(id=iid, subscription="sub_1", product="prod_api", meter=meter,
                       quantity=qty, period_start="2026-10-01", period_end="2026-10-31",
                       usage_ids=ids)


def test_generate_usage_is_seeded() -> None:
    a = generate_usage(7, 1, 50, subscriptions=3, period="2026-10")
    assert a == generate_usage(7, 1, 50, subscriptions=3, period="2026-10")
    assert a != generate_usage(8, 1, 50, subscriptions=3, period="2026-10")
    assert len({r.id for r in a}) == 50
    assert all(r.window_start.strftime("%Y-%m") == "2026-10" for r in a)


def test_rating_replay_conflict_and_the_audit_counts_per_record() -> None:
    book = UsageBook()
    run = book.start_run(UsageRunRequest(count=3, seed=1, period="2026-10"))
    ids = [r.id for r in run.records]
    qty = {r.id: r.quantity for r in run.records}
    first = item("agg1", ids[:2], qty[ids[0]] + qty[ids[1]])
    assert [r.status for r in book.rate([first])] == ["created"]
    assert [r.status for r in book.rate([first])] == ["replayed"]
    changed = item("agg1", ids[:2], 1)
    assert book.rate([changed])[0].error.code == "IDEMPOTENCY_KEY_REUSED"  # type: ignore[union-attr]
    assert book.rate([item("x", ["zz"], 1, meter="nope")])[0].error.code == "UNKNOWN_METER"  # type: ignore[union-attr]
    # The last record twice in two different aggregates: a duplicate at billing.
    book.rate([item("agg2", [ids[2]], qty[ids[2]]), item("agg3", [ids[2], ids[0]], 1)])
    line = RevenueLineIn(line_id="l1", invoice_id="agg1", product="prod_api", currency="USD",
                         amount=5, period_start="2026-10-01", period_end="2026-10-31",
                         kind="usage", quantity=3, usage_ids=[ids[0]])
    audit = usage_audit(book, [line, line])
    assert audit.generated == 3 and audit.billed == 3
    assert audit.billing_duplicates == 2  # ids[0] and ids[2] rated twice
    assert audit.quantity_mismatches == 1  # agg3's quantity is not its records' sum
    assert audit.revenue_recorded == 1 and audit.revenue_duplicates == 1
    assert audit.revenue_missing == 2
    assert sorted(audit.duplicate_ids) == sorted({ids[0], ids[2]})


async def bulk(http: Http, body: dict[str, Any], key: str) -> tuple[int, Any, Any]:
    async with http.session.post(f"{http.base}/billing/v1/usage-records/bulk", json=body,
                                 headers={"Idempotency-Key": key}) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_usage_routes(sim: Http) -> None:
    run = await sim.post("/sim/v1/usage-runs", json={"count": 5, "seed": 3,
                                                     "period": "2026-10"})
    assert run.status == 201 and len(run.body["records"]) == 5
    bad = await sim.post("/sim/v1/usage-runs", json={"count": 0})
    assert (bad.status, bad.body["path"]) == (400, "$.count")
    rec = run.body["records"][0]
    body = {"items": [{"id": "a1", "subscription": rec["subscription"],
                       "product": rec["product"], "meter": rec["meter"],
                       "quantity": rec["quantity"], "periodStart": "2026-10-01",
                       "periodEnd": "2026-10-31", "usageIds": [rec["id"]]}]}
    status, one, _ = await bulk(sim, body, "k1")
    assert status == 200 and one["results"][0]["status"] == "created"
    status, again, headers = await bulk(sim, body, "k1")
    assert again == one and headers.get("Idempotent-Replayed") == "true"
    body["items"][0]["quantity"] += 1
    status, other, _ = await bulk(sim, body, "k1")
    assert (status, other["code"]) == (422, "idempotency.key_reused")
    audit = (await sim.get("/sim/v1/audit")).body["usage"]
    assert (audit["generated"], audit["billed"], audit["billing_duplicates"]) == (5, 1, 0)
