"""Flow 1, deal to contract: the saga's plan as pure functions (no I/O, no clock).

Theory of operation. An approved deal becomes, in order, a priced plan (``enrich``: the deal
read from the partner portal, list prices from CPQ), a billing subscription, an ERP sales
order and a revenue contract. Each step is one platform write with a deterministic
idempotency key per (deal, step) (``step_key``), so doing a step again after a crash is
answered with what the platform already holds, never a second object. The saga's state
(``SagaState``) is stored after every step (the actor shell does it, in the ledger), and
``next_action`` reads only that state, so a restarted gateway resumes at the first step not
recorded as done.

A step refused for good (a business rejection: a ``Permanent`` answer) turns the saga to
``compensating``: the steps done so far are reversed in reverse order (``UNDO``: the
subscription is cancelled, the sales order closed; never deleted, and nothing is ever posted
as money here to be taken back) and the saga ends ``compensated``, with the step, the
platform's code and its reason kept in the state. A compensation refused for good ends it
``failed`` (a person must look). State machine (``TRANSITIONS``)::

    running ──step done──▶ running ──last step done──▶ completed
       └──step refused──▶ compensating ──all undone──▶ compensated
                               └──undo refused──▶ failed

The request bodies and the canonical events of each step are built here too, from the plan
and the platforms' answers, so the tests read them as tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Literal, NamedTuple

import msgspec

from contracts import (
    ContractError,
    DealApproved,
    OrderBooked,
    OrderLine,
    RecognitionLine,
    RevenueScheduleUpdated,
    SubscriptionActivated,
    SubscriptionCancelled,
    SubscriptionItem,
    derive_id,
)
from contracts.platforms.billing import BillingSubscription, SubscriptionIn, SubscriptionItemIn
from contracts.platforms.cpq import PriceItem, PriceQuote, PriceRequest
from contracts.platforms.erp import SalesOrderIn, SalesOrderLineIn
from contracts.platforms.partner import PartnerDeal
from contracts.platforms.revenue import ContractLineIn, RevenueContract, RevenueContractIn

__all__ = [
    "STEPS",
    "TRANSITIONS",
    "UNDO",
    "Complete",
    "DealPlan",
    "Do",
    "PlanLine",
    "SagaState",
    "Settled",
    "Undo",
    "after_rejection",
    "after_step",
    "after_undo",
    "finish",
    "next_action",
    "order_booked",
    "plan_deal",
    "price_request",
    "revenue_contract_request",
    "sales_order_request",
    "schedules",
    "step_key",
    "subscription_activated",
    "subscription_cancelled",
    "subscription_request",
]

Step = Literal["enrich", "subscription", "sales_order", "revenue_contract"]
Status = Literal["running", "compensating", "completed", "compensated", "failed"]

# The steps in order; each is done at most once per deal (its idempotency key is
# ``step_key(deal, step)``).
STEPS: tuple[Step, ...] = ("enrich", "subscription", "sales_order", "revenue_contract")
# How a done step is reversed when a later step is refused for good. Steps without an entry
# leave nothing to reverse (enrich only reads; the revenue contract is the last step).
UNDO: Mapping[str, str] = MappingProxyType({"subscription": "cancel_subscription",
                                            "sales_order": "close_sales_order"})
# status -> the statuses it may move to (h11-style: a missing pair is a bug).
TRANSITIONS: Mapping[str, frozenset[str]] = MappingProxyType({
    "running": frozenset({"running", "completed", "compensating"}),
    "compensating": frozenset({"compensating", "compensated", "failed"}),
    "completed": frozenset(),
    "compensated": frozenset(),
    "failed": frozenset(),
})


class PlanLine(msgspec.Struct, frozen=True, kw_only=True):
    """One product of the deal at its discounted price: per month ``quantity`` x
    ``unit_amount`` (= list - discount per unit) = ``monthly_amount``; over the term
    ``term_amount`` = ``monthly_amount`` x term months."""

    line_id: str
    product: str
    quantity: int
    list_unit_amount: int
    discount_unit_amount: int
    unit_amount: int
    monthly_amount: int
    term_amount: int


class DealPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What the saga writes, fixed once (stored with the state, so a resumed saga sends the
    very same bodies under the same keys). ``total`` is the contract value over the term."""

    deal_id: str
    partner_id: str
    customer_id: str
    currency: str
    discount_bp: int
    term_months: int
    start_date: date
    end_date: date
    approved_at: datetime
    lines: tuple[PlanLine, ...]
    monthly_total: int
    total: int


