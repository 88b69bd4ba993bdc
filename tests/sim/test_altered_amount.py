"""The ERP "altered amount" fault: a posting recorded with another amount than sent (a
platform bug or a manual edit), seeded per external id, visible in the audit."""

from __future__ import annotations

import logging

import pytest

from sim import parse_scenario
from sim._erp import ErpLedger, altered_delta, alters_item

from .conftest import Http
from .test_erp import bulk, entry, lookup, struct


def test_alteration_is_seeded_per_external_id() -> None:
    ids = [f"in_{n:06d}" for n in range(2000)]
    picked = [i for i in ids if alters_item(11, i, 0.05)]
    assert picked == [i for i in ids if alters_item(11, i, 0.05)]
    assert 60 <= len(picked) <= 140
    assert picked != [i for i in ids if alters_item(12, i, 0.05)]
    assert not any(alters_item(11, i, 0.0) for i in ids)


@pytest.mark.parametrize("amount", [1, 2, 99, 1200, 10**9])
def test_delta_is_never_zero_never_leaves_a_non_positive_amount_and_stays_within_10pct(
        amount: int) -> None:
    for n in range(300):
        delta = altered_delta(7, f"in_{n:06d}", amount)
        assert delta != 0
        assert amount + delta > 0
        assert abs(delta) <= max(1, amount // 10)


def test_ledger_records_the_altered_amount_and_keeps_the_gl_balanced() -> None:
    ledger = ErpLedger()
    results = ledger.post([struct(), struct(key="k2", external_id="in_000002")], 1.0,
                          alter={0: -50})
    assert [r.status for r in results] == ["created", "created"]
    assert [p.amount for p in ledger.postings] == [1150, 1200]
    (alteration,) = ledger.alterations
    assert (alteration.external_id, alteration.entry_id, alteration.sent,
            alteration.recorded) == ("in_000001", "JE-1", 1200, 1150)
    balances = ledger.balances("2025-11").balances
    assert sum(b.debit for b in balances) == sum(b.credit for b in balances) == 2350
    # a replay of the altered entry is a replay: nothing new, the record stays as it is
    (again,) = ledger.post([struct()], 2.0, alter={0: 10})
    assert again.status == "replayed"
    assert len(ledger.alterations) == 1 and ledger.postings[0].amount == 1150


async def test_altered_postings_show_in_the_audit(sim: Http) -> None:
    seed = 11  # the sim fixture's seed
    ids = [f"in_{n:06d}" for n in range(1, 61)]
    expected = sorted(i for i in ids if alters_item(seed, i, 0.1))
    assert expected
    await sim.put("/sim/v1/faults", json={"erp": {"alter_amount_rate": 0.1}})
    results = await bulk(sim, *[entry(key=f"k-{i}", external_id=i) for i in ids])
    assert {r["status"] for r in results} == {"created"}  # the sender cannot tell
    audit = (await sim.get("/sim/v1/audit")).body
    assert audit["altered_ids"] == expected
    assert audit["altered_count"] == len(expected)
    recorded = {i: (await lookup(sim, i))[0]["amount"] for i in expected}
    assert all(amount != 1200 for amount in recorded.values())
    assert audit["amount_altered"] == {"USD": sum(recorded.values()) - 1200 * len(expected)}
    # SUM_OK fails by exactly the altered amounts
    assert audit["amount_posted"]["USD"] - audit["amount_altered"]["USD"] == 1200 * len(ids)
    assert audit["faults"]["http"]["erp/journal-entries.bulk"]["amount_altered"] == len(expected)


def test_a_scenario_window_schedules_it_and_the_schedule_shows_it() -> None:
    scenario = parse_scenario("""
        [[http]]
        service = "erp"
        endpoint = "journal-entries.bulk"
        at_s = 0
        for_s = 60
        alter_amount_rate = 1.0
    """)
    assert "alter_amount_rate=1.0" in "\n".join(scenario.describe())


def test_sim_audit_cli_reports_altered_amounts_as_a_problem() -> None:
    from gateway.commands.sim import format_audit, problems

    audit = {"issued": 2, "accepted": 2, "posted": 2, "unposted_count": 0, "unposted": [],
             "duplicates": 0, "unexpected": 0, "amount_issued": {"USD": 2400},
             "amount_posted": {"USD": 2450}, "latency_ms": {"p50": 1.0, "p95": 1.0, "p99": 1.0,
                                                           "max": 1.0},
             "throughput_eps": 1.0, "altered_ids": ["in_000002"], "altered_count": 1,
             "amount_altered": {"USD": 50}}
    assert problems(audit) == ["1 posting(s) recorded with another amount than sent (SUM_OK "
                               "fails; for the reconciler)"]
    text = format_audit(audit, "http://sim")
    assert "amounts altered by the ERP    1  (in_000002; net USD 50)" in text
    assert "PROBLEMS" in text


async def test_the_runtime_setting_is_logged_as_part_of_the_fault_schedule(
        sim: Http, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sim")
    await sim.put("/sim/v1/faults", json={"erp": {"alter_amount_rate": 0.1}})
    assert ("runtime faults: erp [alter_amount_rate=0.1], billing [healthy], revenue [healthy], "
            "cpq [healthy]") in caplog.text
