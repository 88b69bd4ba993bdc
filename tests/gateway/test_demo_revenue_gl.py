"""``erpgw demo`` with deals reports ``flows.revenue_to_gl``: a close run of the month the
contracts start in, and the ERP's revenue account for it equal to the revenue platform's
recognition per currency, to the minor unit; and ``close.blocking`` 0 for its bill run's
month."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import msgspec
import pytest

from gateway.close_demo import contract_start_period

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]


def test_contract_start_period() -> None:
    assert contract_start_period(datetime(2026, 12, 7, tzinfo=UTC)) == "2027-01"
    assert contract_start_period(datetime(2026, 1, 31, tzinfo=UTC)) == "2026-02"


def test_demo_posts_recognised_revenue_to_the_gl_exactly() -> None:
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--invoices", "20",
                        "--flows", "deals", "--json"], capture_output=True, text=True,
                       timeout=400, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = msgspec.json.decode(r.stdout)
    flow = doc["flows"]["revenue_to_gl"]
    assert flow["expected"] > 0 and flow["completed"] == flow["expected"]
    assert flow["exact"] is True and flow["gl_revenue"] == flow["recognised"]
    # one entry per entity of the contracts' customers: both demo entities, each exact
    by_entity = flow["by_entity"]
    assert set(by_entity["recognised"]) == {"eu", "us"}
    assert by_entity["erp"] == by_entity["recognised"]
    # Once everything drained, nothing blocks the close of the bill run's month (the deals'
    # revenue is recognised in the next one, and its close run is judged there).
    close = doc["close"]
    assert (close["blocking"], close["by_kind"]) == (0, {})
    assert close["period"] < flow["period"]  # the bill run's month, before the contracts'
    assert doc["ok"] is True
