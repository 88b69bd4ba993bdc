"""``erpgw demo --faults period-close``: the ERP closes the bill run's month mid-run. Under the
default policy (``dead_letter``) every posting the ERP refused is a dead letter, replayed with
``--repost-open`` into the first open period; the report says where each late posting went,
and the run still loses and doubles nothing. (Under ``next_open`` the gateway moves them
itself: ``tests/integration/test_closed_periods.py``.)"""

from __future__ import annotations

import msgspec
import pytest

from .test_cli import erpgw

INVOICES = 120


@pytest.mark.integration
@pytest.mark.timeout(480)  # hang guards, for a loaded machine
def test_a_period_closed_mid_run_dead_letters_the_late_postings_then_reposts_each_once(
) -> None:
    r = erpgw("demo", "--invoices", str(INVOICES), "--rate", "150", "--json", "--flows",
              "invoices", "--faults", "period-close", "--closed-period", "dead_letter",
              "--seed", "17", timeout=450)
    assert r.returncode == 0, r.stderr + r.stdout
    doc = msgspec.json.decode(r.stdout)
    assert doc["ok"] is True
    assert (doc["lost"], doc["duplicates"], doc["posted"]) == (0, 0, INVOICES)
    pc = doc["period_close"]
    assert pc["policy"] == "dead_letter"
    # The close came at 30 % of the postings: some, not all, were late.
    assert 0 < pc["late_postings"] < INVOICES
    # Each late posting was a dead letter, replayed once, and is in the first open period,
    # whose receivable debits are exactly those postings.
    assert pc["dead_lettered"] == pc["replayed"] == pc["late_postings"] and pc["exact"] is True
    assert pc["gl_ok"] is True and pc["into"] > pc["period"]
    assert set(pc["where"].values()) == {pc["into"]}
    assert sum(pc["amount_moved"].values()) > 0
    # Replayed letters are resolved: nothing is left to block the month's close.
    assert doc["close"]["blocking"] == 0, doc["close"]
