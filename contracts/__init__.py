"""Canonical data contracts: messages, money, ids, errors, subjects. Stdlib + msgspec only.

The model at a glance, the authority table, the evolution rules and every error code:
docs/contracts.md. JSON Schema / AsyncAPI generation and the compatibility checker live in
``contracts.schema`` (imported on demand: the hot path never needs it).
"""

from ._authority import AUTHORITY, authority_for, check_authority, check_envelope_authority
from ._billing import (
    InvoiceIssued,
    InvoiceIssuedV2,
    InvoiceIssuedV3,
    InvoiceLine,
    InvoiceLineV3,
    InvoiceRead,
    LineTax,
    TaxLine,
    invoice_v2,
    revenue_by_line,
    tax_by_jurisdiction,
)
from ._catalog import (
    OneTimeTerms,
    PriceTerms,
    PriceUpserted,
    ProductUpserted,
    RecurringTerms,
    UsageTerms,
)
from ._commission import CommissionAccrued, PartnerSettlementIssued, SettlementLine
from ._credit import CreditMemoIssued, CreditMemoLine
from ._deadletter import DeadLetter
from ._deal import DealApproved, DealRegistered, DealRejected
from ._drift import unknown_fields
from ._envelope import BusinessKey, Platform
from ._errors import (
    Broken,
    Closed,
    ContractError,
    GatewayError,
    Permanent,
    Retryable,
    SignatureError,
)
from ._fields import MAX_AMOUNT
from ._fx import MAX_RATE_DECIMALS, convert, format_rate, parse_rate
from ._ids import derive_id, new_id
from ._ledger import JournalEntryPosted, JournalLine, PostJournalEntry
from ._message import (
    Envelope,
    JsonCodec,
    MsgpackCodec,
    Payload,
    ambient_traceparent,
    contract_error,
    make_envelope,
)
from ._money import (
    CURRENCY_EXPONENTS,
    Currency,
    Money,
    allocate,
    allocate_money,
    apply_rate_bp,
    check_currency,
    format_amount,
    from_decimal,
    split_evenly,
    to_decimal,
)
from ._order import OrderBooked, OrderLine
from ._partner import CustomerUpserted, PartnerTier, PartnerTierChanged, PartnerUpserted
from ._payment import PaymentApplication, PaymentReceived
from ._privacy import PERSONAL_FIELDS, redact
from ._registry import MESSAGE_SPECS, MESSAGES, MessageSpec, message_spec
from ._revenue import RecognitionLine, RevenueScheduleUpdated
from ._subjects import LANES, Subjects
from ._subscription import (
    SubscriptionActivated,
    SubscriptionAmended,
    SubscriptionCancelled,
    SubscriptionItem,
    SubscriptionRenewed,
)
from ._sync import (
    DEADLINE_HEADER,
    DealTerms,
    OrderDecision,
    OrderRequest,
    PricedItem,
    Pricing,
    PricingDecision,
    PricingRequest,
    SyncDecided,
    SyncError,
    SyncItem,
    SyncOperation,
    SyncReply,
    SyncStatus,
)
from ._usage import UsageRecorded

__all__ = [
    "AUTHORITY",
    "CURRENCY_EXPONENTS",
    "DEADLINE_HEADER",
    "LANES",
    "MAX_AMOUNT",
    "MAX_RATE_DECIMALS",
    "MESSAGES",
    "MESSAGE_SPECS",
    "PERSONAL_FIELDS",
    "Broken",
    "BusinessKey",
    "Closed",
    "CommissionAccrued",
    "ContractError",
    "CreditMemoIssued",
    "CreditMemoLine",
    "Currency",
    "CustomerUpserted",
    "DeadLetter",
    "DealApproved",
    "DealRegistered",
    "DealRejected",
    "DealTerms",
    "Envelope",
    "GatewayError",
    "InvoiceIssued",
    "InvoiceIssuedV2",
    "InvoiceIssuedV3",
    "InvoiceLine",
    "InvoiceLineV3",
    "InvoiceRead",
    "JournalEntryPosted",
    "JournalLine",
    "JsonCodec",
    "LineTax",
    "MessageSpec",
    "Money",
    "MsgpackCodec",
    "OneTimeTerms",
    "OrderBooked",
    "OrderDecision",
    "OrderLine",
    "OrderRequest",
    "PartnerSettlementIssued",
    "PartnerTier",
    "PartnerTierChanged",
    "PartnerUpserted",
    "Payload",
    "PaymentApplication",
    "PaymentReceived",
    "Permanent",
    "Platform",
    "PostJournalEntry",
    "PriceTerms",
    "PriceUpserted",
    "PricedItem",
    "Pricing",
    "PricingDecision",
    "PricingRequest",
    "ProductUpserted",
    "RecognitionLine",
    "RecurringTerms",
    "Retryable",
    "RevenueScheduleUpdated",
    "SettlementLine",
    "SignatureError",
    "Subjects",
    "SubscriptionActivated",
    "SubscriptionAmended",
    "SubscriptionCancelled",
    "SubscriptionItem",
    "SubscriptionRenewed",
    "SyncDecided",
    "SyncError",
    "SyncItem",
    "SyncOperation",
    "SyncReply",
    "SyncStatus",
    "TaxLine",
    "UsageRecorded",
    "UsageTerms",
    "allocate",
    "allocate_money",
    "ambient_traceparent",
    "apply_rate_bp",
    "authority_for",
    "check_authority",
    "check_currency",
    "check_envelope_authority",
    "contract_error",
    "convert",
    "derive_id",
    "format_amount",
    "format_rate",
    "from_decimal",
    "invoice_v2",
    "make_envelope",
    "message_spec",
    "new_id",
    "parse_rate",
    "redact",
    "revenue_by_line",
    "split_evenly",
    "tax_by_jurisdiction",
    "to_decimal",
    "unknown_fields",
]
