"""Revenue to the GL, the pure planner: one entry per entity, period and currency, balanced to
the minor unit, keyed by (entity, period, currency, run); a re-run plans nothing, a changed
recognition plans the next run (the poster reverses the last one)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.close import Latest, aggregate_id, period_end, plan_close, revenue_entry
from actors.erp.ordering import aggregate_of
from actors.router.invoices import AccountMap
from contracts.platforms.revenue import RecognitionItem

ACCOUNTS = AccountMap(revenue_by_product={"prod_support": "4100"})


def item(contract: str, amount: int, *, product: str = "prod_seat", currency: str = "USD",
         version: int = 1) -> RecognitionItem:
    return RecognitionItem(contract=contract, version=version, currency=currency,
                           product=product, amount=amount)


ITEMS = [item("c1", 1000), item("c2", 250), item("c2", 300, product="prod_support"),
         item("c3", 700, currency="EUR")]


@pytest.mark.parametrize(("period", "expected"), [
    ("2026-01", date(2026, 1, 31)), ("2024-02", date(2024, 2, 29)),
    ("2025-02", date(2025, 2, 28)), ("2026-12", date(2026, 12, 31))])
def test_period_end(period: str, expected: date) -> None:
    assert period_end(period) == expected


def test_first_run_posts_one_balanced_entry_per_currency() -> None:
    plan = plan_close("acme", "2026-01", ITEMS, ACCOUNTS, {})
    assert [(p.currency, p.run, p.action, p.amount) for p in plan] == [
        ("EUR", 1, "posted", 700), ("USD", 1, "posted", 1550)]
    usd = plan[1].entry
    assert usd is not None and plan[1].key is not None
    assert [(ln.account, ln.debit, ln.credit) for ln in usd.lines] == [
        ("4000", 0, 1250), ("4100", 0, 300), ("2400", 1550, 0)]
    assert usd.posting_date == date(2026, 1, 31)
    assert usd.external_id == aggregate_id("acme", "2026-01", "USD")
    # the poster orders it as a versioned document
    assert aggregate_of(plan[1].key, usd) == ("revenue", "recognition:acme:2026-01:USD")
    assert "c1 v1 prod_seat" in usd.lines[0].memo


def test_keys_depend_on_entity_period_currency_and_run_only() -> None:
    a = revenue_entry("acme", "2026-01", "USD", 1, [item("c1", 1000)], ACCOUNTS)
    b = revenue_entry("acme", "2026-01", "USD", 1, [item("c1", 999)], ACCOUNTS)
    assert a is not None and b is not None
    assert a.idempotency_key == b.idempotency_key
    others = [revenue_entry(*args, [item("c1", 1000)], ACCOUNTS)  # type: ignore[misc]
              for args in (("other", "2026-01", "USD", 1), ("acme", "2026-02", "USD", 1),
                           ("acme", "2026-01", "USD", 2))]
    assert len({a.idempotency_key, *(o.idempotency_key for o in others if o)}) == 4


def test_a_rerun_with_the_same_recognition_plans_nothing() -> None:
    first = plan_close("acme", "2026-01", ITEMS, ACCOUNTS, {})
    latest = {p.currency: Latest(p.run, p.entry) for p in first}
    again = plan_close("acme", "2026-01", ITEMS, ACCOUNTS, latest)
    assert [(p.currency, p.run, p.action, p.entry) for p in again] == [
        ("EUR", 1, "unchanged", None), ("USD", 1, "unchanged", None)]


def test_a_changed_recognition_plans_the_next_run() -> None:
    first = plan_close("acme", "2026-01", ITEMS, ACCOUNTS, {})
    latest = {p.currency: Latest(p.run, p.entry) for p in first}
    changed = [item("c1", 1200, version=2), *ITEMS[1:]]
    plan = plan_close("acme", "2026-01", changed, ACCOUNTS, latest)
    assert [(p.currency, p.run, p.action, p.amount) for p in plan] == [
        ("EUR", 1, "unchanged", 700), ("USD", 2, "true_up", 1750)]
    usd = plan[1].entry
    assert usd is not None and usd.external_id == "recognition:acme:2026-01:USD:v2"
    # only a contract version in a memo changed: the amounts are the same, nothing to post
    same_amounts = [item("c1", 1000, version=3), *ITEMS[1:]]
    assert plan_close("acme", "2026-01", same_amounts, ACCOUNTS, latest)[1].action == "unchanged"


def test_an_unknown_latest_entry_plans_the_next_run() -> None:
    plan = plan_close("acme", "2026-01", ITEMS[:1], ACCOUNTS, {"USD": Latest(3, None)})
    assert [(p.run, p.action) for p in plan] == [(4, "true_up")]


def test_nothing_recognised_posts_nothing() -> None:
    assert plan_close("acme", "2026-01", [item("c1", 0)], ACCOUNTS, {}) == []


@given(st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3"]),
                          st.sampled_from(["prod_seat", "prod_support", "prod_x"]),
                          st.integers(min_value=0, max_value=10**12)), max_size=20))
def test_every_entry_balances_and_carries_the_recognition_exactly(
        rows: list[tuple[str, str, int]]) -> None:
    items = [item(c, a, product=p) for c, p, a in rows]
    plan = plan_close("acme", "2026-01", items, ACCOUNTS, {})
    total = sum(a for _, _, a in rows)
    if total == 0:
        assert plan == []
        return
    (only,) = plan
    assert only.entry is not None
    assert sum(ln.debit for ln in only.entry.lines) == sum(
        ln.credit for ln in only.entry.lines) == total
