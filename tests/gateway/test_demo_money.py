"""`erpgw demo`'s credit memo and flow 3 figures, from the simulator's audit (pure)."""

from __future__ import annotations

from typing import Any

from gateway.money_demo import expected_followups, money_figures, money_ok


def audit(*, cm_dups: int = 0, payables: int = 7, without: int = 0) -> dict[str, Any]:
    docs = {"issued": 5, "posted": 5, "postings": 5 + cm_dups, "duplicates": cm_dups,
            "unexpected": 0, "unposted": 0, "amount": {}}
    return {"credit_memo_postings": docs,
            "payment_postings": {**docs, "duplicates": 0, "postings": 5},
            "settlements": {"recorded": 7, "distinct": 7, "duplicates": 0,
                            "payables": payables, "payable_duplicates": payables - 7,
                            "without_payable": without, "payable_without_settlement": 0,
                            "expected": 7, "missing": 0, "amount": {},
                            "cycle_ms": {"p50": 10.0, "p99": 20.0, "max": 25.0}}}


def test_money_figures_report_the_flows_and_the_cycle_time() -> None:
    figures = money_figures(audit(), True)
    assert figures["flows"]["payment_to_settlement"]["completed"] == 7
    assert figures["flows"]["credit_memo_to_ledger"] == {
        "completed": 5, "expected": 5, "duplicates": 0, "unexpected": 0}
    assert figures["kpi"] == {"partner_settlement_cycle_ms": {"p50": 10.0, "p99": 20.0}}
    assert money_ok(figures)


def test_anything_doubled_or_missing_fails_the_money_flows() -> None:
    assert not money_ok(money_figures(audit(cm_dups=1), True))
    assert not money_ok(money_figures(audit(payables=8), True))
    assert not money_ok(money_figures(audit(payables=6, without=1), True))
    assert not money_ok(money_figures(audit(), False))


def test_expected_followups_match_the_rates() -> None:
    notes, payments = expected_followups(7, 200, 1, 0.1, 0.5)
    assert 5 < notes < 40 and 70 < payments < 130
    assert expected_followups(7, 200, 1, 0.0, 0.0) == (0, 0)
