"""The ERP's journal-entry API (shaped like NetSuite's REST record service, bulk variant).

``POST /erp/v1/journal-entries/bulk`` with ``{"items": [JournalEntryIn, …]}`` answers ``200``
with one ``BulkItemResult`` per item, in order: ``created``, ``replayed`` (the idempotency key was
seen before: nothing new was posted) or ``rejected`` (a business rule refused it; ``error`` says
which). A whole-request failure is an HTTP error (429 with ``Retry-After``, 5xx).
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "BulkItemResult",
    "BulkRequest",
    "BulkResponse",
    "ErpError",
    "JournalEntryIn",
    "JournalLineIn",
]


class JournalLineIn(msgspec.Struct, frozen=True, rename="camel"):
    account: str
    debit: int = 0
    credit: int = 0
    memo: str = ""


class JournalEntryIn(msgspec.Struct, frozen=True, rename="camel"):
    idempotency_key: str
    external_id: str
    tran_date: str
    currency: str
    memo: str
    lines: list[JournalLineIn]


class BulkRequest(msgspec.Struct, frozen=True):
    items: list[JournalEntryIn]


class ErpError(msgspec.Struct, frozen=True):
    code: str
    message: str


class BulkItemResult(msgspec.Struct, frozen=True, rename="camel"):
    idempotency_key: str
    status: Literal["created", "replayed", "rejected"]
    id: str | None = None
    error: ErpError | None = None


class BulkResponse(msgspec.Struct, frozen=True):
    results: list[BulkItemResult]