class SagaState(msgspec.Struct, frozen=True, kw_only=True):
    """A deal's saga as stored after each step. ``done`` maps a step to the platform's id of
    what it created; ``undone`` a reversed step to the platform's answer (status)."""

    deal_id: str
    status: Status = "running"
    plan: DealPlan | None = None
    done: dict[str, str] = {}
    undone: dict[str, str] = {}
    failed_step: str | None = None
    failure_code: str = ""
    failure_reason: str = ""


class Do(NamedTuple):
    step: Step


class Undo(NamedTuple):
    step: str  # the done step to reverse (a key of ``UNDO``)


class Complete(NamedTuple):
    """Every step is done (``compensated`` False) or every done step reversed (True)."""

    compensated: bool


class Settled(NamedTuple):
    """The saga already ended with ``status``: nothing to do but settle the message."""

    status: Status


Action = Do | Undo | Complete | Settled


def step_key(deal_id: str, step: str) -> str:
    """The idempotency key of ``step`` (or of its reversal, ``undo.<step>``) for a deal."""
    return derive_id("saga", "deal", deal_id, step)


def _move(state: SagaState, status: Status, **changes: object) -> SagaState:
    if status not in TRANSITIONS[state.status]:
        raise ValueError(f"saga.transition: {state.status} -> {status} is not allowed")
    return msgspec.structs.replace(state, status=status, **changes)


def next_action(state: SagaState) -> Action:
    """What the saga does next, from its stored state alone. Raises nothing."""
    if state.status in ("completed", "compensated", "failed"):
        return Settled(state.status)
    if state.status == "running":
        for step in STEPS:
            if step not in state.done:
                return Do(step)
        return Complete(compensated=False)
    for step in reversed(STEPS):
        if step in state.done and step in UNDO and step not in state.undone:
            return Undo(step)
    return Complete(compensated=True)


def after_step(state: SagaState, step: Step, result: str,
               plan: DealPlan | None = None) -> SagaState:
    """``state`` with ``step`` done (``result``: the platform's id), and the plan for
    ``enrich``. Raises ``ValueError`` when the saga is not running."""
    done = {**state.done, step: result}
    return _move(state, "running", done=done, plan=plan if plan is not None else state.plan)


def after_rejection(state: SagaState, step: str, code: str, reason: str) -> SagaState:
    """``state`` turned to compensating because ``step`` was refused for good."""
    return _move(state, "compensating", failed_step=step, failure_code=code,
                 failure_reason=reason[:1000])


def after_undo(state: SagaState, step: str, result: str) -> SagaState:
    """``state`` with the reversal of ``step`` done."""
    return _move(state, "compensating", undone={**state.undone, step: result})


def finish(state: SagaState, *, failed: bool = False) -> SagaState:
    """The final state: ``completed`` from running, ``compensated`` (or ``failed``: a
    reversal was refused) from compensating."""
    if state.status == "running":
        return _move(state, "completed")
    return _move(state, "failed" if failed else "compensated")


# -- the steps' inputs ------------------------------------------------------------------------


def price_request(deal: PartnerDeal) -> PriceRequest:
    """CPQ's pricing request for the deal's items at list price (the discount is per unit,
    applied by ``plan_deal``)."""
    return PriceRequest(currency=deal.currency,
                        items=[PriceItem(product=i.product, quantity=i.quantity)
                               for i in deal.items])


