"""NetSuite SuiteTalk REST wire formats the ERP's ``netsuite`` dialect speaks (facts from
Oracle's public REST web services documentation; the simulator serves the same shapes).

Record service, journal entries (``/services/rest/record/v1/journalEntry``):

- upsert by external id: ``PUT /services/rest/record/v1/journalEntry/eid:<externalId>`` with
  a ``JournalEntryRecord`` body and header ``X-NetSuite-Idempotency-Key: <uuid>``; success is
  ``204 No Content`` whether the record was created or updated (a ``Location`` header names
  the record). The upsert by external id makes a repeat harmless; the idempotency key is
  NetSuite's de-duplication of asynchronous requests (``Prefer: respond-async``: a repeat
  answers ``400 IDEMPOTENCY_ERROR`` with the first job's ``Location``), sent on every upsert
  so that an asynchronous mode can rely on it; the simulator replays the first answer;
- read: ``GET /services/rest/record/v1/journalEntry/eid:<externalId>`` answers 200 with the
  record (``id`` added) or 404;
- references (``subsidiary``, ``currency``, ``account``) are objects ``{"id": "…"}`` (internal
  id) or ``{"refName": "…"}``; amounts (``debit``/``credit``) are JSON numbers in the
  transaction currency, written here from ``Decimal`` with exactly the currency's ISO-4217
  exponent of fraction digits (``to_decimal``), never through a float.

Errors are RFC 9457-like bodies: ``{"type", "title", "status", "o:errorDetails": [{"detail",
"o:errorCode", "o:errorPath"?}]}`` (``ErrorBody``). Concurrency governance answers 429
(``CONCURRENCY_LIMIT_EXCEEDED``; older integrations see ``SSS_REQUEST_LIMIT_EXCEEDED``), a
missing or wrong signature 401 ``INVALID_LOGIN``.

SuiteQL: ``POST /services/rest/query/v1/suiteql?limit=<n>&offset=<m>`` with header ``Prefer:
transient`` and ``{"q": "<SuiteQL>"}`` answers ``SuiteQlPage`` (``items`` of column → string,
``hasMore``, ``count``, ``offset``, ``totalResults``); the next page is ``offset + count``.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from .._money import from_decimal, to_decimal

__all__ = [
    "ASYNC_JOB_PATH",
    "CONCURRENCY_LIMIT_EXCEEDED",
    "IDEMPOTENCY_ERROR",
    "IDEMPOTENCY_HEADER",
    "INVALID_LOGIN",
    "JOURNAL_PATH",
    "POSTING_PERIOD_PATH",
    "REQUEST_LIMIT_EXCEEDED",
    "SUITEQL_PATH",
    "THROTTLE_CODES",
    "ErrorBody",
    "ErrorDetail",
    "JournalEntryRecord",
    "JournalLine",
    "JournalLines",
    "Ref",
    "SuiteQlPage",
    "SuiteQlRequest",
    "decimal_encoder",
    "idempotency_uuid",
    "journal_path",
    "line_amounts",
]

JOURNAL_PATH = "/services/rest/record/v1/journalEntry"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
ASYNC_JOB_PATH = "/services/rest/async/v1/job"
# o:errorCode of an asynchronous request repeating an idempotency key (Location: its job).
IDEMPOTENCY_ERROR = "IDEMPOTENCY_ERROR"
IDEMPOTENCY_HEADER = "X-NetSuite-Idempotency-Key"

# o:errorCode of the account's concurrency governance (429), current and older forms.
CONCURRENCY_LIMIT_EXCEEDED = "CONCURRENCY_LIMIT_EXCEEDED"
REQUEST_LIMIT_EXCEEDED = "SSS_REQUEST_LIMIT_EXCEEDED"
THROTTLE_CODES = frozenset({CONCURRENCY_LIMIT_EXCEEDED, REQUEST_LIMIT_EXCEEDED})
# o:errorCode of a request whose credentials do not verify (401).
INVALID_LOGIN = "INVALID_LOGIN"

# Namespace of the idempotency UUIDs derived from the gateway's idempotency keys.
_IDEMPOTENCY_NS = uuid.UUID("6f1c1d55-3f0e-5b8a-9a51-5e0f1a2b3c4d")

_ExternalId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


def journal_path(external_id: str) -> str:
    """The record path of the journal entry with ``external_id`` (percent-encoded)."""
    from urllib.parse import quote

    return f"{JOURNAL_PATH}/eid:{quote(external_id, safe='')}"


def idempotency_uuid(idempotency_key: str) -> str:
    """``X-NetSuite-Idempotency-Key`` (a UUID) derived from the posting's idempotency key:
    every attempt at the same posting, from any process, sends the same UUID."""
    return str(uuid.uuid5(_IDEMPOTENCY_NS, idempotency_key))


class Ref(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    """A reference to another record: its internal ``id`` or its ``ref_name``."""

    id: str | None = None
    ref_name: str | None = None


class JournalLine(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of ``line.items``: exactly one of ``debit``/``credit`` (a positive decimal in
    the transaction currency)."""

    account: Ref
    debit: Decimal | None = None
    credit: Decimal | None = None
    memo: str | None = None


