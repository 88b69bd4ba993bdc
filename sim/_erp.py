"""The simulated ERP: journal entries in bulk over an append-only posting record, GL balances,
period close, and an account-wide concurrency limit.

Theory of operation: ``ErpLedger`` is the pure core. It takes decoded items and ``now`` and
returns one ``BulkItemResult`` per item, in order, appending a ``Posting`` for each item it
creates. Idempotency is by ``idempotencyKey``: the ledger remembers, per key, a SHA-256 of the
item's canonical encoding (msgspec's JSON of the decoded struct, so whitespace and key order in
the request do not matter) and the entry id. A key seen with the same digest is ``replayed``
(nothing new recorded); with another digest, ``rejected`` as ``IDEMPOTENCY_KEY_REUSED``.
Rejected items record nothing, not even their key, so a corrected retry can still be created.
The ledger also keeps GL totals per (period, account, currency), where the period is the
``YYYY-MM`` of the entry's ``tranDate``, and the closed periods: a new entry dated in a closed
period is ``rejected`` as ``PERIOD_CLOSED`` (a replay of an entry created before the close is
still ``replayed``). An external id of the form ``<object id>:v<n>`` gives the posting its
``version`` (for the audit's ORDER_OK).

Partial batch failure (F19): with ``item_reject_rate`` on, an item that would be created is
instead ``rejected`` with ``VALIDATION`` when ``rejects_item(seed, externalId, rate)`` says so.
The decision depends only on the seed and the external id (not on timing or batch make-up), so
a resent item is rejected again, as a real validation error would be. The ledger remembers each
rejection (``rejections``, the external ids in answer order) for the audit.

Altered amounts: with ``alter_amount_rate`` on, an item that would be created is created, but
recorded with another amount than sent (``altered_delta``: 1 to 10 % more or less, never zero
or negative), as a platform bug or a manual edit in the ERP would leave it; the GL totals
follow (the first debit and the first credit line change by the same delta, so the entry stays
balanced). Which items is decided per ``externalId`` from the seed (``alters_item``); the ledger
keeps every alteration (``alterations``) for the audit. Only a reconciler comparing the ERP
with billing can find it.

Exchange rates: ``daily_rates(seed, day, base)`` is the day's rate of every currency the
gateway knows in ``base``: a reference value in USD per currency (``USD_VALUE``, rough
market levels) moved by a daily factor within ±2 % drawn from (seed, day, currency), the
cross rate rounded half to even to ``MAX_RATE_DECIMALS`` decimals. Deterministic: the same
seed and day always give the same rates, as a real ERP's published daily rates never change.

``ErpService`` is the HTTP shell: the fault guard (``sim._control``) wraps its handlers, the
concurrency gate answers 429 ``SSS_REQUEST_LIMIT_EXCEEDED`` beyond the account's limit, and the
bulk handler decodes, calls the ledger and encodes. Items within one request are processed in
order, so a key repeated inside one request behaves exactly like a key repeated across requests.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import random
import re
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec
from aiohttp import web

from contracts import CURRENCY_EXPONENTS, MAX_RATE_DECIMALS, format_rate, parse_rate
from contracts.platforms.erp import (
    PERIOD_CLOSED,
    REQUEST_LIMIT_EXCEEDED,
    VALIDATION,
    BulkItemResult,
    BulkRequest,
    BulkResponse,
    ErpError,
    ExchangeRates,
    GlBalance,
    GlBalances,
    Governance,
    JournalEntryIn,
    JournalEntryList,
    PeriodList,
    PeriodStatus,
)

from ._config import SimConfig
from ._control import STALL_S, FaultControl, Handler, current_plan, require
from ._http import SimHTTPError, decode_body, json_response, query_int
from ._records import Posting, split_external_id

__all__ = [
    "STALL_S",
    "USD_VALUE",
    "VALIDATION",
    "Alteration",
    "ErpLedger",
    "ErpService",
    "JournalEntryList",
    "altered_delta",
    "alters_item",
    "check_period",
    "customer_named",
    "daily_rates",
    "rejects_item",
    "validate_entry",
]


def rejects_item(seed: int, external_id: str, rate: float) -> bool:
    """Whether the injected partial batch failure rejects the item ``external_id`` at ``rate``.

    Pure and seeded per external id: the same item is always answered the same way.
    """
    if rate <= 0.0:
        return False
    return random.Random(f"{seed}/erp/reject/{external_id}").random() < rate


def alters_item(seed: int, external_id: str, rate: float) -> bool:
    """Whether the injected amount alteration hits the item ``external_id`` at ``rate``.

    Pure and seeded per external id (like ``rejects_item``, with its own stream).
    """
    if rate <= 0.0:
        return False
    return random.Random(f"{seed}/erp/alter/{external_id}").random() < rate


def altered_delta(seed: int, external_id: str, amount: int) -> int:
    """How much the ERP's record of ``external_id`` differs from the ``amount`` sent: 1 to 10 %
    of it (at least one minor unit), added or taken off, never zero and never leaving a
    non-positive amount. Pure."""
    rng = random.Random(f"{seed}/erp/alter-delta/{external_id}")
    magnitude = max(1, amount * rng.randint(1, 10) // 100)
    if rng.random() < 0.5 and amount - magnitude > 0:
        return -magnitude
    return magnitude


class Alteration(msgspec.Struct, frozen=True):
    """One posting the ERP recorded with another amount than sent (the injected fault)."""

    external_id: str
    entry_id: str
    currency: str
    sent: int
    recorded: int

_BULK_DECODER = msgspec.json.Decoder(BulkRequest)
_ENTRY_DECODER = msgspec.json.Decoder(JournalEntryIn)
_CANONICAL = msgspec.json.Encoder()
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_PERIOD = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
# How an entry names its customer: "Invoice INV-000001 (in_000001) customer cus_00042".
_CUSTOMER = re.compile(r"\bcustomer ([A-Za-z0-9_.:-]+)")


def customer_named(item: JournalEntryIn) -> str | None:
    """The customer id the entry's memo (or else its first line memo naming one) gives as
    ``customer <id>``; ``None`` when none does. The ERP's customer list is built from it."""
    for memo in (item.memo, *(line.memo for line in item.lines)):
        m = _CUSTOMER.search(memo)
        if m is not None:
            return m.group(1)
    return None


