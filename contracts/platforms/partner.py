"""The partner portal's API (partners, tiers, attribution, settlements).

Shaped like a typical partner-relationship-management REST API: camelCase JSON, integer minor
units, ISO dates. The portal is the authority on partners, their tiers (hence commission rates)
and which partner resells which customer (attribution).

- ``GET /partner/v1/partners`` → ``PartnerList``; ``GET /partner/v1/tiers`` → ``TierList``.
- ``GET /partner/v1/attributions/{customer}`` → ``Attribution`` (200) or ``PartnerError``
  ``{"code": "not_found"}`` (404) for a direct customer (no partner, no commission).
- ``POST /partner/v1/settlements`` (header ``Idempotency-Key``) with ``SettlementIn`` →
  ``SettlementReceipt`` (201 created, 200 replayed: same key and body); the same key with a
  different body is ``422`` ``{"code": "idempotency_key_reused"}``.
- ``GET /partner/v1/settlements?partner=`` → ``SettlementList`` (a partner's commission
  statement).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ._ids import PathId

__all__ = [
    "IDEMPOTENCY_KEY_REUSED",
    "NOT_FOUND",
    "Attribution",
    "Partner",
    "PartnerError",
    "PartnerList",
    "SettlementIn",
    "SettlementLineIn",
    "SettlementList",
    "SettlementReceipt",
    "Tier",
    "TierList",
]

Amount = Annotated[int, msgspec.Meta(ge=0)]
TierName = Literal["registered", "silver", "gold", "platinum"]

# ``PartnerError.code`` of a 404 (unknown partner, or a direct customer's attribution).
NOT_FOUND = "not_found"
# ``PartnerError.code`` of the 422 answered when an Idempotency-Key is reused with another body.
IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"


class PartnerError(msgspec.Struct, frozen=True):
    code: str
    message: str = ""


class Tier(msgspec.Struct, frozen=True, rename="camel"):
    """A programme tier; ``commission_bp`` is the commission rate in basis points."""

    name: TierName
    commission_bp: Annotated[int, msgspec.Meta(ge=0, le=10_000)]


class TierList(msgspec.Struct, frozen=True):
    items: list[Tier]


class Partner(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    name: str
    tier: TierName
    payout_currency: str = "usd"
    status: Literal["active", "suspended", "terminated"] = "active"


class PartnerList(msgspec.Struct, frozen=True):
    items: list[Partner]


class Attribution(msgspec.Struct, frozen=True, rename="camel"):
    """Which partner resells ``customer`` (body of ``GET /partner/v1/attributions/{customer}``);
    ``deal_id`` names the registered deal that attributed it, if any."""

    customer: str
    partner: str
    tier: TierName
    commission_bp: int
    deal_id: str | None = None


class SettlementLineIn(msgspec.Struct, frozen=True, rename="camel"):
    """One commission paid in a settlement."""

    commission_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    invoice_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    amount: Amount


class SettlementIn(msgspec.Struct, frozen=True, rename="camel"):
    """Body of ``POST /partner/v1/settlements``: pay ``partner`` ``total`` (the sum of the
    lines' amounts) in ``currency``. ``id`` is the caller's deterministic settlement id."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    partner: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    currency: Annotated[str, msgspec.Meta(pattern="^[a-z]{3}$")]
    period_start: str
    period_end: str
    lines: Annotated[list[SettlementLineIn], msgspec.Meta(min_length=1, max_length=10_000)]
    total: Amount


class SettlementReceipt(msgspec.Struct, frozen=True, rename="camel"):
    """The portal's record of a settlement (the statement line a partner sees)."""

    id: str
    partner: str
    currency: str
    total: int
    lines: list[SettlementLineIn]
    idempotency_key: str
    recorded_at: float
    status: Literal["recorded"] = "recorded"


class SettlementList(msgspec.Struct, frozen=True):
    """Body of ``GET /partner/v1/settlements?partner=``: settlements in recording order."""

    items: list[SettlementReceipt]


# -- Deals (registration and approval, delivered as signed webhooks) --------------------------
#
# - ``POST /partner/v1/deal-runs`` starts a run of N seeded deals; each is delivered to the
#   subscriber as ``DealEvent`` webhooks, ``deal.registered`` then ``deal.approved`` or
#   ``deal.rejected``, signed like billing's (``t=…,v1=…``) under ``DEAL_SIGNATURE_HEADER``.
# - ``GET /partner/v1/deals/{id}`` → ``PartnerDeal`` (its latest version): what a subscriber
#   reads to enrich a deal (customer, products, term).

__all__ += ["DEAL_SIGNATURE_HEADER", "DealEvent", "DealEventData", "DealItem", "PartnerDeal"]

DEAL_SIGNATURE_HEADER = "Partner-Signature"


class DealItem(msgspec.Struct, frozen=True, rename="camel"):
    """A product of the deal and how many units the customer takes."""

    product: str
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class PartnerDeal(msgspec.Struct, frozen=True, rename="camel"):
    """A registered deal: ``partner`` resells ``items`` to ``customer`` for ``term_months``
    from ``start_date`` (``YYYY-MM-DD``). ``version`` 1 is the registration, 2 the decision:
    ``approved`` (with ``discount_bp`` off list price, valid ``valid_from``..``valid_until``)
    or ``rejected`` (with ``rejection_reason``). ``currency`` is upper-case ISO-4217 (CPQ's
    spelling); ``estimated_amount`` is list price x quantity per term month, in minor units.
    """

    id: PathId  # goes into /partner/v1/deals/{id} and /revenue/v1/contracts/{deal}
    partner: str
    customer: str
    prospect_name: str
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
    items: Annotated[list[DealItem], msgspec.Meta(min_length=1, max_length=200)]
    estimated_amount: Amount
    term_months: Annotated[int, msgspec.Meta(ge=1, le=120)]
    start_date: str
    expected_close: str
    created: int
    status: Literal["registered", "approved", "rejected"] = "registered"
    version: Annotated[int, msgspec.Meta(ge=1)] = 1
    decided: int | None = None
    discount_bp: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    approver: str | None = None
    valid_from: str | None = None
    valid_until: str | None = None
    rejection_reason: str = ""
    object: str = "deal"


class DealEventData(msgspec.Struct, frozen=True):
    object: PartnerDeal


class DealEvent(msgspec.Struct, frozen=True):
    """A deal webhook: ``type`` is ``deal.registered``, ``deal.approved`` or
    ``deal.rejected``; ``created`` unix seconds."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    type: str
    created: int
    data: DealEventData
    livemode: bool = False
    object: str = "event"
