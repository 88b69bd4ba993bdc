"""Flow 1's pure parts: the saga planner as a table, the deal plan's arithmetic, the request
bodies and canonical events it builds, and the partner webhook mapping (no I/O)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import msgspec
import pytest

from actors.commercial import SagaPlatforms, saga
from actors.commercial.saga import Complete, Do, SagaState, Settled, Undo
from actors.infra.http import HttpResponse, PlatformRejected, PlatformUnavailable
from actors.platforms import PlatformGuard
from actors.platforms.partner import PARTNER_ROUTES
from actors.resilience import BreakerConfig, CircuitBreaker
from contracts import ContractError, DealApproved, DealRegistered, DealRejected
from contracts.platforms.billing import BillingSubscription, SubscriptionItemRecord
from contracts.platforms.cpq import PricedLine, PriceQuote, PriceRequest
from contracts.platforms.partner import DealEvent, DealEventData, PartnerDeal
from contracts.platforms.revenue import RevenueContract
from sim._cpq import price
from sim._deals import decide_deal, generate_deal
from sim._revenue_contracts import ContractBook

T0 = 1_764_230_400  # 2025-11-27


def _deal(index: int = 3, discount_seed: int = 5) -> PartnerDeal:
    deal = decide_deal(generate_deal(discount_seed, index, T0), discount_seed, index, 0.0, T0)
    assert deal.status == "approved"
    return deal


def _approval(deal: PartnerDeal) -> DealApproved:
    return DealApproved(deal_id=deal.id, partner_id=deal.partner,
                        approved_at=datetime.fromtimestamp(T0, UTC), approver="desk",
                        discount_bp=deal.discount_bp,
                        valid_from=date.fromisoformat(deal.valid_from or ""),
                        valid_until=date.fromisoformat(deal.valid_until or ""))


def _plan(deal: PartnerDeal) -> saga.DealPlan:
    quote = price(msgspec.convert(msgspec.to_builtins(saga.price_request(deal)), PriceRequest))
    return saga.plan_deal(_approval(deal), deal, quote)


def test_the_planner_walks_the_steps_then_completes() -> None:
    state = SagaState(deal_id="dl_1")
    seen = []
    while not isinstance(action := saga.next_action(state), Complete):
        assert isinstance(action, Do)
        seen.append(action.step)
        state = saga.after_step(state, action.step, f"id-{action.step}")
    assert seen == list(saga.STEPS) and action == Complete(compensated=False)
    state = saga.finish(state)
    assert state.status == "completed" and saga.next_action(state) == Settled("completed")


@pytest.mark.parametrize(("refused", "undo"), [
    ("enrich", []),
    ("subscription", []),
    ("sales_order", ["subscription"]),
    ("revenue_contract", ["sales_order", "subscription"]),
])
def test_a_refused_step_reverses_the_done_ones_newest_first(refused: str,
                                                            undo: list[str]) -> None:
    state = SagaState(deal_id="dl_1")
    for step in saga.STEPS[:saga.STEPS.index(refused)]:
        state = saga.after_step(state, step, f"id-{step}")
    assert saga.next_action(state) == Do(refused)  # type: ignore[arg-type]
    state = saga.after_rejection(state, refused, "erp.credit_hold", "no credit")
    reversed_ = []
    while isinstance(action := saga.next_action(state), Undo):
        reversed_.append(action.step)
        state = saga.after_undo(state, action.step, "canceled")
    assert reversed_ == undo and action == Complete(compensated=True)
    state = saga.finish(state)
    assert state.status == "compensated" and state.failed_step == refused
    assert state.failure_code == "erp.credit_hold"
    assert saga.next_action(state) == Settled("compensated")
    with pytest.raises(ValueError, match=r"saga\.transition"):
        saga.after_step(state, "enrich", "x")


def test_a_resumed_saga_goes_on_from_its_stored_state() -> None:
    codec = msgspec.json.Decoder(SagaState)
    state = saga.after_step(SagaState(deal_id="dl_1"), "enrich", "x",
                            _plan(_deal()))
    state = saga.after_step(state, "subscription", "sub_1")
    again = codec.decode(msgspec.json.encode(state))
    assert again == state and saga.next_action(again) == Do("sales_order")
    assert saga.step_key("dl_1", "subscription") == saga.step_key("dl_1", "subscription")
    assert len({saga.step_key("dl_1", s) for s in saga.STEPS} |
               {saga.step_key("dl_2", s) for s in saga.STEPS}) == 8


def test_the_plan_splits_money_exactly() -> None:
    for index in range(1, 40):
        deal = _deal(index)
        plan = _plan(deal)
        assert plan.total == sum(ln.term_amount for ln in plan.lines)
        assert plan.monthly_total * plan.term_months == plan.total
        for ln in plan.lines:
            # (the per-unit rounding itself: the literal table below)
            assert ln.list_unit_amount - ln.discount_unit_amount == ln.unit_amount
        sub = saga.subscription_request(plan)
        assert sum(i.quantity * i.unit_amount for i in sub.items) * plan.term_months == \
            plan.total
        order = saga.sales_order_request(plan, "sub_1")
        assert sum(ln.quantity * ln.unit_amount for ln in order.lines) == plan.total
        contract = saga.revenue_contract_request(plan, "sub_1")
        assert sum(ln.amount for ln in contract.lines) == plan.total
        booked = saga.order_booked(plan)  # the canonical invariants hold
        assert booked.total == plan.total and booked.deal_id == deal.id


def test_a_deal_that_is_not_the_approved_one_is_refused() -> None:
    deal = _deal()
    quote = price(saga.price_request(deal))
    with pytest.raises(ContractError) as err:
        saga.plan_deal(_approval(deal), msgspec.structs.replace(deal, status="rejected"),
                       quote)
    assert err.value.code == "saga.deal_mismatch"
    other = msgspec.structs.replace(quote, lines=quote.lines[:0])
    with pytest.raises(ContractError):
        saga.plan_deal(_approval(deal), deal, other)


def test_events_from_the_platforms_answers_are_canonical() -> None:
    plan = _plan(_deal())
    sub = BillingSubscription(
        id="sub_000001", customer=plan.customer_id, currency=plan.currency.lower(),
        items=[SubscriptionItemRecord(id=f"si_{n}", product=ln.product, quantity=ln.quantity,
                                      unit_amount=ln.unit_amount, amount=ln.monthly_amount)
               for n, ln in enumerate(plan.lines)],
        amount=plan.monthly_total, start_date=plan.start_date,
        end_date=plan.end_date, term_months=plan.term_months, interval="month",
        created=T0)
    activated = saga.subscription_activated(plan, sub)
    assert activated.term_end == plan.end_date and activated.currency == plan.currency
    cancelled = saga.subscription_cancelled(
        msgspec.structs.replace(sub, status="canceled", canceled_at=T0 + 5), "refused")
    assert cancelled.effective_date == plan.start_date
    status, contract = ContractBook().put(
        plan.deal_id, saga.revenue_contract_request(plan, sub.id), float(T0))
    assert status == 201 and isinstance(contract, RevenueContract)
    updates = saga.schedules(plan, contract)
    assert len(updates) == len(plan.lines)
    assert sum(u.total_amount for u in updates) == plan.total
    for u in updates:
        assert u.service_start == plan.start_date and u.service_end == plan.end_date
        assert sum(line.amount for line in u.lines) == u.total_amount
        assert len(u.lines) == plan.term_months  # the term starts on the first of a month


def _event(deal: PartnerDeal, kind: str) -> bytes:
    return msgspec.json.encode(DealEvent(id=f"evt_{deal.id}_v{deal.version}", type=kind,
                                         created=T0, data=DealEventData(object=deal)))


def test_deal_webhooks_map_to_canonical_messages_keyed_by_version() -> None:
    registered = generate_deal(5, 3, T0)
    route = PARTNER_ROUTES["deal.registered"]
    inbound = route.map(route.decode(_event(registered, "deal.registered")))
    assert isinstance(inbound.payload, DealRegistered)
    assert str(inbound.key) == f"partner:{registered.id}:v1"
    approved = _deal()
    route = PARTNER_ROUTES["deal.approved"]
    inbound2 = route.map(route.decode(_event(approved, "deal.approved")))
    assert isinstance(inbound2.payload, DealApproved)
    assert inbound2.payload.discount_bp == approved.discount_bp
    assert str(inbound2.key) == f"partner:{approved.id}:v2" and inbound2.msg_id != inbound.msg_id
    rejected = msgspec.structs.replace(registered, status="rejected", version=2,
                                       rejection_reason="channel conflict")
    route = PARTNER_ROUTES["deal.rejected"]
    assert isinstance(route.map(route.decode(_event(rejected, "deal.rejected"))).payload,
                      DealRejected)
    broken = msgspec.structs.replace(approved, valid_until="2025-13-40")
    route = PARTNER_ROUTES["deal.approved"]
    with pytest.raises(ContractError) as err:
        route.map(route.decode(_event(broken, "deal.approved")))
    assert err.value.path == "$.data.object.validUntil"
    reversed_ = msgspec.structs.replace(approved, valid_until="2000-01-01")
    with pytest.raises(ContractError) as err:
        route.map(route.decode(_event(reversed_, "deal.approved")))
    assert err.value.path.startswith("$.data.object")


class _Down:
    """A platform that answers every request with ``answer()``, counting the calls."""

    def __init__(self, answer: Exception) -> None:
        self.answer = answer
        self.calls = 0

    async def request(self, *_: Any, **__: Any) -> HttpResponse:
        self.calls += 1
        raise self.answer


async def test_the_saga_breakers_open_on_faults_and_refuse_without_calling() -> None:
    now = [0.0]
    revenue = _Down(PlatformUnavailable("revenue: server error 503", code="http.server_error"))
    erp = _Down(PlatformRejected("erp: rejected", status=422, body='{"code": "CREDIT_HOLD"}'))
    config = BreakerConfig(consecutive_failures=2, open_for=5.0)

    def guard(name: str, http: _Down) -> PlatformGuard:
        return PlatformGuard(name, http, open_code="saga.breaker_open",  # type: ignore[arg-type]
                             breaker=CircuitBreaker(f"saga.{name}", config),
                             clock=lambda: now[0])

    platforms = SagaPlatforms(partner=guard("partner", erp), cpq=guard("cpq", erp),
                              billing=guard("billing", erp), erp=guard("erp", erp),
                              revenue=guard("revenue", revenue))
    for _ in range(2):
        with pytest.raises(PlatformUnavailable):
            await platforms.revenue.post("/revenue/v1/batches", b"{}")
    assert platforms.retry_in(now[0]) == 5.0
    with pytest.raises(PlatformUnavailable) as err:
        await platforms.revenue.post("/revenue/v1/batches", b"{}")
    assert err.value.code == "saga.breaker_open" and revenue.calls == 2  # refused, no call
    for _ in range(3):  # a business refusal is not a fault: the ERP's breaker stays closed
        with pytest.raises(PlatformRejected):
            await platforms.erp.post("/erp/v1/sales-orders", b"{}")
    assert erp.calls == 3
    assert platforms.erp.breaker is not None and platforms.erp.breaker.retry_in(now[0]) == 0
    now[0] = 6.0
    assert platforms.retry_in(now[0]) == 0  # half-open: one probe may go
    assert [(t.breaker, str(t.target)) for t in platforms.drain_transitions()] == [
        ("saga.revenue", "open")]


# (currency, list unit price, discount in basis points) -> (discount per unit, net unit price),
# worked out by hand in minor units: half a minor unit rounds up, less rounds down.
DISCOUNT_TABLE = [
    ("USD", 10_000, 1_000, 1_000, 9_000),  # exact: 10 % of $100.00
    ("USD", 105, 1_000, 11, 94),  # 10.5 ¢ off: the half cent rounds up
    ("USD", 104, 1_000, 10, 94),  # 10.4 ¢ off: rounds down
    ("USD", 1_005, 5_000, 503, 502),  # 502.5 ¢ off
    ("USD", 1_999, 1_500, 300, 1_699),  # 299.85 ¢ off
    ("USD", 1, 4_999, 0, 1),  # 0.4999 ¢ off: nothing
    ("USD", 1, 5_000, 1, 0),  # 0.5 ¢ off: the whole cent
    ("JPY", 3, 5_000, 2, 1),  # ¥1.5 off (the yen has no minor unit): ¥2
    ("JPY", 1_999, 2_500, 500, 1_499),  # ¥499.75 off
    ("BHD", 12_345, 1_000, 1_235, 11_110),  # 1234.5 fils off (3 decimals)
    ("BHD", 1_001, 2_500, 250, 751),  # 250.25 fils off
]


@pytest.mark.parametrize(("currency", "list_unit", "bp", "off", "net"), DISCOUNT_TABLE)
def test_the_plan_discounts_per_unit_as_the_table_says(currency: str, list_unit: int, bp: int,
                                                       off: int, net: int) -> None:
    """An oracle independent of the planner's formula: literal amounts, rounding included."""
    base = _deal()
    deal = msgspec.structs.replace(base, currency=currency, discount_bp=bp,
                                   items=[base.items[0]])
    qty = deal.items[0].quantity
    quote = PriceQuote(currency=currency, lines=[PricedLine(
        product=deal.items[0].product, quantity=qty, unit_price=list_unit,
        amount=list_unit * qty)], subtotal=list_unit * qty, discount=0, total=list_unit * qty)
    plan = saga.plan_deal(_approval(deal), deal, quote)
    [line] = plan.lines
    assert (line.list_unit_amount, line.discount_unit_amount, line.unit_amount) == (
        list_unit, off, net)
    assert line.monthly_amount == net * qty
    assert plan.total == net * qty * deal.term_months