# Rough value of one major unit in USD, the level the simulated daily rates move around.
USD_VALUE: Mapping[str, Decimal] = {c: Decimal(v) for c, v in {
    "AED": "0.2723", "AUD": "0.65", "BHD": "2.6525", "BRL": "0.19", "CAD": "0.73",
    "CHF": "1.12", "CLP": "0.00105", "CNY": "0.138", "CZK": "0.043", "DKK": "0.145",
    "EUR": "1.08", "GBP": "1.27", "HKD": "0.128", "HUF": "0.0027", "IDR": "0.000063",
    "ILS": "0.27", "INR": "0.012", "ISK": "0.0072", "JOD": "1.41", "JPY": "0.0066",
    "KRW": "0.00073", "KWD": "3.25", "MXN": "0.055", "MYR": "0.21", "NOK": "0.093",
    "NZD": "0.6", "OMR": "2.6", "PHP": "0.0175", "PLN": "0.25", "SAR": "0.2666",
    "SEK": "0.095", "SGD": "0.74", "THB": "0.028", "TND": "0.32", "TRY": "0.031",
    "TWD": "0.031", "USD": "1", "VND": "0.00004", "ZAR": "0.054",
}.items()}  # fmt: skip
_RATE_QUANTUM = Decimal(1).scaleb(-MAX_RATE_DECIMALS)


