"""Reconciliation of amended documents: versions, reversals, credit notes and payments (pure)."""

from __future__ import annotations

import pytest

from actors.reconcile import BillingDoc, ErpPosting, Flag, Repost, reconcile
from actors.reconcile.matching import split_external_id

NOW = 1_000_000.0
OLD = NOW - 3600


def doc(key: str, amount: int = 100, version: int = 1) -> BillingDoc:
    return BillingDoc(key, "USD", amount, OLD, version)


def post(ext: str, amount: int = 100) -> ErpPosting:
    return ErpPosting(ext, f"JE-{ext}", "USD", amount)


@pytest.mark.parametrize(("ext", "expected"), [
    ("in_1", ("in_1", 1, False)),
    ("in_1:v2", ("in_1", 2, False)),
    ("in_1:reversal", ("in_1", 1, True)),
    ("in_1:v3:reversal", ("in_1", 3, True)),
    ("cn_000007", ("cn_000007", 1, False)),
    ("odd:vx", ("odd:vx", 1, False)),
    (":v2", (":v2", 1, False)),
])
def test_split_external_id(ext: str, expected: tuple[str, int, bool]) -> None:
    assert split_external_id(ext) == expected


def kinds(docs: list[BillingDoc], erp: list[ErpPosting]) -> list[tuple[str, str]]:
    return sorted((b.kind, b.key) for b in reconcile(docs, erp, now=NOW).breaks)


@pytest.mark.parametrize(("docs", "erp", "expected"), [
    # v1 reversed, v2 posted: clean; reversal and reversed entry cancel out of the totals
    ([doc("in_1", 120, 2)], [post("in_1"), post("in_1:reversal"), post("in_1:v2", 120)], []),
    # v2 before v1: v1 never posted, v2 posted: clean
    ([doc("in_1", 120, 2)], [post("in_1:v2", 120)], []),
    # only v1 live, billing at v2: the latest version is missing
    ([doc("in_1", 120, 2)], [post("in_1")], [("missing", "in_1")]),
    # v2 posted but v1 never reversed: receivables hold both
    ([doc("in_1", 120, 2)], [post("in_1"), post("in_1:v2", 120)], [("duplicate", "in_1")]),
    # v2 posted with another amount
    ([doc("in_1", 120, 2)], [post("in_1"), post("in_1:reversal"), post("in_1:v2", 110)],
     [("amount", "in_1")]),
    # v1 recorded with another amount than sent, reversed at the amount sent: the difference
    # stays in the GL, though the live posting (v2) is right
    ([doc("in_1", 120, 2)], [post("in_1", 103), post("in_1:reversal"), post("in_1:v2", 120)],
     [("amount", "in_1")]),
    # the reversal itself recorded with another amount
    ([doc("in_1", 120, 2)], [post("in_1"), post("in_1:reversal", 97), post("in_1:v2", 120)],
     [("amount", "in_1")]),
    # a reversal of nothing
    ([doc("in_1")], [post("in_1"), post("in_9:reversal")], [("orphan", "in_9:reversal")]),
    # credit notes and payments are documents like invoices
    ([doc("in_1"), doc("cn_1", 30), doc("py_1", 70)],
     [post("in_1"), post("cn_1", 30), post("py_1", 70)], []),
    ([doc("in_1"), doc("py_1", 70)], [post("in_1")], [("missing", "py_1")]),
])
def test_version_table(docs: list[BillingDoc], erp: list[ErpPosting],
                       expected: list[tuple[str, str]]) -> None:
    assert kinds(docs, erp) == expected


def test_amended_totals_count_live_postings_only() -> None:
    r = reconcile([doc("in_1", 120, 2)],
                  [post("in_1"), post("in_1:reversal"), post("in_1:v2", 120)], now=NOW)
    assert r.totals == {"billing": {"USD": 120}, "erp": {"USD": 120}}
    assert r.matched == r.checked == 1


def test_unreversed_old_version_is_flagged_for_reversal_never_reposted() -> None:
    r = reconcile([doc("in_1", 120, 2)], [post("in_1"), post("in_1:v2", 120)], now=NOW)
    assert r.actions == [Flag("in_1", "duplicate", "reverse JE-in_1")]
    r = reconcile([doc("in_1", 120, 2)], [post("in_1")], now=NOW)
    assert r.actions == [Repost("in_1")]
    assert "version(s) [1] still posted" in r.breaks[0].detail


def test_a_reversal_that_does_not_cancel_names_both_entries_and_is_not_matched() -> None:
    r = reconcile([doc("in_1", 120, 2)],
                  [post("in_1", 103), post("in_1:reversal"), post("in_1:v2", 120)], now=NOW)
    (b,) = r.breaks
    assert (b.billing_amount, b.erp_amount) == (103, 100) and "JE-in_1:reversal" in b.detail
    assert r.actions == [Flag("in_1", "amount", "reverse JE-in_1:reversal and reverse JE-in_1 "
                                                "at 103 USD")]
    assert r.matched == 0 and r.checked == 1
