"""Flow 5, amend / renew / cancel: the subscription's contract state as pure functions.

Theory of operation. A subscription made by the deal saga is a list of *phases* (whole
calendar months with one item set each), starting with the saga's one phase (``baseline``).
Every later version of the subscription is one canonical event that changes the phases
(``evolve``): an amendment splits the last phase at its effective date with the new items, a
renewal appends a phase for the new term, a cancellation cuts the phases at its effective
date. From the phases follow the ERP sales order's lines (``order_revision``: each item of each
phase for that phase's months) and the revenue contract (``contract_request``: one line per
item and phase, recognised over the phase), both restating everything at the subscription's
version, so each platform ends in the state of the latest version applied.

Versions are applied strictly in order (``decide``): a version at or below the applied one is
stale (skipped: it is already reflected), the next one is applied, a later one is early (it
waits in the stream until its predecessor is applied). The applied version and its state are
kept in the ledger (table ``sagas``, row ``subscription:<id>``, as an ``Applied``).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

import msgspec

from contracts import (
    ContractError,
    SubscriptionAmended,
    SubscriptionCancelled,
    SubscriptionItem,
    SubscriptionRenewed,
)
from contracts.platforms.erp import SalesOrderLineIn, SalesOrderRevision
from contracts.platforms.revenue import ContractLineIn, RevenueContractIn

from .saga import DealPlan

__all__ = ["Applied", "Change", "LifecycleState", "Phase", "PhaseItem", "baseline",
           "contract_request", "decide", "evolve", "months", "order_revision", "record_id",
           "value"]


Change = SubscriptionAmended | SubscriptionRenewed | SubscriptionCancelled


class PhaseItem(msgspec.Struct, frozen=True):
    product: str
    quantity: int
    unit_amount: int  # per month


class Phase(msgspec.Struct, frozen=True):
    """``start``..``end`` inclusive, whole calendar months, one item set."""

    start: date
    end: date
    items: tuple[PhaseItem, ...]


class LifecycleState(msgspec.Struct, frozen=True, kw_only=True):
    """What the gateway knows of a saga's subscription at its applied version."""

    deal_id: str
    customer_id: str
    currency: str
    order_id: str
    phases: tuple[Phase, ...]
    cancelled: bool = False


class Applied(msgspec.Struct, frozen=True):
    """The subscription's applied version and the state it made (one ledger row)."""

    version: int
    state: LifecycleState


def record_id(subscription_id: str) -> str:
    """The ledger row (table ``sagas``) of a subscription's applied version."""
    return f"subscription:{subscription_id}"


def months(phase: Phase) -> int:
    """The whole calendar months of ``phase``."""
    return (phase.end.year - phase.start.year) * 12 + phase.end.month - phase.start.month + 1


def value(state: LifecycleState) -> int:
    """The subscription's value over all its phases (minor units)."""
    return sum(i.quantity * i.unit_amount * months(p) for p in state.phases for i in p.items)


def baseline(plan: DealPlan, order_id: str) -> LifecycleState:
    """Version 1: the deal's one phase, as the saga created it."""
    return LifecycleState(
        deal_id=plan.deal_id, customer_id=plan.customer_id, currency=plan.currency,
        order_id=order_id, phases=(Phase(start=plan.start_date, end=plan.end_date, items=tuple(
            PhaseItem(ln.product, ln.quantity, ln.unit_amount) for ln in plan.lines)),))


def decide(applied: int, incoming: int) -> Literal["stale", "apply", "early"]:
    """Whether version ``incoming`` is already reflected (``stale``), the next one
    (``apply``) or must wait for its predecessors (``early``). Raises nothing."""
    if incoming <= applied:
        return "stale"
    return "apply" if incoming == applied + 1 else "early"


def _items(items: tuple[SubscriptionItem, ...]) -> tuple[PhaseItem, ...]:
    return tuple(PhaseItem(i.product_id, i.quantity, i.unit_amount) for i in items)


def _refuse(message: str) -> ContractError:
    return ContractError(message, code="subscription.bad_change", path="$.payload")


def evolve(state: LifecycleState, change: Change) -> LifecycleState:
    """The state after ``change`` (the next version). Raises ``ContractError``
    (``subscription.bad_change``) for a change that does not fit the phases (an effective date
    outside the last phase or not the first of a month, a change after a cancellation)."""
    if state.cancelled:
        raise _refuse(f"subscription of deal {state.deal_id} is cancelled; no further change")
    last = state.phases[-1]
    match change:
        case SubscriptionAmended(effective_date=at, items=items):
            if at.day != 1 or not last.start < at <= last.end:
                raise _refuse(f"amendment effective {at} is not the first of a month within "
                              f"{last.start}..{last.end}")
            cut = msgspec.structs.replace(last, end=at - timedelta(days=1))
            return msgspec.structs.replace(state, phases=(
                *state.phases[:-1], cut, Phase(start=at, end=last.end, items=_items(items))))
        case SubscriptionRenewed(term_start=start, term_end=end, items=items):
            if start != last.end + timedelta(days=1) or end < start:
                raise _refuse(f"renewal {start}..{end} does not follow the term ending "
                              f"{last.end}")
            return msgspec.structs.replace(state, phases=(
                *state.phases, Phase(start=start, end=end, items=_items(items))))
        case SubscriptionCancelled(effective_date=at):
            first = state.phases[0].start
            if at.day != 1 or not first < at <= last.end:
                raise _refuse(f"cancellation effective {at} is not the first of a month "
                              f"within {first}..{last.end}")
            kept = tuple(p if p.end < at else msgspec.structs.replace(
                p, end=at - timedelta(days=1)) for p in state.phases if p.start < at)
            return msgspec.structs.replace(state, phases=kept, cancelled=True)
    raise _refuse(f"unexpected change {type(change).__name__}")  # pragma: no cover


def order_revision(state: LifecycleState, version: int) -> SalesOrderRevision:
    """The sales order restated at ``version``: each item of each phase, for its months."""
    return SalesOrderRevision(version=version, lines=[
        SalesOrderLineIn(product=i.product, quantity=i.quantity,
                         unit_amount=i.unit_amount * months(p))
        for p in state.phases for i in p.items],
        memo=f"Deal {state.deal_id}: subscription version {version}")


def contract_request(state: LifecycleState, version: int, subscription_id: str
                     ) -> RevenueContractIn:
    """The revenue contract restated at ``version``: one line per item and phase."""
    return RevenueContractIn(
        version=version, customer=state.customer_id, currency=state.currency,
        lines=[ContractLineIn(line_id=f"{state.deal_id}-p{k}-{n}", product=i.product,
                              amount=i.quantity * i.unit_amount * months(p),
                              period_start=p.start, months=months(p))
               for k, p in enumerate(state.phases, 1) for n, i in enumerate(p.items, 1)],
        deal_id=state.deal_id, source_id=subscription_id)
