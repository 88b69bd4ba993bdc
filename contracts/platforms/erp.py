"""The ERP's journal-entry API (shaped like NetSuite's REST record service, bulk variant).

``POST /erp/v1/journal-entries/bulk`` with ``{"items": [JournalEntryIn, …]}`` answers ``200``
with one ``BulkItemResult`` per item, in order: ``created``, ``replayed`` (the idempotency key was
seen before: nothing new was posted) or ``rejected`` (a business rule refused it; ``error`` says
which). A whole-request failure is an HTTP error (429 with ``Retry-After``, 5xx).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec

from ._ids import PathId

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
    "VendorBillIn",
    "VendorBillLineIn",
    "VendorBillList",
    "VendorBillRecord",
]


class JournalLineIn(msgspec.Struct, frozen=True, rename="camel"):
    account: str
    debit: int = 0
    credit: int = 0
    memo: str = ""


class JournalEntryIn(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """One journal entry. ``subsidiary`` (the legal entity) and ``exchangeRate`` (functional
    major units per transaction major unit, an exact decimal string, with
    ``functionalCurrency``) are optional and omitted when unset."""

    idempotency_key: str
    external_id: str
    tran_date: str
    currency: str
    memo: str
    lines: list[JournalLineIn]
    subsidiary: str | None = None
    functional_currency: str | None = None
    exchange_rate: str | None = None


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
    ``subsidiary``, ``functionalCurrency`` and ``exchangeRate`` are the entry's, as posted
    (absent when it had none).
    """

    seq: int
    id: str
    idempotency_key: str
    external_id: str
    currency: str
    amount: int
    accepted_at: float
    version: int | None = None
    subsidiary: str | None = None
    functional_currency: str | None = None
    exchange_rate: str | None = None


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
    with ``SSS_REQUEST_LIMIT_EXCEEDED`` since start (or the last reset). ``requests`` counts
    every request the account received (limited or not, governance excepted) and
    ``request_times`` gives the arrival times of the latest 10,000 of them, in seconds on the
    simulator's monotonic clock: the request rate a client really produced (F35).
    """

    concurrency_limit: int
    in_flight: int
    max_bulk_items: int
    limited_requests: int
    closed_periods: list[str]
    requests: int = 0
    request_times: list[float] = msgspec.field(default_factory=list)


# -- Payables (vendor bills; added with flow 3, payment to partner settlement) -------------------


_BillAmount = Annotated[int, msgspec.Meta(ge=0)]
_BillId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class VendorBillLineIn(msgspec.Struct, frozen=True, rename="camel"):
    """One expense line of a vendor bill (``account`` is the expense account debited)."""

    account: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    amount: _BillAmount
    memo: str = ""


class VendorBillIn(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """Body of ``POST /erp/v1/vendor-bills`` (header ``Idempotency-Key``): a bill owed to
    ``vendor`` (a partner id), worth the sum of its lines' amounts (minor units). ``amount``,
    when sent, is the client's total and must equal that sum. ``external_id`` is the business
    key (the partner settlement id)."""

    external_id: _BillId
    vendor: _BillId
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
    tran_date: Annotated[str, msgspec.Meta(
        pattern="^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    memo: str
    lines: Annotated[list[VendorBillLineIn], msgspec.Meta(min_length=1, max_length=1000)]
    amount: _BillAmount | None = None


class VendorBillRecord(msgspec.Struct, frozen=True, rename="camel"):
    """A vendor bill as the ERP recorded it (201 created; 200 with ``Idempotent-Replayed``
    for a replay; also the item of the list)."""

    id: str
    seq: int
    idempotency_key: str
    external_id: str
    vendor: str
    currency: str
    amount: int
    accepted_at: float
    status: Literal["open"] = "open"


class VendorBillList(msgspec.Struct, frozen=True):
    """Body of ``GET /erp/v1/vendor-bills`` (optionally ``?externalId=``): bills in commit
    order."""

    items: list[VendorBillRecord]


# -- Sales orders (flow 1, deal to contract) ------------------------------------------------------
#
# ``POST /erp/v1/sales-orders`` (header ``Idempotency-Key``) with ``SalesOrderIn`` →
# ``SalesOrderRecord`` (201 created; 200 with ``Idempotent-Replayed: true`` for the same key
# and body; 422 ``ErpError`` ``IDEMPOTENCY_KEY_REUSED`` for the same key with another body, or
# a business rejection such as ``CREDIT_HOLD``). ``GET /erp/v1/sales-orders?externalId=`` →
# ``SalesOrderList``. ``POST /erp/v1/sales-orders/{id}/close`` with ``SalesOrderClose`` closes
# an order (the record stays, with a reversing entry: nothing is ever deleted); idempotent.
# ``POST /erp/v1/sales-orders/{id}/revise`` with ``SalesOrderRevision`` restates its lines as of
# a later version (flow 5: the subscription was amended, renewed or cancelled).

__all__ += ["CREDIT_HOLD", "ORDER_CLOSED", "SalesOrderClose", "SalesOrderIn", "SalesOrderLine",
            "SalesOrderLineIn", "SalesOrderList", "SalesOrderRecord", "SalesOrderRevision"]

# ``ErpError.code`` of a sales order the ERP refuses for the customer's credit (a business
# rejection: not retryable).
CREDIT_HOLD = "CREDIT_HOLD"
# ``ErpError.code`` of a revision of a closed sales order.
ORDER_CLOSED = "ORDER_CLOSED"


class SalesOrderLineIn(msgspec.Struct, frozen=True, rename="camel"):
    """``quantity`` units of ``product`` at net ``unit_amount`` (minor units, per term); the
    ERP computes the line's amount."""

    product: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    unit_amount: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]


