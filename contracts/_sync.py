"""The synchronous lane: pricing validation and order acceptance, request and reply.

These are the gateway's own request/reply messages (NATS services ``<prefix>.sync.pricing.
validate`` and ``<prefix>.sync.order.accept``, and the same over HTTP at
``POST /sync/v1/pricing/validate`` and ``POST /sync/v1/orders/accept`` on the gateway's admin
listener). Other languages call
them, so they travel as JSON, never msgpack. Readers are tolerant of unknown fields, as
everywhere; money is integer minor units.

A reply is a ``PricingDecision``/``OrderDecision`` (tag ``type``) whose ``status`` is
``accepted``, ``rejected`` (with a ``code``, and a ``path`` when one field is to blame) or
``accepted_pending_validation``: CPQ did not answer within the caller's deadline, and the
final decision follows as a ``SyncDecided`` event on the commercial lane
(``follow_up_subject``), published once (``Nats-Msg-Id`` derived from the request id). A
request that cannot be processed at all (malformed, bad deadline, overloaded, CPQ down)
gets a ``SyncError`` with a code and a JSON path.

Deadlines: the caller's budget in milliseconds, from the ``Erpgw-Deadline-Ms`` header or the
``deadline_ms`` field (the smaller wins; the gateway's default when neither is given), counted
from when the gateway received the request. It bounds how long the caller waits for CPQ.

``SyncDecided`` is deliberately not a canonical ``Payload``: it is the gateway's own answer,
not a fact from a domain's authority (the authority table has no gateway-owned domain), so it
travels as JSON on ``<prefix>.commercial.sync.>`` beside — never inside — the canonical
``<prefix>.commercial.evt.>`` envelopes.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec

from ._fields import Amount, Id, RateBp, Timestamp
from ._invariants import (
    require_known_currency,
    require_lines_sum,
    require_non_negative,
    violation,
)
from ._money import Currency

__all__ = [
    "DEADLINE_HEADER",
    "DealTerms",
    "OrderDecision",
    "OrderRequest",
    "PricedItem",
    "Pricing",
    "PricingDecision",
    "PricingRequest",
    "SyncDecided",
    "SyncError",
    "SyncItem",
    "SyncOperation",
    "SyncReply",
    "SyncStatus",
]

DEADLINE_HEADER = "Erpgw-Deadline-Ms"
"""Request header (NATS and HTTP): the caller's remaining budget in milliseconds."""

SyncOperation = Literal["pricing.validate", "order.accept"]
SyncStatus = Literal["accepted", "rejected", "accepted_pending_validation"]
DeadlineMs = Annotated[int, msgspec.Meta(ge=1, le=600_000,
                                         description="the caller's budget in milliseconds")]
Text = Annotated[str, msgspec.Meta(max_length=2000)]


class SyncItem(msgspec.Struct, frozen=True, kw_only=True):
    """One product and how many units of it."""

    product_id: Id
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class DealTerms(msgspec.Struct, frozen=True, kw_only=True):
    """The approved deal the request is priced under: the discount the partner may give
    (``DealApproved.discount_bp``) and, optionally, the last day it is valid."""

    deal_id: Id
    approved_discount_bp: RateBp
    valid_until: date | None = None


Items = Annotated[tuple[SyncItem, ...], msgspec.Meta(min_length=1, max_length=500)]


class PricingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Price ``items`` in ``currency`` at ``discount_bp`` off list, and say whether that
    discount is allowed (under ``deal`` if given, else the gateway's configured maximum)."""

    request_id: Id | None = None
    currency: Currency
    items: Items
    discount_bp: RateBp = 0
    deal: DealTerms | None = None
    customer_id: Id | None = None
    partner_id: Id | None = None
    deadline_ms: DeadlineMs | None = None

    def __post_init__(self) -> None:
        require_known_currency(self.currency)


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Accept order ``order_id`` for ``customer_id`` if it prices as the customer was quoted
    (``expected_total``, when given) with an allowed discount."""

    request_id: Id | None = None
    order_id: Id
    quote_id: Id | None = None
    customer_id: Id
    partner_id: Id | None = None
    currency: Currency
    items: Items
    discount_bp: RateBp = 0
    deal: DealTerms | None = None
    expected_total: Amount | None = None
    deadline_ms: DeadlineMs | None = None

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "expected_total")


class PricedItem(msgspec.Struct, frozen=True, kw_only=True):
    """A priced item: ``quantity`` x ``list_unit_amount`` == ``amount``."""

    product_id: Id
    quantity: int
    list_unit_amount: Amount
    amount: Amount

    def __post_init__(self) -> None:
        require_non_negative(self, "list_unit_amount", "amount")
        if self.quantity * self.list_unit_amount != self.amount:
            raise violation("line.amount_mismatch",
                            f"quantity {self.quantity} x list_unit_amount "
                            f"{self.list_unit_amount} != amount {self.amount}", "amount")


class Pricing(msgspec.Struct, frozen=True, kw_only=True):
    """CPQ's price: the lines sum to ``subtotal``; ``subtotal - discount == total``."""

    currency: Currency
    lines: tuple[PricedItem, ...]
    subtotal: Amount
    discount_bp: RateBp
    discount: Amount
    total: Amount

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "subtotal", "discount", "total")
        require_lines_sum((line.amount for line in self.lines), self.subtotal, "subtotal")
        if self.subtotal - self.discount != self.total:
            raise violation("document.total_mismatch",
                            f"subtotal {self.subtotal} - discount {self.discount} != total "
                            f"{self.total}", "total")


class PricingDecision(msgspec.Struct, frozen=True, kw_only=True,
                      tag="pricing.decision.v1", tag_field="type"):
    """The answer to a ``PricingRequest`` (see the module docstring for ``status``)."""

    request_id: Id
    status: SyncStatus
    code: str = ""
    message: Text = ""
    path: str | None = None
    requested_discount_bp: RateBp = 0
    approved_discount_bp: RateBp = 0
    pricing: Pricing | None = None
    decided_at: Timestamp
    follow_up_subject: str | None = None


class OrderDecision(msgspec.Struct, frozen=True, kw_only=True,
                    tag="order.decision.v1", tag_field="type"):
    """The answer to an ``OrderRequest``: ``accepted`` means the order may be booked."""

    request_id: Id
    order_id: Id
    status: SyncStatus
    code: str = ""
    message: Text = ""
    path: str | None = None
    requested_discount_bp: RateBp = 0
    approved_discount_bp: RateBp = 0
    pricing: Pricing | None = None
    decided_at: Timestamp
    follow_up_subject: str | None = None


class SyncError(msgspec.Struct, frozen=True, kw_only=True,
                tag="sync.error.v1", tag_field="type"):
    """The request could not be decided: ``code`` says why (docs/errors.md), ``path`` which
    part of the request (a JSON path, or the header name) is to blame. ``retryable`` says
    whether the same request may succeed later (overload, CPQ unavailable)."""

    code: str
    message: Text
    path: str = "$"
    retryable: bool = False
    request_id: Id | None = None


SyncReply = PricingDecision | OrderDecision | SyncError
"""What a caller decodes from any reply of the synchronous lane."""


class SyncDecided(msgspec.Struct, frozen=True, kw_only=True,
                  tag="sync.decided.v1", tag_field="type"):
    """The final decision on a request first answered ``accepted_pending_validation``,
    published on ``<prefix>.commercial.sync.<pricing|order>.decided.v1``.

    ``decision.status`` is ``accepted`` or ``rejected`` (never pending); a request CPQ could
    not price in ``cpq.timeout_s`` is ``rejected`` with code ``sync.validation_failed``.
    ``event_id`` is also the message's ``Nats-Msg-Id``.
    """

    event_id: Id
    request_id: Id
    operation: SyncOperation
    received_at: Timestamp
    decision: PricingDecision | OrderDecision
    traceparent: str | None = None
