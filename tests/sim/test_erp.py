"""The simulated ERP: the pure ledger, then the bulk API and lookup over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.platforms.erp import JournalEntryIn, JournalLineIn
from sim import SimConfig
from sim._erp import ErpLedger, validate_entry

from .conftest import HOST, Http, free_port, running_sim


def entry(
    key: str = "key-00000001",
    external_id: str = "in_000001",
    *,
    amount: int = 1200,
    currency: str = "USD",
    lines: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A journal entry as JSON: debit receivables, credit revenue and tax."""
    return {
        "idempotencyKey": key,
        "externalId": external_id,
        "tranDate": "2025-11-27",
        "currency": currency,
        "memo": f"Invoice {external_id}",
        "lines": lines
        if lines is not None
        else [
            {"account": "1200", "debit": amount},
            {"account": "4000", "credit": amount - 200},
            {"account": "2200", "credit": 200},
        ],
    }


def struct(**kw: Any) -> JournalEntryIn:
    raw = entry(**kw)
    return JournalEntryIn(
        idempotency_key=raw["idempotencyKey"],
        external_id=raw["externalId"],
        tran_date=raw["tranDate"],
        currency=raw["currency"],
        memo=raw["memo"],
        lines=[JournalLineIn(**line) for line in raw["lines"]],
    )


# -- the pure ledger ------------------------------------------------------------------------


def test_ledger_creates_replays_and_refuses_reuse_in_order() -> None:
    ledger = ErpLedger()
    results = ledger.post(
        [struct(), struct(), struct(amount=999), struct(key="key-00000002", external_id="x")],
        now=100.0,
    )
    assert [r.status for r in results] == ["created", "replayed", "rejected", "created"]
    assert [r.id for r in results] == ["JE-1", "JE-1", None, "JE-2"]
    assert results[2].error is not None
    assert results[2].error.code == "IDEMPOTENCY_KEY_REUSED"
    assert [(p.seq, p.id, p.amount, p.accepted_at) for p in ledger.postings] == [
        (1, "JE-1", 1200, 100.0),
        (2, "JE-2", 1200, 100.0),
    ]


def test_ledger_numbering_continues_from_first_number() -> None:
    ledger = ErpLedger(first_number=41)
    (result,) = ledger.post([struct()], now=1.0)
    assert result.id == "JE-41"
    assert ledger.next_number == 42
    assert ledger.postings[0].seq == 1


@pytest.mark.parametrize(
    ("kw", "code", "fragment"),
    [
        ({"lines": [{"account": "1200", "debit": 5}]}, "INVALID", "at least 2 lines"),
        (
            {"lines": [{"account": "1", "debit": 5, "credit": 5}, {"account": "2", "credit": 0}]},
            "INVALID",
            "lines[0]",
        ),
        ({"lines": [{"account": "1", "debit": 5}, {"account": "2"}]}, "INVALID", "lines[1]"),
        (
            {"lines": [{"account": "1", "debit": -5}, {"account": "2", "credit": 5}]},
            "INVALID",
            "lines[0]",
        ),
        ({"currency": "usd"}, "INVALID", "currency"),
        ({"currency": "US"}, "INVALID", "currency"),
        ({"key": ""}, "INVALID", "idempotencyKey"),
        ({"external_id": ""}, "INVALID", "externalId"),
        (
            {"lines": [{"account": "1", "debit": 10}, {"account": "2", "credit": 9}]},
            "UNBALANCED",
            "debits 10 != credits 9",
        ),
    ],
)
def test_validation_names_the_rule(kw: dict[str, Any], code: str, fragment: str) -> None:
    error = validate_entry(struct(**kw))
    assert error is not None
    assert error.code == code
    assert fragment in error.message


def test_a_valid_entry_passes_validation() -> None:
    assert validate_entry(struct()) is None


# -- over HTTP -------------------------------------------------------------------------------


async def bulk(http: Http, *items: dict[str, Any]) -> list[dict[str, Any]]:
    reply = await http.post("/erp/v1/journal-entries/bulk", json={"items": list(items)})
    assert reply.status == 200, reply.body
    return reply.body["results"]  # type: ignore[no-any-return]


async def lookup(http: Http, external_id: str) -> list[dict[str, Any]]:
    reply = await http.get(f"/erp/v1/journal-entries?externalId={external_id}")
    assert reply.status == 200
    return reply.body["items"]  # type: ignore[no-any-return]