def _usd_value(seed: int, day: date, currency: str) -> Decimal:
    if currency == "USD":
        return Decimal(1)
    digest = hashlib.sha256(f"{seed}/fx/{day.isoformat()}/{currency}".encode()).digest()
    move = int.from_bytes(digest[:4], "big") % 4001 - 2000  # -2000..2000 = ±2 %
    return USD_VALUE[currency] * (1 + Decimal(move) / 100_000)


def daily_rates(seed: int, day: date, base: str) -> dict[str, Decimal]:
    """Every known currency's rate in ``base`` on ``day`` (see the module docstring); a rate
    that would round to zero is left out. Raises ``KeyError`` for an unknown ``base``."""
    base_value = _usd_value(seed, day, base)
    out: dict[str, Decimal] = {}
    for currency in sorted(CURRENCY_EXPONENTS):
        if currency == base:
            out[currency] = Decimal(1)
            continue
        rate = (_usd_value(seed, day, currency) / base_value).quantize(
            _RATE_QUANTUM, rounding=ROUND_HALF_EVEN)
        if rate > 0:
            out[currency] = rate
    return out


def check_period(value: str, name: str = "period") -> str:
    """``value`` when it is a ``YYYY-MM`` period; ``SimHTTPError`` 400 naming ``name`` otherwise."""
    if not _PERIOD.match(value):
        raise SimHTTPError(400, "request.invalid", f"{name} must be YYYY-MM, got {value!r}",
                           path=name)
    return value


def validate_entry(item: JournalEntryIn) -> ErpError | None:
    """The business-rule error for ``item``, or ``None`` when the ERP would accept it.

    ``INVALID``: an empty ``idempotencyKey`` or ``externalId``, fewer than two lines, a line
    without exactly one of debit or credit above zero (negative amounts included), a currency
    that is not three upper-case letters, a ``tranDate`` that is not a ``YYYY-MM-DD`` date, or
    currency fields that do not fit (``functionalCurrency`` without ``exchangeRate`` or the
    other way round, the same as ``currency``, a rate that is not an exact decimal above 0).
    ``UNBALANCED``: debits differ from credits. Structure is checked before balance. Raises
    nothing.
    """
    if not item.idempotency_key:
        return ErpError(code="INVALID", message="idempotencyKey must not be empty")
    if not item.external_id:
        return ErpError(code="INVALID", message="externalId must not be empty")
    if len(item.lines) < 2:
        return ErpError(
            code="INVALID", message=f"a journal entry needs at least 2 lines, got {len(item.lines)}"
        )
    for i, line in enumerate(item.lines):
        if line.debit < 0 or line.credit < 0 or (line.debit > 0) == (line.credit > 0):
            return ErpError(
                code="INVALID",
                message=(
                    f"lines[{i}] must have exactly one of debit or credit above zero "
                    f"(debit {line.debit}, credit {line.credit})"
                ),
            )
    if not _CURRENCY.match(item.currency):
        return ErpError(
            code="INVALID", message=f"currency must be 3 upper-case letters, got {item.currency!r}"
        )
    if not _valid_date(item.tran_date):
        return ErpError(
            code="INVALID", message=f"tranDate must be a YYYY-MM-DD date, got {item.tran_date!r}"
        )
    fx_error = _fx_error(item)
    if fx_error is not None:
        return ErpError(code="INVALID", message=fx_error)
    debits = sum(line.debit for line in item.lines)
    credits = sum(line.credit for line in item.lines)
    if debits != credits:
        return ErpError(
            code="UNBALANCED", message=f"debits {debits} != credits {credits} {item.currency}"
        )
    return None


