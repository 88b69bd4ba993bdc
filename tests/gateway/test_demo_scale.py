"""The scale-out lines of the demo's report and the reasons behind a FAILED verdict (pure)."""

from __future__ import annotations

from typing import Any

from gateway.demo import _drill_failures, _flow_failures, _scale_lines


def test_a_failed_flow_is_named_with_its_figures() -> None:
    report: dict[str, Any] = {"flows": {
        "invoice_to_ledger": {"completed": 9, "expected": 10},  # the bill run's own rows
        "payment_to_cash": {"completed": 86, "expected": 122, "duplicates": 0},
        "subscription_changes": {"completed": 30, "expected": 30, "out_of_sync": 0},
        "usage": {"completed": 10, "expected": 10, "duplicates": 2},
    }}
    assert _flow_failures(report) == ["payment_to_cash 86/122", "usage duplicates=2"]


def test_work_shares_are_shown_per_process() -> None:
    report = {"scale_out": {"cluster_nodes": 3, "gateways": 2, "work_shares": [
        {"gateway": 1, "webhooks": 30, "processed": 300, "up": True},
        {"gateway": 2, "webhooks": 10, "processed": 100, "up": False}]}}
    assert _scale_lines(report) == [
        "  scale-out: 2 gateway process(es) on a 3-node nats cluster",
        "    gateway 1: 30 HTTP requests, 300 messages processed (75 %)",
        "    gateway 2: 10 HTTP requests, 100 messages processed (25 %) (not answering)"]
    assert _scale_lines({}) == []


def test_each_process_shows_its_roles() -> None:
    report = {"scale_out": {"cluster_nodes": 0, "gateways": 2, "roles": [
        "ingress,billing", "sync,revenue,usage,commercial,close"], "work_shares": [
        {"gateway": 1, "webhooks": 30, "processed": 300, "up": True},
        {"gateway": 2, "webhooks": None, "processed": 100, "up": True}]}}
    assert _scale_lines(report)[1:] == [
        "    gateway 1 [ingress,billing]: 30 HTTP requests, 300 messages processed (75 %)",
        "    gateway 2 [sync,revenue,usage,commercial,close]: 100 messages processed (25 %)"]


def test_a_failed_drill_verdict_is_named() -> None:
    report: dict[str, Any] = {
        "altered_amount": {"exact": False, "documents": 13, "found": 12,
                           "missed": ["in_000028"], "unexplained": []},
        "period_close": {"exact": True, "gl_ok": False},
        "order": {"order_ok": False}}
    assert _drill_failures(report) == [
        "altered amounts 12 found of 13 altered document(s) (missed: in_000028; "
        "unexplained: -)", "period close exact=True gl_ok=False",
        "amendments out of order (ORDER_OK false)"]
    assert _drill_failures({"altered_amount": {"exact": True}, "period_close": {
        "closed": None}, "order": {"order_ok": True}}) == []