async def test_created_then_lookup_by_external_id(sim: Http) -> None:
    (result,) = await bulk(sim, entry())
    assert result == {
        "idempotencyKey": "key-00000001",
        "status": "created",
        "id": "JE-1",
        "error": None,
    }
    (posting,) = await lookup(sim, "in_000001")
    assert posting["id"] == "JE-1"
    assert posting["seq"] == 1
    assert posting["idempotencyKey"] == "key-00000001"
    assert posting["externalId"] == "in_000001"
    assert posting["currency"] == "USD"
    assert posting["amount"] == 1200
    assert isinstance(posting["acceptedAt"], float)
    assert await lookup(sim, "in_424242") == []


async def test_replay_with_same_key_and_body_posts_nothing_new(sim: Http) -> None:
    await bulk(sim, entry())
    # Same entry, different key order and whitespace on the wire: still the same body.
    raw = (
        b'{"items": [ {"lines": [{"debit": 1200, "account": "1200"}, {"account": "4000", '
        b'"credit": 1000}, {"account": "2200", "credit": 200}], "memo": "Invoice in_000001",'
        b' "currency": "USD", "tranDate": "2025-11-27", "externalId": "in_000001",'
        b' "idempotencyKey": "key-00000001"} ]}'
    )
    reply = await sim.post("/erp/v1/journal-entries/bulk", data=raw)
    assert reply.body["results"][0]["status"] == "replayed"
    assert reply.body["results"][0]["id"] == "JE-1"
    assert len(await lookup(sim, "in_000001")) == 1
    audit = (await sim.get("/sim/v1/audit")).body
    assert audit["postings"] == 1


