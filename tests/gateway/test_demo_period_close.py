"""``erpgw demo --faults period-close``: the ERP closes the bill run's month mid-run. Under
``dead_letter`` (the default) every posting the ERP refused is a dead letter, replayed with
``--repost-open`` into the first open period; under ``next_open`` the gateway posts each there
itself. Either way the report says where each late posting went, the first open period's GL
holds exactly those postings, and the run loses and doubles nothing."""

from __future__ import annotations

import msgspec
import pytest

from .test_cli import erpgw

INVOICES = 120
# Issued over 4 s: the ERP closes the month at 30 % posted, while most are still to come (a
# bill run issued at once can be posted in one bulk before the drill sees 30 %).


@pytest.mark.integration
@pytest.mark.timeout(480)  # hang guards, for a loaded machine
# next_open moves late postings inside the gateway, with no replay: the whole stack covers it
# in tests/integration/test_closed_periods.py (the ERP closed before the run), so the demo
# drill runs the policy with more steps (dead letters, then the operator's replay).
@pytest.mark.parametrize("policy", ["dead_letter"])
def test_a_period_closed_mid_run_moves_each_late_posting_once(policy: str) -> None:
    r = erpgw("demo", "--invoices", str(INVOICES), "--rate", "30", "--json", "--flows",
              "invoices", "--faults", "period-close", "--closed-period", policy,
              "--seed", "17", timeout=450)
    assert r.returncode == 0, r.stderr + r.stdout
    doc = msgspec.json.decode(r.stdout)
    assert doc["ok"] is True
    assert (doc["lost"], doc["duplicates"], doc["posted"]) == (0, 0, INVOICES)
    pc = doc["period_close"]
    assert pc["policy"] == policy
    # The close came at 30 % of the postings: some, not all, were late.
    assert 0 < pc["late_postings"] < INVOICES
    # dead_letter: each late posting was a dead letter, replayed once; next_open: none was.
    # Either way each is in the first open period, whose receivable debits are exactly those.
    moved = pc["late_postings"] if policy == "dead_letter" else 0
    assert pc["dead_lettered"] == pc["replayed"] == moved and pc["exact"] is True
    assert pc["gl_ok"] is True and pc["into"] > pc["period"]
    assert set(pc["where"].values()) == {pc["into"]}
    assert sum(pc["amount_moved"].values()) > 0
    # Replayed letters are resolved: nothing is left to block the month's close.
    assert doc["close"]["blocking"] == 0, doc["close"]
