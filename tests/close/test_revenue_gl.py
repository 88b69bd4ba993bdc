"""Revenue to the GL, the pure planner: one entry per entity, period and currency, balanced to
the minor unit, keyed by (entity, period, currency, run); a re-run plans nothing, a changed
recognition plans the next run (the poster reverses the last one)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.close import (
    Latest,
    aggregate_id,
    group_by_entity,
    period_end,
    plan_close,
    plan_close_entities,
    revenue_entry,
)
from actors.erp.ordering import aggregate_of
from actors.lifecycle.fx import EntityMap
from actors.router.invoices import AccountMap
from contracts.platforms.revenue import RecognitionItem

ACCOUNTS = AccountMap(revenue_by_product={"prod_support": "4100"})


def item(contract: str, amount: int, *, product: str = "prod_seat", currency: str = "USD",
         version: int = 1, customer: str = "") -> RecognitionItem:
    return RecognitionItem(contract=contract, version=version, currency=currency,
                           product=product, amount=amount, customer=customer)


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


ENTITIES = EntityMap(default="us", functional_currency={"eu": "EUR", "us": "USD"},
                     customers={"cus_00*": "eu", "cus_10001": "eu"})


def test_recognition_is_grouped_by_the_entity_of_each_contracts_customer() -> None:
    items = [item("c1", 100, customer="cus_00007"), item("c2", 200, customer="cus_01234"),
             item("c3", 300, customer="cus_10001"), item("c4", 400)]
    groups = group_by_entity(items, ENTITIES)
    assert {e: [i.contract for i in g] for e, g in groups.items()} == {
        "eu": ["c1", "c3"], "us": ["c2", "c4"]}  # no customer: the default entity


def test_one_entry_per_entity_period_and_currency_naming_its_entity() -> None:
    items = [item("c1", 100, customer="cus_00007"), item("c2", 200, customer="cus_01234"),
             item("c3", 300, customer="cus_00008", currency="EUR"),
             item("c4", 50, customer="cus_00009", product="prod_support")]
    plan = plan_close_entities("2026-01", items, ACCOUNTS, {}, ENTITIES)
    assert [(p.entity, p.currency, p.run, p.action, p.amount) for p in plan] == [
        ("eu", "EUR", 1, "posted", 300), ("eu", "USD", 1, "posted", 150),
        ("us", "USD", 1, "posted", 200)]
    for p in plan:
        assert p.entry is not None and p.key is not None
        assert p.entry.entity == p.entity  # sent to the ERP as the subsidiary
        assert p.entry.external_id == aggregate_id(p.entity, "2026-01", p.currency)
        assert p.key.object_id == aggregate_id(p.entity, "2026-01", p.currency)
    keys = {p.entry.idempotency_key for p in plan if p.entry is not None}
    assert len(keys) == 3  # the entity is part of the key: eu USD and us USD differ
    # plan_close (one entity, entities not configured) names no entity, as before
    (legacy,) = plan_close("us", "2026-01", items[1:2], ACCOUNTS, {})
    assert legacy.entry is not None and legacy.entry.entity is None


def test_entity_runs_are_judged_against_their_own_entitys_latest_run() -> None:
    items = [item("c1", 100, customer="cus_00007"), item("c2", 200, customer="cus_01234")]
    first = plan_close_entities("2026-01", items, ACCOUNTS, {}, ENTITIES)
    latest = {(p.entity, p.currency): Latest(p.run, p.entry) for p in first}
    changed = [item("c1", 100, customer="cus_00007"), item("c2", 250, customer="cus_01234",
                                                          version=2)]
    plan = plan_close_entities("2026-01", changed, ACCOUNTS, latest, ENTITIES)
    assert [(p.entity, p.run, p.action) for p in plan] == [
        ("eu", 1, "unchanged"), ("us", 2, "true_up")]


@given(st.lists(st.tuples(st.sampled_from(["cus_00001", "cus_05000", "cus_10001", ""]),
                          st.sampled_from(["USD", "EUR", "JPY"]),
                          st.integers(min_value=0, max_value=10**12)), max_size=20))
def test_per_entity_and_currency_the_entries_carry_the_recognition_exactly(
        rows: list[tuple[str, str, int]]) -> None:
    items = [item(f"c{i}", a, customer=c, currency=cur) for i, (c, cur, a) in enumerate(rows)]
    want: dict[tuple[str, str], int] = {}
    for c, cur, a in rows:
        entity = ENTITIES.entity_for(c) if c else ENTITIES.default
        if a:
            want[(entity, cur)] = want.get((entity, cur), 0) + a
    plan = plan_close_entities("2026-01", items, ACCOUNTS, {}, ENTITIES)
    got = {}
    for p in plan:
        assert p.entry is not None and p.entry.entity == p.entity
        got[(p.entity, p.currency)] = sum(ln.credit for ln in p.entry.lines
                                          if ln.account != ACCOUNTS.deferred_revenue)
    assert got == want


def test_the_demo_judges_the_close_entries_per_entity_and_currency() -> None:
    import msgspec

    from contracts.platforms.revenue import RecognitionDetail
    from gateway.close_demo import entity_revenue, recognised_by_entity
    from gateway.demo import DEMO_ENTITIES, DEMO_ENTITY_MAP
    assert msgspec.convert(msgspec.toml.decode(DEMO_ENTITIES.encode())["entities"],
                           EntityMap) == DEMO_ENTITY_MAP
    detail = RecognitionDetail(period="2026-01", items=[
        item("c1", 100, customer="cus_00007"), item("c2", 200, customer="cus_01234"),
        item("c3", 0, customer="cus_01235", currency="EUR")])
    assert recognised_by_entity(detail, DEMO_ENTITY_MAP) == {"eu": {"USD": 100},
                                                             "us": {"USD": 200}}
    entries = [
        {"externalId": "recognition:eu:2026-01:USD", "subsidiary": "eu", "currency": "USD",
         "amount": 90},
        {"externalId": "recognition:eu:2026-01:USD:reversal", "subsidiary": "eu",
         "currency": "USD", "amount": 90},
        {"externalId": "recognition:eu:2026-01:USD:v2", "subsidiary": "eu", "currency": "USD",
         "amount": 100},
        {"externalId": "recognition:us:2026-01:USD", "subsidiary": "us", "currency": "USD",
         "amount": 200},
        {"externalId": "recognition:us:2026-02:USD", "subsidiary": "us", "currency": "USD",
         "amount": 5},  # another period
        {"externalId": "in_1", "subsidiary": "us", "currency": "USD", "amount": 7}]
    assert entity_revenue(entries, "2026-01") == {"eu": {"USD": 100}, "us": {"USD": 200}}
    assert entity_revenue(entries[:1], "2026-01") != recognised_by_entity(detail,
                                                                         DEMO_ENTITY_MAP)