async def test_rejections_record_nothing(sim: Http) -> None:
    await bulk(sim, entry())
    results = await bulk(
        sim,
        entry(amount=5000),  # same key, different body
        entry(
            key="key-00000002",
            external_id="in_000002",
            lines=[{"account": "1200", "debit": 10}, {"account": "4000", "credit": 9}],
        ),
    )
    assert [r["status"] for r in results] == ["rejected", "rejected"]
    assert results[0]["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert results[1]["error"]["code"] == "UNBALANCED"
    assert results[1]["id"] is None
    assert len(await lookup(sim, "in_000001")) == 1
    assert await lookup(sim, "in_000002") == []
    # A rejected key is not remembered: the corrected entry is created.
    (fixed,) = await bulk(sim, entry(key="key-00000002", external_id="in_000002"))
    assert fixed["status"] == "created"
    assert fixed["id"] == "JE-2"


async def test_results_come_back_in_request_order(sim: Http) -> None:
    items = [entry(key=f"key-{n:08d}", external_id=f"in_{n:06d}") for n in range(1, 6)]
    items.insert(2, entry(key="key-bad00000", currency="usd"))
    results = await bulk(sim, *items)
    assert [r["idempotencyKey"] for r in results] == [i["idempotencyKey"] for i in items]
    assert [r["status"] for r in results] == ["created"] * 2 + ["rejected"] + ["created"] * 3
    assert [r["id"] for r in results if r["id"]] == ["JE-1", "JE-2", "JE-3", "JE-4", "JE-5"]


@pytest.mark.parametrize(
    ("raw", "code", "path"),
    [
        (b'{"items": [', "contract.malformed", "$"),
        (b"", "contract.malformed", "$"),
        (b'{"item": []}', "contract.missing_field", "$"),
        (b'{"items": {}}', "contract.invalid_type", "$.items"),
    ],
)
async def test_malformed_bulk_answers_400(sim: Http, raw: bytes, code: str, path: str) -> None:
    reply = await sim.post("/erp/v1/journal-entries/bulk", data=raw)
    assert reply.status == 400
    assert reply.body["code"] == code
    assert reply.body["path"] == path


async def test_400_names_the_offending_field(sim: Http) -> None:
    bad_type = entry()
    bad_type["lines"][0]["debit"] = "1200"
    reply = await sim.post("/erp/v1/journal-entries/bulk", json={"items": [entry(), bad_type]})
    assert reply.status == 400
    assert reply.body["code"] == "contract.invalid_type"
    assert reply.body["path"] == "$.items[1].lines[0].debit"
    assert "$.items[1].lines[0].debit" in reply.body["message"]

    missing = entry()
    del missing["currency"]
    reply = await sim.post("/erp/v1/journal-entries/bulk", json={"items": [missing]})
    assert reply.status == 400
    assert reply.body["code"] == "contract.missing_field"
    assert "`currency`" in reply.body["message"]
    # Nothing of a refused request was committed, not even its valid items.
    assert await lookup(sim, "in_000001") == []


async def test_more_than_max_bulk_items_answers_413() -> None:
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:1/x", erp_max_bulk=3)
    async with running_sim(config) as http:
        items = [entry(key=f"key-{n:08d}", external_id=f"in_{n:06d}") for n in range(4)]
        reply = await http.post("/erp/v1/journal-entries/bulk", json={"items": items})
        assert reply.status == 413
        assert reply.body["code"] == "request.too_many_items"
        assert "at most 3" in reply.body["message"]
        assert (await http.get("/sim/v1/audit")).body["postings"] == 0
        assert len(await bulk(http, *items[:3])) == 3


async def test_lookup_with_an_empty_external_id_answers_400(sim: Http) -> None:
    reply = await sim.get("/erp/v1/journal-entries?externalId=")
    assert reply.status == 400
    assert reply.body["code"] == "request.invalid"
    assert "externalId" in reply.body["message"]


async def test_audit_counts_postings_against_issued(sim: Http) -> None:
    await bulk(sim, entry())  # nothing was issued: the posting is unexpected
    audit = (await sim.get("/sim/v1/audit")).body
    assert (audit["postings"], audit["unexpected"], audit["posted"]) == (1, 1, 0)
    assert audit["amount_posted"] == {"USD": 1200}
    await sim.post("/sim/v1/reset")
    audit = (await sim.get("/sim/v1/audit")).body
    assert audit["postings"] == 0
    (again,) = await bulk(sim, entry())
    assert again["status"] == "created"  # keys were forgotten ...
    assert again["id"] == "JE-2"  # ... but entry ids are never reused


async def test_journal_entries_page_through_the_ledger_in_commit_order(sim: Http) -> None:
    """Without externalId the ERP pages through every posting by seq (the reconciler's read)."""
    items = [{"idempotencyKey": f"key-{i:04d}", "externalId": f"in_{i}",
              "tranDate": "2026-11-27", "currency": "USD", "memo": "",
              "lines": [{"account": "1200", "debit": 100 + i},
                        {"account": "2400", "credit": 100 + i}]} for i in range(25)]
    assert (await sim.post("/erp/v1/journal-entries/bulk", json={"items": items})).status == 200
    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        r = await sim.get(f"/erp/v1/journal-entries?after={after}&limit=10")
        assert r.status == 200
        page = r.body["items"]
        seen += page
        if len(page) < 10:
            break
        after = page[-1]["seq"]
    assert [p["externalId"] for p in seen] == [f"in_{i}" for i in range(25)]
    assert [p["amount"] for p in seen] == [100 + i for i in range(25)]
    bad = await sim.get("/erp/v1/journal-entries?limit=0")
    assert bad.status == 400 and bad.body["path"] == "limit"


async def test_a_single_journal_entry_is_created_replayed_or_rejected(sim: Http) -> None:
    created = await sim.post("/erp/v1/journal-entries", json=entry())
    assert (created.status, created.body["status"], created.body["id"]) == (200, "created",
                                                                              "JE-1")
    again = await sim.post("/erp/v1/journal-entries", json=entry())
    assert (again.status, again.body["status"], again.body["id"]) == (200, "replayed", "JE-1")
    # the bulk endpoint shares the same books: the key is known there too
    assert (await bulk(sim, entry()))[0]["status"] == "replayed"
    unbalanced = entry("key-00000002", "in_000002",
                       lines=[{"account": "1200", "debit": 1201},
                              {"account": "4000", "credit": 1000}])
    refused = await sim.post("/erp/v1/journal-entries", json=unbalanced)
    assert (refused.status, refused.body["status"]) == (200, "rejected")
    assert refused.body["error"]["code"]
    bad = await sim.post("/erp/v1/journal-entries", json={"externalId": "x"})
    assert bad.status == 400 and bad.body["path"]
    assert len(await lookup(sim, "in_000001")) == 1
