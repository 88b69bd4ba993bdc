"""Partial batch failure (F19): ``item_reject_rate`` rejects a seeded share of bulk items with
``VALIDATION`` while the rest of the batch is processed, and the audit lists them."""

from __future__ import annotations

from typing import Any

from sim import SimConfig, parse_scenario
from sim._erp import ErpLedger, rejects_item

from .conftest import HOST, Http, free_port, running_app, running_sim
from .receiver import GatewayLike
from .test_erp import entry, lookup, struct
from .test_ground_truth import drained

BULK = "/erp/v1/journal-entries/bulk"


def test_rejection_is_seeded_per_external_id() -> None:
    ids = [f"in_{n:06d}" for n in range(1, 2001)]
    picked = [i for i in ids if rejects_item(11, i, 0.1)]
    assert picked == [i for i in ids if rejects_item(11, i, 0.1)]  # pure
    assert 150 < len(picked) < 250  # about the rate
    assert picked != [i for i in ids if rejects_item(12, i, 0.1)]  # the seed matters
    assert not any(rejects_item(11, i, 0.0) for i in ids)
    assert all(rejects_item(11, i, 1.0) for i in ids)


def test_ledger_rejects_only_items_that_would_be_created() -> None:
    ledger = ErpLedger()
    ledger.post([struct()], now=1.0)
    results = ledger.post(
        [struct(), struct(key="k2", external_id="in_000002"), struct(key="k3", external_id="x")],
        now=2.0, reject={0, 1},
    )
    # A replay stays a replay; a new item is rejected; an unrejected one is created.
    assert [r.status for r in results] == ["replayed", "rejected", "created"]
    assert results[1].error is not None and results[1].error.code == "VALIDATION"
    assert ledger.rejections == ["in_000002"]
    assert [p.external_id for p in ledger.postings] == ["in_000001", "x"]
    # Nothing of the rejected item was recorded, not even its key.
    assert ledger.post([struct(key="k2", external_id="in_000002")], now=3.0)[0].status == "created"


async def test_bulk_rejects_a_share_and_processes_the_rest(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"erp": {"item_reject_rate": 0.3}})
    items = [entry(key=f"key-{n}", external_id=f"in_{n:06d}") for n in range(1, 41)]
    expected = sorted(i["externalId"] for i in items if rejects_item(11, i["externalId"], 0.3))
    assert 0 < len(expected) < 40
    reply = await sim.post(BULK, json={"items": items})
    assert reply.status == 200
    results = reply.body["results"]
    rejected = sorted(i["externalId"] for i, r in zip(items, results, strict=True)
                      if r["status"] == "rejected")
    assert rejected == expected
    for r in results:
        if r["status"] == "rejected":
            assert r["error"]["code"] == "VALIDATION"
            assert "id" not in r or r["id"] is None
        else:
            assert r["status"] == "created"
    assert await lookup(sim, expected[0]) == []
    # Sent again: the same items are rejected again, the others replayed.
    again = (await sim.post(BULK, json={"items": items})).body["results"]
    assert [r["status"] for r in again] == [
        "rejected" if r["status"] == "rejected" else "replayed" for r in results]
    audit: dict[str, Any] = (await sim.get("/sim/v1/audit")).body
    assert audit["rejected_ids"] == expected
    assert audit["rejected_count"] == len(expected)
    assert audit["faults"]["http"]["erp/journal-entries.bulk"] == {
        "item_rejected": 2 * len(expected)}
    assert audit["postings"] == 40 - len(expected)
    # Off by default and after a clear; a reset forgets the rejections.
    await sim.delete("/sim/v1/faults")
    (fresh,) = (await sim.post(BULK, json={"items": [items[items.index(
        next(i for i in items if i["externalId"] == expected[0]))]]})).body["results"]
    assert fresh["status"] == "created"
    await sim.post("/sim/v1/reset")
    audit = (await sim.get("/sim/v1/audit")).body
    assert (audit["rejected_ids"], audit["rejected_count"]) == ([], 0)


def test_scenario_sets_item_reject_rate() -> None:
    scenario = parse_scenario(
        '[faults]\nerp = { item_reject_rate = 0.01 }\n'
        '[[http]]\nservice = "erp"\nendpoint = "journal-entries.bulk"\nat_s = 0\nfor_s = 5\n'
        'item_reject_rate = 0.5\n'
    )
    assert scenario.faults.erp.item_reject_rate == 0.01
    assert scenario.http[0].item_reject_rate == 0.5
    assert any("item_reject_rate=0.5" in line for line in scenario.describe())


async def test_dead_letters_equal_injected_rejections_on_a_bill_run() -> None:
    """DLQ_EXACT: a receiver that dead-letters rejected items has exactly as many dead
    letters as the audit lists, and every other invoice is posted."""
    receiver = GatewayLike("whsec_f19")
    hook_port, sim_port = free_port(), free_port()
    receiver.erp_url = f"http://{HOST}:{sim_port}"
    scenario = parse_scenario("[faults]\nerp = { item_reject_rate = 0.2 }\n")
    config = SimConfig(port=sim_port, webhook_url=f"http://{HOST}:{hook_port}/hook",
                       webhook_secret="whsec_f19", seed=5, delivery_concurrency=4,
                       scenario=scenario)
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        await http.post("/billing/v1/bill-runs", json={"invoices": 50})
        audit = await drained(http, 50, receiver)
    assert audit["rejected_count"] == len(receiver.dead_letters) > 0
    assert audit["rejected_ids"] == sorted(receiver.dead_letters)
    assert audit["unposted"] == audit["rejected_ids"]  # nothing else missing
    assert audit["posted"] + audit["rejected_count"] == 50
    assert audit["duplicates"] == 0
