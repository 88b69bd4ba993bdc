"""``erpgw demo --faults out-of-order``: amendments delivered out of order, and the report's
``order`` section (flow 6)."""

from __future__ import annotations

import msgspec
import pytest

from gateway.drills import FAULTS, _order_section

from .test_cli import erpgw


def test_the_order_section_reads_the_audit() -> None:
    audit = {"amended": 5, "superseded": 2, "reversals": 2, "order_checked": 5,
             "order_violations": 0, "amount_posted_latest": {"USD": 10},
             "amount_issued": {"USD": 10}}
    assert _order_section(audit) == {"amended": 5, "superseded": 2, "reversals": 2,
                                     "order_checked": 5, "order_violations": 0,
                                     "order_ok": True, "sum_ok": True}
    broken = _order_section({**audit, "order_violations": 1, "amount_issued": {"USD": 11}})
    assert (broken["order_ok"], broken["sum_ok"]) == (False, False)
    assert FAULTS["out-of-order"].bill_run == {"amend_rate": 0.2, "reorder_amendments": 0.5}


@pytest.mark.integration
@pytest.mark.timeout(480)  # hang guards, for a loaded machine
def test_demo_out_of_order_amends_and_reports_order_ok() -> None:
    r = erpgw("demo", "--invoices", "300", "--rate", "300", "--json", "--flows", "invoices",
              "--faults",
              "out-of-order", timeout=450)
    assert r.returncode == 0, r.stderr + r.stdout
    doc = msgspec.json.decode(r.stdout)
    assert doc["ok"] is True
    assert (doc["lost"], doc["duplicates"], doc["posted"]) == (0, 0, 300)
    order = doc["order"]
    assert order["amended"] > 0 and order["order_ok"] is True and order["sum_ok"] is True
    assert order["superseded"] == order["reversals"]
    assert doc["amount_posted"] == doc["amount_issued"]  # reversals net the books out