def _term_end(start: date, months: int) -> date:
    month = start.month - 1 + months
    year, month = start.year + month // 12, month % 12 + 1
    day = start.day
    while True:
        try:
            return date(year, month, day) - timedelta(days=1)
        except ValueError:
            day -= 1  # the 31st of a shorter month: the month's last day


def plan_deal(approval: DealApproved, deal: PartnerDeal, quote: PriceQuote) -> DealPlan:
    """The plan of an approved deal, from the portal's deal and CPQ's list prices.

    Per unit the discount is ``list x discount_bp / 10,000`` rounded half up, so every line's
    amounts are whole minor units and the lines sum to the totals exactly. The term runs
    ``term_months`` from the deal's start date. Raises ``ContractError``
    (``saga.deal_mismatch``) when the portal's deal is not the approved one, or CPQ priced
    other items than the deal's.
    """
    if deal.id != approval.deal_id or deal.status != "approved" or \
            deal.partner != approval.partner_id:
        raise ContractError(
            f"the portal's deal {deal.id} ({deal.status}, partner {deal.partner}) is not the "
            f"approved deal {approval.deal_id}", code="saga.deal_mismatch", path="$.payload")
    wanted = [(i.product, i.quantity) for i in deal.items]
    if [(ln.product, ln.quantity) for ln in quote.lines] != wanted or \
            quote.currency != deal.currency:
        raise ContractError(f"CPQ priced other items than deal {deal.id}'s",
                            code="saga.deal_mismatch", path="$.payload")
    try:
        start = date.fromisoformat(deal.start_date)
    except ValueError:
        raise ContractError(f"deal {deal.id}: startDate {deal.start_date!r} is not a date",
                            code="saga.deal_mismatch", path="$.payload") from None
    lines = []
    for n, priced in enumerate(quote.lines, 1):
        off = (priced.unit_price * approval.discount_bp + 5_000) // 10_000
        unit = priced.unit_price - off
        monthly = unit * priced.quantity
        lines.append(PlanLine(
            line_id=f"{deal.id}-{n}", product=priced.product, quantity=priced.quantity,
            list_unit_amount=priced.unit_price, discount_unit_amount=off, unit_amount=unit,
            monthly_amount=monthly, term_amount=monthly * deal.term_months))
    return DealPlan(
        deal_id=deal.id, partner_id=deal.partner, customer_id=deal.customer,
        currency=deal.currency, discount_bp=approval.discount_bp,
        term_months=deal.term_months, start_date=start,
        end_date=_term_end(start, deal.term_months), approved_at=approval.approved_at,
        lines=tuple(lines), monthly_total=sum(ln.monthly_amount for ln in lines),
        total=sum(ln.term_amount for ln in lines))


def subscription_request(plan: DealPlan) -> SubscriptionIn:
    """The billing subscription: the net monthly price of every line, for the term."""
    return SubscriptionIn(
        customer=plan.customer_id, currency=plan.currency.lower(),
        items=[SubscriptionItemIn(product=ln.product, quantity=ln.quantity,
                                  unit_amount=ln.unit_amount) for ln in plan.lines],
        start_date=plan.start_date, term_months=plan.term_months,
        metadata={"deal_id": plan.deal_id, "partner_id": plan.partner_id})


def sales_order_request(plan: DealPlan, subscription_id: str) -> SalesOrderIn:
    """The ERP sales order: one line per product over the whole term (external id: the
    deal); the ERP's total is ``plan.total``."""
    return SalesOrderIn(
        external_id=plan.deal_id, customer=plan.customer_id, currency=plan.currency,
        tran_date=plan.approved_at.astimezone(UTC).date(),
        lines=[SalesOrderLineIn(product=ln.product, quantity=ln.quantity,
                                unit_amount=ln.unit_amount * plan.term_months)
               for ln in plan.lines],
        memo=f"Deal {plan.deal_id} via partner {plan.partner_id}",
        subscription=subscription_id)


