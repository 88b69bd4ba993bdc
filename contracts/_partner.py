"""Customers and partners: who buys and who resells.

Customers are master data (authority: CPQ / master data); partners, their tiers and the partner
programme are the partner portal's. A partner's tier decides its commission rate and the
discounts it may register deals for.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec

from ._fields import CountryCode, Id
from ._invariants import require_known_currency
from ._money import Currency

__all__ = ["CustomerUpserted", "PartnerTier", "PartnerTierChanged", "PartnerUpserted"]

PartnerTier = Literal["registered", "silver", "gold", "platinum"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
Email = Annotated[str, msgspec.Meta(max_length=320, pattern="^[^@\\s]+@[^@\\s]+$")]


class CustomerUpserted(msgspec.Struct, frozen=True, kw_only=True,
                       tag="customer.upserted.v1", tag_field="type"):
    """A customer was created or changed in master data (the whole record, not a delta)."""

    customer_id: Id
    name: Name
    country: CountryCode
    currency: Annotated[Currency, msgspec.Meta(description="the customer's billing currency")]
    status: Literal["active", "inactive"] = "active"
    tax_id: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    billing_email: Email | None = None
    partner_id: Annotated[Id | None, msgspec.Meta(
        description="the partner of record when the customer buys through a reseller")] = None

    def __post_init__(self) -> None:
        require_known_currency(self.currency)


class PartnerUpserted(msgspec.Struct, frozen=True, kw_only=True,
                      tag="partner.upserted.v1", tag_field="type"):
    """A partner (reseller, referral or marketplace) was created or changed, with its tier."""

    partner_id: Id
    name: Name
    kind: Literal["reseller", "referral", "marketplace"] = "reseller"
    tier: PartnerTier
    country: CountryCode
    payout_currency: Currency
    status: Literal["active", "suspended", "terminated"] = "active"

    def __post_init__(self) -> None:
        require_known_currency(self.payout_currency, "payout_currency")


class PartnerTierChanged(msgspec.Struct, frozen=True, kw_only=True,
                         tag="partner.tier_changed.v1", tag_field="type"):
    """A partner moved tier; commissions accrued from ``effective_from`` use the new tier."""

    partner_id: Id
    previous_tier: PartnerTier
    tier: PartnerTier
    effective_from: date
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""
