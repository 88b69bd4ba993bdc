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
    "PERIOD_CLOSED",
    "REQUEST_LIMIT_EXCEEDED",
    "VALIDATION",
    "BulkItemResult",
    "BulkRequest",
    "BulkResponse",
    "ErpError",
    "GlBalance",
    "GlBalances",
    "Governance",
    "JournalEntryIn",
    "JournalEntryList",
    "JournalEntryRecord",
    "JournalLineIn",
    "PeriodList",
    "PeriodStatus",
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


# -- Reads, periods and governance (added with the simulator's ERP growth) -----------------------

# ``ErpError.code`` of an item posted into a closed period (a business rejection, not retryable).
PERIOD_CLOSED = "PERIOD_CLOSED"
# ``ErpError.code`` of an item refused by a field validation (a business rejection, not
# retryable); the simulator's partial batch failure (``item_reject_rate``) answers it.
VALIDATION = "VALIDATION"
# Error ``code`` of the 429 answered when the account's concurrent-request limit is reached.
REQUEST_LIMIT_EXCEEDED = "SSS_REQUEST_LIMIT_EXCEEDED"


class JournalEntryRecord(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """One journal entry as the ERP recorded it (append-only, never changed once written).

    The item of ``GET /erp/v1/journal-entries?externalId=…``. ``amount`` is the sum of the
    entry's debits in minor units; ``seq`` its position in the ERP's commit order.
    ``version`` is present when the ``externalId`` names one (``<object id>:v<n>``).
    """

    seq: int
    id: str
    idempotency_key: str
    external_id: str
    currency: str
    amount: int
    accepted_at: float
    version: int | None = None


class JournalEntryList(msgspec.Struct, frozen=True):
    """Body of ``GET /erp/v1/journal-entries?externalId=…``: postings in commit order."""

    items: list[JournalEntryRecord]


class GlBalance(msgspec.Struct, frozen=True):
    """Totals of one account in one currency over a period (minor units);
    ``balance`` = ``debit`` - ``credit``."""

    account: str
    currency: str
    debit: int
    credit: int
    balance: int


class GlBalances(msgspec.Struct, frozen=True):
    """Body of ``GET /erp/v1/gl/balances?period=YYYY-MM``, accounts sorted by
    (account, currency)."""

    period: str
    closed: bool
    balances: list[GlBalance]


class PeriodStatus(msgspec.Struct, frozen=True, rename="camel"):
    """Body of ``POST /erp/v1/periods/{YYYY-MM}/close`` (and of the periods list)."""

    period: str
    status: Literal["open", "closed"]
    closed_at: float | None = None


class PeriodList(msgspec.Struct, frozen=True):
    """Body of ``GET /erp/v1/periods``: the closed periods, sorted."""

    items: list[PeriodStatus]


class Governance(msgspec.Struct, frozen=True, rename="camel"):
    """Body of ``GET /erp/v1/governance``: the account's limits and their use right now.

    ``concurrency_limit`` 0 means unlimited; ``limited_requests`` counts the 429s answered
    with ``SSS_REQUEST_LIMIT_EXCEEDED`` since start (or the last reset).
    """

    concurrency_limit: int
    in_flight: int
    max_bulk_items: int
    limited_requests: int
    closed_periods: list[str]