def revenue_contract_request(plan: DealPlan, subscription_id: str) -> RevenueContractIn:
    """The revenue contract (version 1): each line's term value over the term."""
    return RevenueContractIn(
        version=1, customer=plan.customer_id, currency=plan.currency,
        lines=[ContractLineIn(line_id=ln.line_id, product=ln.product, amount=ln.term_amount,
                              period_start=plan.start_date, months=plan.term_months)
               for ln in plan.lines],
        deal_id=plan.deal_id, source_id=subscription_id)


# -- the canonical events the saga publishes ------------------------------------------------


def order_booked(plan: DealPlan) -> OrderBooked:
    """The deal's quote, priced by CPQ at the approved discount, booked as an order."""
    return OrderBooked(
        order_id=f"ord_{plan.deal_id}", quote_id=f"q_{plan.deal_id}",
        customer_id=plan.customer_id, partner_id=plan.partner_id, deal_id=plan.deal_id,
        currency=plan.currency, booked_at=plan.approved_at,
        lines=tuple(OrderLine(
            line_id=ln.line_id, product_id=ln.product, price_id=f"{ln.product}:{plan.currency}",
            quantity=ln.quantity * plan.term_months, list_unit_amount=ln.list_unit_amount,
            discount_unit_amount=ln.discount_unit_amount, unit_amount=ln.unit_amount,
            amount=ln.term_amount, service_start=plan.start_date, service_end=plan.end_date)
            for ln in plan.lines),
        total=plan.total)


def subscription_activated(plan: DealPlan, sub: BillingSubscription) -> SubscriptionActivated:
    """Billing's subscription as the canonical ``subscription.activated.v1``."""
    return SubscriptionActivated(
        subscription_id=sub.id, customer_id=sub.customer, order_id=f"ord_{plan.deal_id}",
        partner_id=plan.partner_id, currency=sub.currency.upper(), billing_interval="month",
        items=tuple(SubscriptionItem(item_id=it.id, product_id=it.product,
                                     price_id=f"{it.product}:{plan.currency}",
                                     quantity=it.quantity, unit_amount=it.unit_amount)
                    for it in sub.items),
        term_start=plan.start_date, term_end=plan.end_date,
        activated_at=datetime.fromtimestamp(sub.created, UTC))


def subscription_cancelled(sub: BillingSubscription, note: str) -> SubscriptionCancelled:
    """The compensation's cancellation, effective from the subscription's start (it never
    began: no service, no charge)."""
    return SubscriptionCancelled(
        subscription_id=sub.id, effective_date=sub.start_date,
        cancelled_at=datetime.fromtimestamp(sub.canceled_at or sub.created, UTC),
        reason="other", note=note[:500])


def _month_bounds(period: str, start: date, end: date) -> tuple[date, date]:
    first = date(int(period[:4]), int(period[5:7]), 1)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return max(first, start), min(nxt - timedelta(days=1), end)


def schedules(plan: DealPlan, contract: RevenueContract) -> list[RevenueScheduleUpdated]:
    """One ``revenue.schedule.updated.v1`` per contract line, from the platform's schedule.

    Raises ``ContractError`` when the platform's schedule breaks the canonical invariants
    (lines outside the service period, not summing to the line's amount).
    """
    out = []
    for line in contract.lines:
        start, end = line.period_start, line.period_end
        rec = []
        for entry in contract.schedule:
            if entry.line_id == line.line_id:
                a, b = _month_bounds(entry.period, start, end)
                rec.append(RecognitionLine(period_start=a, period_end=b, amount=entry.amount))
        try:
            out.append(RevenueScheduleUpdated(
                schedule_id=f"{contract.id}:{line.line_id}", customer_id=contract.customer,
                product_id=line.product, source_type="subscription",
                source_id=contract.source_id or plan.deal_id, currency=contract.currency,
                method="ratable", service_start=start, service_end=end,
                total_amount=line.amount, lines=tuple(rec),
                updated_at=datetime.fromtimestamp(contract.updated_at, UTC)))
        except (ValueError, msgspec.ValidationError) as exc:
            raise ContractError(f"revenue contract {contract.id}: {exc}",
                                code="saga.bad_schedule", path="$.schedule") from exc
    return out