def _fx_error(item: JournalEntryIn) -> str | None:
    """What is wrong with ``item``'s currency fields, or ``None``: a ``functionalCurrency``
    needs an ``exchangeRate`` and the other way round, it differs from ``currency``, and the
    rate is an exact decimal (``parse_rate``)."""
    if item.functional_currency is None and item.exchange_rate is None:
        return None
    if item.functional_currency is None or item.exchange_rate is None:
        return "functionalCurrency and exchangeRate go together"
    if item.functional_currency == item.currency or not _CURRENCY.match(
            item.functional_currency):
        return (f"functionalCurrency {item.functional_currency!r} must be 3 upper-case "
                f"letters other than currency {item.currency!r}")
    try:
        parse_rate(item.exchange_rate)
    except ValueError as exc:
        return f"exchangeRate: {str(exc).partition(': ')[2]}"
    return None


def _valid_date(value: str) -> bool:
    if not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _digest(item: JournalEntryIn) -> bytes:
    return hashlib.sha256(_CANONICAL.encode(item)).digest()


class ErpLedger:
    """The ERP's books: append-only postings, the idempotency-key index, GL totals and closed
    periods. Pure, no I/O.

    ``first_number`` is the number of the next ``JE-<n>`` id, so a reset ledger can continue
    numbering and never reuse an entry id within one sim process.
    """

    def __init__(self, *, first_number: int = 1) -> None:
        self._postings: list[Posting] = []
        self._keys: dict[str, tuple[bytes, str]] = {}
        self._by_external: dict[str, list[Posting]] = {}
        self._totals: dict[tuple[str, str, str], list[int]] = {}
        self._closed: dict[str, float] = {}
        self._next = first_number
        self.dropped = 0
        self.rejections: list[str] = []
        self.alterations: list[Alteration] = []
        self.customers: dict[str, str] = {}  # entry id -> the customer its memo names

    @property
    def postings(self) -> Sequence[Posting]:
        """Every posting, in commit order (``seq`` ascending). Do not mutate."""
        return self._postings

    @property
    def next_number(self) -> int:
        return self._next

    def by_external_id(self, external_id: str) -> list[Posting]:
        """The postings whose external id is ``external_id``, in commit order (a copy)."""
        return list(self._by_external.get(external_id, ()))

    def page(self, after: int, limit: int) -> list[Posting]:
        """Up to ``limit`` postings with ``seq > after``, in commit order."""
        start = bisect.bisect_right(self._postings, after, key=lambda p: p.seq)
        return self._postings[start:start + limit]

    def post(
        self, items: Sequence[JournalEntryIn], now: float, *, drop: Collection[int] = (),
        reject: Collection[int] = (), alter: Mapping[int, int] | None = None,
    ) -> list[BulkItemResult]:
        """Apply ``items`` in order at time ``now``; one result per item. Raises nothing.

        Items whose index is in ``drop`` and that would be created are answered ``created``
        with a fresh id, but nothing is recorded, not even the idempotency key: the injected
        "acknowledged but lost" ERP bug (counted in ``dropped``). Items whose index is in
        ``reject`` and that would be created are answered ``rejected`` with ``VALIDATION``
        and record nothing but the rejection (``rejections``): the injected partial batch
        failure. Rejection wins over a drop. Items whose index is in ``alter`` and that are
        created are recorded with their amount changed by the mapped delta (see the module
        docstring) and listed in ``alterations``; a drop wins over an alteration.
        """
        deltas = alter or {}
        return [self._post_one(item, now, i in drop, i in reject, deltas.get(i, 0))
                for i, item in enumerate(items)]

    def _post_one(
        self, item: JournalEntryIn, now: float, drop: bool, reject: bool = False,
        delta: int = 0,
    ) -> BulkItemResult:
        key = item.idempotency_key
        digest = _digest(item)
        seen = self._keys.get(key)
        if seen is not None:
            if hmac.compare_digest(seen[0], digest):
                return BulkItemResult(idempotency_key=key, status="replayed", id=seen[1])
            return BulkItemResult(
                idempotency_key=key,
                status="rejected",
                error=ErpError(
                    code="IDEMPOTENCY_KEY_REUSED",
                    message=f"idempotencyKey {key!r} was used for a different entry ({seen[1]})",
                ),
            )
        error = validate_entry(item)
        if error is not None:
            return BulkItemResult(idempotency_key=key, status="rejected", error=error)
        period = item.tran_date[:7]
        if period in self._closed:
            return BulkItemResult(
                idempotency_key=key,
                status="rejected",
                error=ErpError(code=PERIOD_CLOSED,
                               message=f"period {period} is closed; post into an open period"),
            )
        if reject:
            self.rejections.append(item.external_id)
            return BulkItemResult(
                idempotency_key=key,
                status="rejected",
                error=ErpError(code=VALIDATION,
                               message=f"externalId {item.external_id!r}: field validation "
                                       "failed (injected partial batch failure)"),
            )
        entry_id = f"JE-{self._next}"
        self._next += 1
        if drop:
            # The lost write takes its idempotency record with it (same transaction), so a
            # later repost under the same key is created, not "replayed".
            self.dropped += 1
            return BulkItemResult(idempotency_key=key, status="created", id=entry_id)
        self._keys[key] = (digest, entry_id)
        _, version = split_external_id(item.external_id)
        sent = sum(line.debit for line in item.lines)
        if delta:
            self.alterations.append(Alteration(item.external_id, entry_id, item.currency, sent,
                                               sent + delta))
        posting = Posting(
            seq=len(self._postings) + 1,
            id=entry_id,
            idempotency_key=key,
            external_id=item.external_id,
            currency=item.currency,
            amount=sent + delta,
            accepted_at=now,
            version=version,
            subsidiary=item.subsidiary,
            functional_currency=item.functional_currency,
            exchange_rate=item.exchange_rate,
        )
        self._postings.append(posting)
        customer = customer_named(item)
        if customer is not None:
            self.customers[entry_id] = customer
        self._by_external.setdefault(item.external_id, []).append(posting)
        debit_moved = credit_moved = not delta
        for line in item.lines:
            totals = self._totals.setdefault((period, line.account, item.currency), [0, 0])
            totals[0] += line.debit
            totals[1] += line.credit
            # The altered amount shows in the GL too, on one debit and one credit line.
            if not debit_moved and line.debit > 0:
                totals[0] += delta
                debit_moved = True
            elif not credit_moved and line.credit > 0:
                totals[1] += delta
                credit_moved = True
        return BulkItemResult(idempotency_key=key, status="created", id=entry_id)

    def balances(self, period: str) -> GlBalances:
        """GL totals of ``period`` (``YYYY-MM``) per account and currency, sorted."""
        rows = [
            GlBalance(account=account, currency=currency, debit=d, credit=c, balance=d - c)
            for (p, account, currency), (d, c) in sorted(self._totals.items())
            if p == period
        ]
        return GlBalances(period=period, closed=period in self._closed, balances=rows)

    def close_period(self, period: str, now: float) -> PeriodStatus:
        """Close ``period`` (idempotent: closing it again keeps the first close time)."""
        closed_at = self._closed.setdefault(period, now)
        return PeriodStatus(period=period, status="closed", closed_at=closed_at)

    def closed_periods(self) -> list[str]:
        return sorted(self._closed)

    def period_status(self, period: str) -> PeriodStatus:
        closed_at = self._closed.get(period)
        return PeriodStatus(period=period, status="open" if closed_at is None else "closed",
                            closed_at=closed_at)


