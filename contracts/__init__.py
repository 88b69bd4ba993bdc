"""Canonical data contracts: messages, money, ids, errors, subjects. Stdlib + msgspec only."""

from ._billing import InvoiceIssued, InvoiceLine
from ._deadletter import DeadLetter
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
from ._ids import derive_id, new_id
from ._ledger import JournalLine, PostJournalEntry
from ._message import Envelope, JsonCodec, MsgpackCodec, Payload, contract_error, make_envelope
from ._money import CURRENCY_EXPONENTS, Currency, Money, check_currency, format_amount
from ._subjects import LANES, Subjects

__all__ = [
    "CURRENCY_EXPONENTS",
    "LANES",
    "Broken",
    "BusinessKey",
    "Closed",
    "ContractError",
    "Currency",
    "DeadLetter",
    "Envelope",
    "GatewayError",
    "InvoiceIssued",
    "InvoiceLine",
    "JournalLine",
    "JsonCodec",
    "Money",
    "MsgpackCodec",
    "Payload",
    "Permanent",
    "Platform",
    "PostJournalEntry",
    "Retryable",
    "SignatureError",
    "Subjects",
    "check_currency",
    "contract_error",
    "derive_id",
    "format_amount",
    "make_envelope",
    "new_id",
]