class SalesOrderIn(msgspec.Struct, frozen=True, rename="camel"):
    """Body of ``POST /erp/v1/sales-orders``: ``external_id`` is the business key (the deal
    id), ``currency`` upper-case. The ERP computes the amounts and the total."""

    external_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    customer: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
    tran_date: date
    lines: Annotated[list[SalesOrderLineIn], msgspec.Meta(min_length=1, max_length=1000)]
    memo: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    subscription: str | None = None


class SalesOrderLine(msgspec.Struct, frozen=True, rename="camel"):
    """A line as the ERP keeps it: ``amount`` = ``quantity`` x ``unit_amount``."""

    product: str
    quantity: int
    unit_amount: int
    amount: int


class SalesOrderRecord(msgspec.Struct, frozen=True, rename="camel"):
    """A sales order as the ERP keeps it. A closed order keeps its lines and total;
    ``reversal_id`` names the entry that reversed it."""

    id: PathId  # goes into /erp/v1/sales-orders/{id}/revise and .../close
    external_id: str
    idempotency_key: str
    customer: str
    currency: str
    total: int
    lines: list[SalesOrderLine]
    tran_date: date
    created_at: float
    status: Literal["open", "closed"] = "open"
    closed_at: float | None = None
    close_reason: str = ""
    reversal_id: str | None = None
    subscription: str | None = None
    version: int = 1


class SalesOrderRevision(msgspec.Struct, frozen=True, rename="camel"):
    """Body of ``POST /erp/v1/sales-orders/{id}/revise`` (flow 5): the order's lines restated
    as of ``version`` (the subscription's). The same version and body again is a replay; a
    version not above the order's is ``409 STALE_VERSION`` (or ``VERSION_CONFLICT`` for the same
    version with other lines); a closed order is ``422 ORDER_CLOSED``."""

    version: Annotated[int, msgspec.Meta(ge=2, le=2**31)]
    lines: Annotated[list[SalesOrderLineIn], msgspec.Meta(min_length=1, max_length=1000)]
    memo: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class SalesOrderList(msgspec.Struct, frozen=True):
    """Body of ``GET /erp/v1/sales-orders?externalId=``: orders in creation order."""

    items: list[SalesOrderRecord]


class SalesOrderClose(msgspec.Struct, frozen=True):
    """Body of ``POST /erp/v1/sales-orders/{id}/close``: why (kept on the order)."""

    reason: str = ""


# -- customers (GET /erp/v1/customers) -------------------------------------------------------


class ErpCustomer(msgspec.Struct, frozen=True, rename="camel"):
    """A customer as the ERP knows it from the journal entries posted for it: ``entity_id`` is
    the billing customer id the entry's memo names (``… customer cus_00042``), ``postings``
    how many entries name it, ``amount`` their amounts per currency (minor units), and when
    the first and the last of them were committed (unix seconds)."""

    entity_id: str
    postings: int
    amount: dict[str, int]
    first_posted_at: float
    last_posted_at: float


class ErpCustomerList(msgspec.Struct, frozen=True):
    """Body of ``GET /erp/v1/customers``: customers sorted by ``entityId``."""

    items: list[ErpCustomer]


__all__ += ["ErpCustomer", "ErpCustomerList"]


# -- exchange rates (GET /erp/v1/exchange-rates?date=YYYY-MM-DD&base=XXX) ------------------------


class ExchangeRates(msgspec.Struct, frozen=True):
    """Body of ``GET /erp/v1/exchange-rates?date=&base=``: the day's rate of every currency
    the ERP knows in ``base`` (major units of ``base`` per major unit of the currency), each an
    exact decimal string; ``base`` itself is ``"1"``. A day's rates never change."""

    date: date
    base: str
    rates: dict[str, str]


__all__ += ["ExchangeRates"]
