"""``erpgw demo`` with every flow (the default), run once for this file: its JSON report as a
whole (every invoice issued, accepted and posted once, latencies, ``ok``), and
``flows.revenue_to_gl``: a close run of the month the deals' contracts start in, and the ERP's
revenue account for it equal to the revenue platform's recognition per currency, to the minor
unit; and ``close.blocking`` 0 for its bill run's month."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from gateway.close_demo import contract_start_period

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]  # hang guards, loaded machine

INVOICES = 300


@pytest.fixture(scope="module")
def demo_report() -> dict[str, Any]:
    """The report of one ``erpgw demo --json`` run with every flow; each test reads its own
    sections of it (the run is read-only for them)."""
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--invoices", str(INVOICES),
                        "--json"], capture_output=True, text=True, timeout=400, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    doc: dict[str, Any] = msgspec.json.decode(r.stdout)
    return doc


def test_contract_start_period() -> None:
    assert contract_start_period(datetime(2026, 12, 7, tzinfo=UTC)) == "2027-01"
    assert contract_start_period(datetime(2026, 1, 31, tzinfo=UTC)) == "2026-02"


def test_demo_json_report(demo_report: dict[str, Any]) -> None:
    doc = demo_report
    assert doc["issued"] == doc["accepted"] == doc["posted"] == INVOICES
    assert (doc["lost"], doc["duplicates"], doc["dead_lettered"]) == (0, 0, 0)
    assert doc["throughput_eps"] > 0
    assert 0 < doc["latency_ms"]["p50"] <= doc["latency_ms"]["p95"] <= doc["latency_ms"]["p99"]
    assert doc["ok"] is True


def test_demo_posts_recognised_revenue_to_the_gl_exactly(demo_report: dict[str, Any]) -> None:
    doc = demo_report
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