class ErpService:
    """HTTP handlers of the ERP API over one ``ErpLedger``.

    Handlers run in aiohttp's request tasks. Faults and their sleeps live in the shared
    ``FaultControl``; ``gate`` counts the requests in flight and enforces the account-wide
    concurrency limit.
    """

    def __init__(self, config: SimConfig, control: FaultControl | None = None) -> None:
        if config.erp_max_bulk < 1:
            raise ValueError(f"erp_max_bulk must be >= 1, got {config.erp_max_bulk}")
        if config.erp_concurrency_limit < 0:
            raise ValueError(
                f"erp_concurrency_limit must be >= 0, got {config.erp_concurrency_limit}"
            )
        self._seed = config.seed
        self._max_bulk = config.erp_max_bulk
        self._limit = config.erp_concurrency_limit
        self._control = control or FaultControl(config.seed, config.scenario)
        self._drop_rng = random.Random(f"{config.seed}/erp/drop")
        self.ledger = ErpLedger()
        self.in_flight = 0
        self.limited_requests = 0
        # Arrival times of the latest requests (governance reports them: the real rate, F35).
        self.requests = 0
        self.request_times: deque[float] = deque(maxlen=10_000)

    def reset(self) -> None:
        """Forget every posting, key, balance and closed period; entry numbering continues
        (ids stay unique)."""
        self.ledger = ErpLedger(first_number=self.ledger.next_number)
        self._drop_rng = random.Random(f"{self._seed}/erp/drop")
        self.limited_requests = 0
        self.requests = 0
        self.request_times.clear()

    def gate(self, handler: Handler) -> Handler:
        """``handler`` counted against the account's concurrency limit: one request over it
        is answered 429 ``SSS_REQUEST_LIMIT_EXCEEDED`` with ``Retry-After: 1``."""

        async def gated(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            self.request_times.append(time.monotonic())
            if self._limit and self.in_flight >= self._limit:
                self.limited_requests += 1
                self._control.count("erp/account", "concurrency_limit")
                raise SimHTTPError(
                    429, REQUEST_LIMIT_EXCEEDED,
                    f"the account's limit of {self._limit} concurrent requests is reached",
                    headers={"Retry-After": "1"},
                )
            self.in_flight += 1
            try:
                return await handler(request)
            finally:
                self.in_flight -= 1

        return gated

    async def post_bulk(self, request: web.Request) -> web.Response:
        """``POST /erp/v1/journal-entries/bulk``: ``BulkRequest`` in, ``BulkResponse`` out.

        Answers 400 (naming the field) for a body that breaks ``BulkRequest`` and 413 for more
        than ``erp_max_bulk`` items; those commit nothing. Faults are applied around it by the
        guard.
        """
        bulk = await decode_body(request, _BULK_DECODER)
        if len(bulk.items) > self._max_bulk:
            raise SimHTTPError(
                413,
                "request.too_many_items",
                f"a bulk request takes at most {self._max_bulk} items, got {len(bulk.items)}",
                path="$.items",
            )
        return json_response(BulkResponse(results=self._post(bulk.items,
                                                              "erp/journal-entries.bulk")))

    async def post_one(self, request: web.Request) -> web.Response:
        """``POST /erp/v1/journal-entries``: one ``JournalEntryIn``, exactly a bulk request of
        one item. Answers 200 with its ``BulkItemResult``, as the bulk endpoint does per item:
        ``created``, ``replayed`` (the idempotency key was seen: nothing new posted) or
        ``rejected`` (its ``error`` says which business rule). 400 naming the field for a body
        that breaks ``JournalEntryIn``."""
        entry = await decode_body(request, _ENTRY_DECODER)
        (result,) = self._post([entry], "erp/journal-entries")
        return json_response(result)

    def _post(self, items: list[JournalEntryIn], endpoint: str) -> list[BulkItemResult]:
        """Post ``items`` under the request's fault plan (silent drops, per-item rejections,
        altered amounts), counting each injected fault under ``endpoint``."""
        plan = current_plan.get()
        drop: set[int] = set()
        if plan.drop_rate > 0:
            drop = {i for i in range(len(items)) if self._drop_rng.random() < plan.drop_rate}
        reject: set[int] = set()
        if plan.reject_rate > 0:
            reject = {i for i, item in enumerate(items)
                      if rejects_item(self._seed, item.external_id, plan.reject_rate)}
        alter: dict[int, int] = {}
        if plan.alter_rate > 0:
            alter = {i: altered_delta(self._seed, item.external_id,
                                      sum(line.debit for line in item.lines))
                     for i, item in enumerate(items)
                     if alters_item(self._seed, item.external_id, plan.alter_rate)}
        before = self.ledger.dropped
        rejected_before = len(self.ledger.rejections)
        altered_before = len(self.ledger.alterations)
        results = self.ledger.post(items, time.time(), drop=drop, reject=reject,
                                   alter=alter)
        if len(self.ledger.alterations) > altered_before:
            self._control.count(endpoint, "amount_altered",
                                len(self.ledger.alterations) - altered_before)
        if self.ledger.dropped > before:
            self._control.count(endpoint, "silent_drop",
                                self.ledger.dropped - before)
        if len(self.ledger.rejections) > rejected_before:
            self._control.count(endpoint, "item_rejected",
                                len(self.ledger.rejections) - rejected_before)
        return results

    async def lookup(self, request: web.Request) -> web.Response:
        """``GET /erp/v1/journal-entries?externalId=X``: the postings of X; without
        ``externalId``, every posting in commit order after ``after`` (a ``seq``, default 0),
        at most ``limit`` (1..1000, default 100) — how a reconciler pages through the ledger.
        400 naming the parameter when one is malformed."""
        after = query_int(request.query.get("after"), "after", 0, 0, 10**18)
        limit = query_int(request.query.get("limit"), "limit", 100, 1, 1000)
        external_id = request.query.get("externalId")
        if external_id is not None:
            if not external_id:
                require(request, "externalId")
            return json_response(JournalEntryList(items=self.ledger.by_external_id(external_id)))
        return json_response(JournalEntryList(items=self.ledger.page(after, limit)))

    async def gl_balances(self, request: web.Request) -> web.Response:
        """``GET /erp/v1/gl/balances?period=YYYY-MM`` → ``GlBalances`` (400 naming ``period``)."""
        period = check_period(require(request, "period"))
        return json_response(self.ledger.balances(period))

    async def close_period(self, request: web.Request) -> web.Response:
        """``POST /erp/v1/periods/{YYYY-MM}/close`` → ``PeriodStatus`` (idempotent)."""
        period = check_period(request.match_info["period"])
        return json_response(self.ledger.close_period(period, time.time()))

    async def list_periods(self, request: web.Request) -> web.Response:
        """``GET /erp/v1/periods`` → the closed periods as ``PeriodStatus`` items."""
        items = [self.ledger.period_status(p) for p in self.ledger.closed_periods()]
        return json_response(PeriodList(items=items))

    async def exchange_rates(self, request: web.Request) -> web.Response:
        """``GET /erp/v1/exchange-rates?date=YYYY-MM-DD&base=XXX`` → ``ExchangeRates`` (the
        day's rates, ``daily_rates``). 400 naming ``date`` or ``base`` when malformed or
        unknown."""
        raw = require(request, "date")
        if not _valid_date(raw):
            raise SimHTTPError(400, "request.invalid", f"date {raw!r} is not YYYY-MM-DD",
                               path="date")
        base = require(request, "base")
        if base not in USD_VALUE:
            raise SimHTTPError(400, "request.invalid", f"unknown currency {base!r}",
                               path="base")
        day = date.fromisoformat(raw)
        rates = daily_rates(self._seed, day, base)
        return json_response(ExchangeRates(date=day, base=base, rates={
            c: format_rate(r) for c, r in rates.items()}))

    async def governance(self, request: web.Request) -> web.Response:
        """``GET /erp/v1/governance`` → ``Governance`` (not counted against the limit)."""
        return json_response(Governance(
            concurrency_limit=self._limit,
            in_flight=self.in_flight,
            max_bulk_items=self._max_bulk,
            limited_requests=self.limited_requests,
            closed_periods=self.ledger.closed_periods(),
            requests=self.requests,
            request_times=list(self.request_times),
        ))