class JournalLines(msgspec.Struct, frozen=True):
    items: list[JournalLine]


class JournalEntryRecord(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel",
                         kw_only=True):
    """The journal entry record as sent (upsert body) and read back (``id`` added).
    ``exchangeRate``: units of the subsidiary's base currency per unit of ``currency`` (a
    number; absent: NetSuite takes its own rate of the date)."""

    external_id: _ExternalId | None = None
    subsidiary: Ref | None = None
    currency: Ref
    exchange_rate: Decimal | None = None
    tran_date: date
    memo: str = ""
    line: JournalLines
    id: str | None = None


# The ``o:errorPath`` of NetSuite's refusal of a transaction dated in a closed accounting period
# (``o:errorCode`` ``USER_ERROR``): the gateway reads it as the ERP's ``PERIOD_CLOSED``.
POSTING_PERIOD_PATH = "postingPeriod"


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    detail: str
    error_code: str = msgspec.field(name="o:errorCode")
    error_path: str | None = msgspec.field(default=None, name="o:errorPath")


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """NetSuite's error body (any 4xx/5xx of the REST services)."""

    title: str
    status: int
    details: list[ErrorDetail] = msgspec.field(default_factory=list, name="o:errorDetails")
    type: str = ""

    @property
    def code(self) -> str:
        return self.details[0].error_code if self.details else ""

    @property
    def message(self) -> str:
        return self.details[0].detail if self.details else self.title


class AsyncJob(msgspec.Struct, frozen=True):
    """``GET /services/rest/async/v1/job/<id>``: ``progress`` is ``pending``, ``succeeded``
    or ``failed``; the task list (``…/task``) names the task whose ``…/result`` is the answer
    the synchronous request would have had."""

    id: str
    completed: bool
    progress: str = ""


class AsyncTasks(msgspec.Struct, frozen=True):
    items: list[dict[str, Any]]


__all__ += ["AsyncJob", "AsyncTasks"]


class SuiteQlRequest(msgspec.Struct, frozen=True):
    q: str


class SuiteQlPage(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """One page of a SuiteQL answer: every value is a string (or absent when NULL)."""

    items: list[dict[str, Any]]
    has_more: bool
    count: int
    offset: int
    total_results: int | None = None
    links: list[dict[str, Any]] = msgspec.field(default_factory=list)


def decimal_encoder() -> msgspec.json.Encoder:
    """The JSON encoder of request bodies: ``Decimal`` as a JSON number with its exact text."""
    return msgspec.json.Encoder(decimal_format="number")


def line_amounts(record: JournalEntryRecord, currency: str) -> tuple[int, int]:
    """The record's total debits and credits in minor units of ``currency`` (exact; raises
    ``ValueError`` ``money.inexact`` for an amount finer than the currency allows)."""
    debit = sum(from_decimal(ln.debit, currency) for ln in record.line.items
                if ln.debit is not None)
    credit = sum(from_decimal(ln.credit, currency) for ln in record.line.items
                 if ln.credit is not None)
    return debit, credit


def minor_to_line_amount(amount: int, currency: str) -> Decimal | None:
    """A canonical line side in minor units as a NetSuite amount (``None`` for zero)."""
    return to_decimal(amount, currency) if amount else None


__all__ += ["minor_to_line_amount"]
