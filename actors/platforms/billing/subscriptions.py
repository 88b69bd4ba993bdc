"""Billing's subscription webhooks (flow 5) → canonical subscription messages (pure).

``customer.subscription.updated`` carries the whole subscription at its new version; its
``change`` says what made that version: ``amend`` → ``SubscriptionAmended`` (the new item set
from ``effective_date``), ``renew`` → ``SubscriptionRenewed`` (a new term
``effective_date``..``end_date``). ``customer.subscription.deleted`` → ``SubscriptionCancelled``
(no service from ``effective_date``). Each is keyed ``billing:<subscription>:v<version>`` with
``Nats-Msg-Id`` derived from that key, so a resent webhook is stored once and consumers apply
versions in order (``actors.commercial.lifecycle``).

Kept apart from ``actors.platforms.billing.erpgw`` (which routes these functions) so the
subscription shapes stay in one place; they return the fields of an ``Inbound``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from contracts import (
    BusinessKey,
    ContractError,
    SubscriptionAmended,
    SubscriptionCancelled,
    SubscriptionItem,
    SubscriptionRenewed,
    contract_error,
    derive_id,
)
from contracts.platforms.billing import BillingSubscription, SubscriptionEvent

__all__ = ["subscription_change"]

_OBJECT = "$.data.object"


def _items(sub: BillingSubscription) -> tuple[SubscriptionItem, ...]:
    cur = sub.currency.upper()
    return tuple(SubscriptionItem(item_id=i.id, product_id=i.product,
                                  price_id=f"{i.product}:{cur}", quantity=i.quantity,
                                  unit_amount=i.unit_amount) for i in sub.items)


def _effective(sub: BillingSubscription) -> date:
    if sub.effective_date is None:
        raise ContractError(f"subscription {sub.id} v{sub.version} ({sub.change}) has no "
                            "effective_date", code="contract.missing_field",
                            path=f"{_OBJECT}.effective_date")
    return sub.effective_date


def subscription_change(evt: SubscriptionEvent) -> tuple[Any, BusinessKey, str, datetime]:
    """(payload, key, Nats-Msg-Id, occurred_at) of a subscription webhook.

    Raises ``ContractError``: ``subscription.unknown_change`` (an ``updated`` event whose
    ``change`` is neither ``amend`` nor ``renew``: path ``$.data.object.change``), a missing
    ``effective_date``, or a canonical invariant the subscription breaks.
    """
    sub = evt.data.object
    at = datetime.fromtimestamp(evt.created, UTC)
    try:
        payload: Any
        if evt.type == "customer.subscription.deleted":
            payload = SubscriptionCancelled(
                subscription_id=sub.id, effective_date=_effective(sub),
                cancelled_at=datetime.fromtimestamp(sub.canceled_at or evt.created, UTC),
                reason="customer_request")
        elif sub.change == "amend":
            payload = SubscriptionAmended(
                subscription_id=sub.id, amendment_id=f"{sub.id}:v{sub.version}",
                currency=sub.currency.upper(), items=_items(sub),
                effective_date=_effective(sub), amended_at=at)
        elif sub.change == "renew":
            payload = SubscriptionRenewed(
                subscription_id=sub.id, currency=sub.currency.upper(), items=_items(sub),
                term_start=_effective(sub), term_end=sub.end_date, renewed_at=at)
        else:
            raise ContractError(f"customer.subscription.updated with change {sub.change!r}; "
                                "expected amend or renew", code="subscription.unknown_change",
                                path=f"{_OBJECT}.change")
    except (ValueError, OverflowError) as exc:
        err = contract_error(exc)
        raise ContractError(err.message, code=err.code, path=_OBJECT) from exc
    key = BusinessKey(source="billing", object_id=sub.id, version=sub.version)
    return payload, key, derive_id("billing", sub.id, str(sub.version)), at
