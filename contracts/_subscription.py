"""Subscriptions: the contract a customer is billed on (authority: the billing platform).

A subscription's life is activated → amended* → renewed* → cancelled. Every event carries the
subscription id as its business key and the platform's version of the subscription as the key
version, so consumers apply them in order and drop stale ones (the commercial lane is ordered
per contract). Amendments and renewals restate the *whole* item set, never a delta: a consumer
that missed one still ends in the right state.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec

from ._fields import Amount, Id, Interval, Quantity, Timestamp
from ._invariants import require_known_currency, require_non_negative, require_ordered
from ._money import Currency

__all__ = [
    "SubscriptionActivated",
    "SubscriptionAmended",
    "SubscriptionCancelled",
    "SubscriptionItem",
    "SubscriptionRenewed",
]

class SubscriptionItem(msgspec.Struct, frozen=True, kw_only=True):
    """One priced product on a subscription: ``quantity`` units at net ``unit_amount``."""

    item_id: Id
    product_id: Id
    price_id: Id
    quantity: Quantity
    unit_amount: Amount

    def __post_init__(self) -> None:
        require_non_negative(self, "quantity", "unit_amount")


Items = Annotated[tuple[SubscriptionItem, ...], msgspec.Meta(min_length=1, max_length=500)]


class SubscriptionActivated(msgspec.Struct, frozen=True, kw_only=True,
                            tag="subscription.activated.v1", tag_field="type"):
    """A subscription started: its first term runs from ``term_start`` to ``term_end``."""

    subscription_id: Id
    customer_id: Id
    order_id: Id | None = None
    partner_id: Id | None = None
    currency: Currency
    billing_interval: Interval
    items: Items
    term_start: date
    term_end: date
    activated_at: Timestamp

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_ordered(self.term_start, self.term_end, "term_start", "term_end")


class SubscriptionAmended(msgspec.Struct, frozen=True, kw_only=True,
                          tag="subscription.amended.v1", tag_field="type"):
    """The item set changed (upgrade, downgrade, seats) from ``effective_date``; ``items`` is
    the complete new set."""

    subscription_id: Id
    amendment_id: Id
    currency: Currency
    items: Items
    effective_date: date
    amended_at: Timestamp
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""

    def __post_init__(self) -> None:
        require_known_currency(self.currency)


class SubscriptionRenewed(msgspec.Struct, frozen=True, kw_only=True,
                          tag="subscription.renewed.v1", tag_field="type"):
    """A new term began; ``items`` is the complete item set for the new term."""

    subscription_id: Id
    currency: Currency
    items: Items
    term_start: date
    term_end: date
    renewed_at: Timestamp

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_ordered(self.term_start, self.term_end, "term_start", "term_end")


class SubscriptionCancelled(msgspec.Struct, frozen=True, kw_only=True,
                            tag="subscription.cancelled.v1", tag_field="type"):
    """The subscription ends at ``effective_date`` (no charges for service after it)."""

    subscription_id: Id
    effective_date: date
    cancelled_at: Timestamp
    reason: Literal["customer_request", "non_payment", "replaced", "other"] = "other"
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""
