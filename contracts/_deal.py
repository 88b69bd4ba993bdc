"""Partner deal registration and its approval (authority: the partner portal).

A partner registers an opportunity to protect it; the vendor approves it (with the discount
the partner may pass on, valid for a period) or rejects it. The approved discount is what the
order lines of the deal may carry (``OrderBooked.deal_id``).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

import msgspec

from ._fields import Amount, Id, RateBp, Timestamp
from ._invariants import require_known_currency, require_non_negative, require_ordered
from ._money import Currency

__all__ = ["DealApproved", "DealRegistered", "DealRejected"]

Reason = Annotated[str, msgspec.Meta(max_length=2000)]


class DealRegistered(msgspec.Struct, frozen=True, kw_only=True,
                     tag="deal.registered.v1", tag_field="type"):
    """A partner registered a deal. ``customer_id`` is empty until the prospect is a customer."""

    deal_id: Id
    partner_id: Id
    prospect_name: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    customer_id: Id | None = None
    currency: Currency
    estimated_amount: Amount
    expected_close: date
    registered_at: Timestamp
    product_ids: Annotated[tuple[Id, ...], msgspec.Meta(max_length=200)] = ()

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "estimated_amount")


class DealApproved(msgspec.Struct, frozen=True, kw_only=True,
                   tag="deal.approved.v1", tag_field="type"):
    """The vendor approved a registered deal: the partner owns it from ``valid_from`` to
    ``valid_until`` and may give up to ``discount_bp`` off list price on it."""

    deal_id: Id
    partner_id: Id
    approved_at: Timestamp
    approver: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    discount_bp: RateBp
    valid_from: date
    valid_until: date

    def __post_init__(self) -> None:
        require_ordered(self.valid_from, self.valid_until, "valid_from", "valid_until")


class DealRejected(msgspec.Struct, frozen=True, kw_only=True,
                   tag="deal.rejected.v1", tag_field="type"):
    """The vendor rejected a registered deal (duplicate, channel conflict, not qualified…)."""

    deal_id: Id
    partner_id: Id
    rejected_at: Timestamp
    reason: Reason = ""
