"""Every canonical message as data: its type tag, data domain, lane and kind.

One table drives the subjects (``Subjects.for_type``), the authority check, the JSON Schema
export and the AsyncAPI document, so adding a message is one row here plus its member in the
``Payload`` union (a test keeps the two equal).

Kinds: an ``evt`` states a fact an authoritative platform reports; a ``cmd`` asks a platform to
do something (the gateway issues commands; the addressed platform is the domain's authority).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from ._billing import InvoiceIssued, InvoiceIssuedV2, InvoiceIssuedV3
from ._catalog import PriceUpserted, ProductUpserted
from ._commission import CommissionAccrued, PartnerSettlementIssued
from ._credit import CreditMemoIssued
from ._deal import DealApproved, DealRegistered, DealRejected
from ._ledger import JournalEntryPosted, PostJournalEntry
from ._order import OrderBooked
from ._partner import CustomerUpserted, PartnerTierChanged, PartnerUpserted
from ._payment import PaymentReceived
from ._revenue import RevenueScheduleUpdated
from ._subscription import (
    SubscriptionActivated,
    SubscriptionAmended,
    SubscriptionCancelled,
    SubscriptionRenewed,
)
from ._usage import UsageRecorded

__all__ = ["MESSAGES", "MESSAGE_SPECS", "MessageSpec", "message_spec"]


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One canonical message type. ``subject_type`` overrides the tag in its subject (only
    for the journal command, whose subject predates this table)."""

    cls: type[Any]
    domain: str
    lane: str
    kind: Literal["evt", "cmd"]
    subject_type: str | None = None

    @property
    def type(self) -> str:
        """The type tag, version included (``invoice.issued.v1``)."""
        tag: str = self.cls.__struct_config__.tag
        return tag

    @property
    def summary(self) -> str:
        """The first line of the class docstring."""
        return (self.cls.__doc__ or self.type).strip().splitlines()[0]


_ = MessageSpec
MESSAGES: tuple[MessageSpec, ...] = (
    # commercial: master data, deals, orders and the subscription lifecycle
    _(CustomerUpserted, "customer", "commercial", "evt"),
    _(PartnerUpserted, "partner", "commercial", "evt"),
    _(PartnerTierChanged, "partner", "commercial", "evt"),
    _(ProductUpserted, "product", "commercial", "evt"),
    _(PriceUpserted, "price", "commercial", "evt"),
    _(DealRegistered, "deal", "commercial", "evt"),
    _(DealApproved, "deal", "commercial", "evt"),
    _(DealRejected, "deal", "commercial", "evt"),
    _(OrderBooked, "order", "commercial", "evt"),
    _(SubscriptionActivated, "subscription", "commercial", "evt"),
    _(SubscriptionAmended, "subscription", "commercial", "evt"),
    _(SubscriptionRenewed, "subscription", "commercial", "evt"),
    _(SubscriptionCancelled, "subscription", "commercial", "evt"),
    # billing: documents that become ledger postings
    _(InvoiceIssued, "invoice", "billing", "evt"),
    _(InvoiceIssuedV2, "invoice", "billing", "evt"),
    _(InvoiceIssuedV3, "invoice", "billing", "evt"),
    _(CreditMemoIssued, "credit_memo", "billing", "evt"),
    _(PaymentReceived, "payment", "billing", "evt"),
    _(PostJournalEntry, "ledger", "billing", "cmd", subject_type="erp.journal.v1"),
    _(JournalEntryPosted, "ledger", "billing", "evt"),
    # usage: high volume, batched
    _(UsageRecorded, "usage", "usage", "evt"),
    # revenue and partner money
    _(RevenueScheduleUpdated, "revenue_schedule", "revpartner", "evt"),
    _(CommissionAccrued, "commission", "revpartner", "evt"),
    _(PartnerSettlementIssued, "settlement", "revpartner", "evt"),
)
del _

MESSAGE_SPECS: Mapping[str, MessageSpec] = MappingProxyType({m.type: m for m in MESSAGES})


def message_spec(type_: str) -> MessageSpec:
    """The row for a type tag. Raises ``KeyError`` for a type that is not canonical."""
    return MESSAGE_SPECS[type_]
