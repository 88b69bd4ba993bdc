"""`erpgw demo` reports flow 2's two halves and the revenue event accuracy, judged from the
simulator's records; the revenue figures are lower bounds from the platform's totals. The
bill-run-only demo runs once, with ``--fsync default`` (what it reports and writes into the
broker's config is checked here too; flow 2's figures do not depend on it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.demo import DemoOptions, build_report, parse_flows, revenue_figures
from gateway.stack import DrainResult, RevenueResult


def revenue(lines: int, dups: int = 0, unexpected: int = 0) -> RevenueResult:
    return RevenueResult(
        audit={"lines": lines, "duplicate_lines": dups, "unexpected_lines": unexpected,
               "amount": {"USD": 100}, "batches": 1},
        expected_lines=10, expected_amount={"USD": 100},
        lines_by_invoice={"in_1": 4, "in_2": 3, "in_3": 2, "in_4": 1}, drained=True)


@pytest.mark.parametrize(("lines", "dups", "unexpected", "exact", "completed"), [
    (10, 0, 0, 10, 4),  # all exactly once: exact figures
    (9, 0, 0, 9, 3),  # one line missing spoils one invoice
    (11, 1, 0, 9, 3),  # one line sent twice: it is not "exactly once"
    (12, 0, 2, 10, 4),  # two lines of invoices billing never issued
    (3, 3, 0, 0, 0),  # never below zero
])
def test_revenue_figures_are_lower_bounds(lines: int, dups: int, unexpected: int, exact: int,
                                          completed: int) -> None:
    r = revenue_figures(revenue(lines, dups, unexpected))
    assert r["exactly_once"] == exact and r["invoices_completed"] == completed
    assert r["accuracy"] == exact / 10


def test_ok_needs_no_revenue_duplicate() -> None:
    audit = {"issued": 4, "accepted": 4, "posted": 4, "duplicates": 0, "unexpected": 0,
             "unposted": [], "unposted_count": 0, "throughput_eps": 1.0,
             "latency_ms": {"p50": 1.0}}
    drained = DrainResult(audit, [], True, 1.0)
    assert build_report(drained, DemoOptions(invoices=4), 1.0, revenue(10))["ok"] is True
    assert build_report(drained, DemoOptions(invoices=4), 1.0, revenue(11, 1))["ok"] is False
    # without faults a missing line fails the run; under injected faults it is allowed (a
    # killed gateway may hold an upload in doubt) but still counted
    assert build_report(drained, DemoOptions(invoices=4), 1.0, revenue(9))["ok"] is False
    faulted = build_report(drained, DemoOptions(invoices=4, faults=("kill-gateway",)), 1.0,
                           revenue(9))
    assert faulted["ok"] is True and faulted["kpi"]["revenue_event_accuracy"] == 0.9


INVOICES = 200


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One ``erpgw demo --flows invoices --fsync default`` run: its JSON report and its work
    directory (read-only for the tests)."""
    workdir = tmp_path_factory.mktemp("demo")
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--invoices", str(INVOICES),
                        "--json", "--flows", "invoices", "--fsync", "default", "--workdir",
                        str(workdir)], capture_output=True, text=True, timeout=400, check=False)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    doc: dict[str, Any] = msgspec.json.decode(r.stdout)
    return doc, workdir


@pytest.mark.integration
@pytest.mark.timeout(420)  # hang guards, for a loaded machine
def test_demo_reports_both_halves_of_flow_2(demo_run: tuple[dict[str, Any], Path]) -> None:
    doc, _ = demo_run
    assert doc["ok"] is True and doc["posted"] == 200  # every existing key is still there
    assert doc["flows"]["invoice_to_ledger"]["completed"] == 200
    assert doc["flows"]["invoice_to_revenue"]["completed"] == 200
    assert doc["kpi"]["revenue_event_accuracy"] == 1.0
    rev = doc["revenue"]
    assert rev["duplicate_lines"] == 0 and rev["lines"] == rev["expected_lines"] >= 200
    assert rev["amount"] == rev["expected_amount"]


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_demo_fsync_default_runs_the_broker_without_fsync_per_write(
        demo_run: tuple[dict[str, Any], Path]) -> None:
    doc, workdir = demo_run
    assert doc["fsync"] == "default" and doc["ok"] is True
    assert (doc["lost"], doc["duplicates"], doc["posted"]) == (0, 0, INVOICES)
    conf = (workdir / "nats" / "nats-server.conf").read_text()
    assert "sync_interval: 2m" in conf and "sync_interval: always" not in conf


@pytest.mark.parametrize(("text", "expected"), [
    ("all", {"money", "usage", "deals", "changes"}),
    ("invoices", set()),
    ("usage, money", {"usage", "money"}),
    ("invoices,deals,changes", {"deals", "changes"}),
])
def test_parse_flows(text: str, expected: set[str]) -> None:
    assert parse_flows(text) == expected


def test_parse_flows_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="teleport"):
        parse_flows("usage,teleport")
    with pytest.raises(ValueError, match="add 'deals'"):
        parse_flows("changes")


def test_ok_needs_the_billed_amounts_when_they_were_read() -> None:
    audit = {"issued": 4, "accepted": 4, "posted": 4, "duplicates": 0, "unexpected": 0,
             "unposted": [], "unposted_count": 0, "throughput_eps": 1.0,
             "latency_ms": {"p50": 1.0}}
    drained = DrainResult(audit, [], True, 1.0)
    opts = DemoOptions(invoices=4)
    for billed, ok in (({"USD": 100, "EUR": 0}, True), ({"USD": 90}, False), (None, True)):
        rev = revenue(10)
        rev = RevenueResult(rev.audit, rev.expected_lines, rev.expected_amount,
                            rev.lines_by_invoice, rev.drained, billed_amount=billed)
        report = build_report(drained, opts, 1.0, rev)
        assert report["ok"] is ok
        assert report["revenue"]["amount_matches_billed"] is (None if billed is None else ok)
