"""Flow 5's pure core: versions in order, phases evolved by each change, and the ERP order and
revenue contract restated from them; checked against the simulator's own book (which decides
what the platforms must end up saying) so the two cannot drift apart."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

import pytest

from actors.commercial import lifecycle
from actors.commercial.lifecycle import LifecycleState, Phase, PhaseItem
from actors.platforms.billing.subscriptions import subscription_change
from contracts import (
    ContractError,
    SubscriptionAmended,
    SubscriptionCancelled,
    SubscriptionItem,
    SubscriptionRenewed,
)
from contracts.platforms.billing import (
    SubscriptionEvent,
    SubscriptionEventData,
    SubscriptionIn,
    SubscriptionItemIn,
)
from sim._sub_changes import _event, plan_changes
from sim._subscriptions import SubscriptionBook, subscription_value

AT = datetime(2025, 11, 27, tzinfo=UTC)


def _state() -> LifecycleState:
    return LifecycleState(deal_id="dl_1", customer_id="cus_1", currency="USD", order_id="SO-1",
                          phases=(Phase(date(2026, 1, 1), date(2026, 12, 31),
                                        (PhaseItem("prod_seats", 10, 2_000),)),))


def _items(qty: int) -> tuple[SubscriptionItem, ...]:
    return (SubscriptionItem(item_id="si", product_id="prod_seats", price_id="p", quantity=qty,
                             unit_amount=2_000),)


@pytest.mark.parametrize(("applied", "incoming", "verdict"), [
    (1, 1, "stale"), (3, 2, "stale"), (1, 2, "apply"), (4, 5, "apply"), (1, 3, "early"),
    (2, 9, "early"),
])
def test_versions_are_applied_strictly_in_order(applied: int, incoming: int,
                                                 verdict: str) -> None:
    assert lifecycle.decide(applied, incoming) == verdict


def test_amend_renew_cancel_restate_the_whole_contract() -> None:
    s1 = _state()
    assert lifecycle.value(s1) == 10 * 2_000 * 12
    s2 = lifecycle.evolve(s1, SubscriptionAmended(
        subscription_id="sub_1", amendment_id="a", currency="USD", items=_items(15),
        effective_date=date(2026, 4, 1), amended_at=AT))
    assert [(p.start, p.end) for p in s2.phases] == [
        (date(2026, 1, 1), date(2026, 3, 31)), (date(2026, 4, 1), date(2026, 12, 31))]
    assert lifecycle.value(s2) == 10 * 2_000 * 3 + 15 * 2_000 * 9
    s3 = lifecycle.evolve(s2, SubscriptionRenewed(
        subscription_id="sub_1", currency="USD", items=_items(15),
        term_start=date(2027, 1, 1), term_end=date(2027, 12, 31), renewed_at=AT))
    s4 = lifecycle.evolve(s3, SubscriptionCancelled(
        subscription_id="sub_1", effective_date=date(2027, 3, 1), cancelled_at=AT))
    assert s4.cancelled and s4.phases[-1].end == date(2027, 2, 28)
    assert lifecycle.value(s4) == 10 * 2_000 * 3 + 15 * 2_000 * 9 + 15 * 2_000 * 2
    order = lifecycle.order_revision(s4, 4)
    assert order.version == 4
    assert sum(ln.quantity * ln.unit_amount for ln in order.lines) == lifecycle.value(s4)
    contract = lifecycle.contract_request(s4, 4, "sub_1")
    assert sum(ln.amount for ln in contract.lines) == lifecycle.value(s4)
    assert [ln.months for ln in contract.lines] == [3, 9, 2]
    with pytest.raises(ContractError) as err:
        lifecycle.evolve(s4, SubscriptionRenewed(
            subscription_id="sub_1", currency="USD", items=_items(1),
            term_start=date(2027, 3, 1), term_end=date(2028, 2, 29), renewed_at=AT))
    assert err.value.code == "subscription.bad_change"
    with pytest.raises(ContractError):
        lifecycle.evolve(s1, SubscriptionAmended(
            subscription_id="sub_1", amendment_id="a", currency="USD", items=_items(1),
            effective_date=date(2026, 4, 15), amended_at=AT))


def test_the_gateway_and_the_simulator_agree_on_every_changed_value() -> None:
    """Replay the simulator's seeded changes through the webhook mapping and ``evolve``: the
    gateway's value at every version is the simulator's."""
    for n in range(1, 60):
        rng = random.Random(n)
        book = SubscriptionBook()
        sub, _ = book.create("k", SubscriptionIn(
            customer="cus_1", currency="usd",
            items=[SubscriptionItemIn(product="prod_seats", quantity=rng.randint(1, 20),
                                      unit_amount=2_000)],
            start_date=date(2026, 1, 1), term_months=rng.choice((12, 24))), 1.0)
        state = LifecycleState(
            deal_id="dl_1", customer_id="cus_1", currency="USD", order_id="SO-1",
            phases=(Phase(sub.start_date, sub.end_date,
                          tuple(PhaseItem(i.product, i.quantity, i.unit_amount)
                                for i in sub.items)),))
        for version in plan_changes(n, book, sub.id, 2.0):
            evt = _event(version)
            body = SubscriptionEvent(id=evt.id, type=evt.type, created=evt.created,
                                     data=SubscriptionEventData(object=version))
            payload, key, _, _ = subscription_change(body)
            assert key.version == version.version
            state = lifecycle.evolve(state, payload)
            assert lifecycle.value(state) == subscription_value(version)
            assert state.cancelled == (version.status == "canceled")
