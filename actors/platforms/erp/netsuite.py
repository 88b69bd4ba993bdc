"""The ``netsuite`` dialect: SuiteTalk REST, one upsert per journal entry.

NetSuite REST has no bulk journal endpoint, so a batch is many concurrent upserts
(``PUT /services/rest/record/v1/journalEntry/eid:<externalId>``), exactly ``concurrency`` of
them in flight (the account's concurrency limit: configure ``erp.concurrency`` to what the
account allows, minus what other integrations of the account use). Each request is one
guarded call (``actors.platforms.guarded_call``): the breaker plus one permit of the
ERP account's budget, signed by the configured credentials right before it leaves (a fresh
OAuth nonce and timestamp per attempt).

Answers, per entry:

- ``204``: durable. ``created`` unless the entry was looked up first (below);
- ``429`` or an error body whose ``o:errorCode`` is ``CONCURRENCY_LIMIT_EXCEEDED`` /
  ``SSS_REQUEST_LIMIT_EXCEEDED`` (whatever the status): throttling, never a rejection. The
  budget is told (it holds every permit for ``Retry-After`` and lowers its rate) and the entry
  is sent again, up to ``throttle_retries`` times; past that the batch is retried later;
- ``401``/``403``: the credentials are wrong: ``erp.unauthorized`` (retryable, counted as a
  fault: the breaker opens and the work waits in its stream, nothing is dead-lettered);
- another ``4xx``: ``rejected`` with NetSuite's ``o:errorCode`` (``USER_ERROR``,
  ``INVALID_KEY_OR_REF``...); the poster dead-letters it as ``erp.<code in lower case>``; one
  whose ``o:errorPath`` is ``postingPeriod`` (a date in a closed accounting period) is
  ``rejected`` ``PERIOD_CLOSED``, as the bulk API says it, so ``erp.closed_period`` applies;
- ``5xx``, timeouts, connection errors, the breaker open: the batch is not durable; the
  remaining entries are not started and the call raises that error (the poster naks the batch).

Created or replayed: NetSuite answers an upsert ``204`` either way; the upsert by external id
makes a repeat harmless, and ``X-NetSuite-Idempotency-Key`` (a UUID derived from the posting's
idempotency key and date; NetSuite de-duplicates asynchronous requests by it) does not say
"replayed" for a synchronous request. So an entry whose delivery may have reached NetSuite
before (the poster passes its key in ``redelivered``) is first read back
(``GET .../eid:<externalId>``): found with the same amounts, it is ``replayed`` and not sent
again; found with other amounts, it is ``rejected`` ``DUPLICATE_EXTERNAL_ID`` (a posted entry
is never overwritten); not found, it is upserted and ``created``. First deliveries go straight
to the upsert (one request per entry in the common case).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from decimal import Decimal
from urllib.parse import urlencode, urlsplit

import anyio
import msgspec

from contracts import GatewayError, PostJournalEntry, Retryable, from_decimal, to_decimal
from contracts.platforms import netsuite as ns
from contracts.platforms.erp import PERIOD_CLOSED, BulkItemResult, ErpError

from ...infra.http import HttpResponse, PlatformRejected, PlatformUnavailable
from ...resilience import BreakerState
from ..auth import Auth, NoAuth
from ..guard import PlatformGuard, guarded_call
from .client import BeforeSend

__all__ = ["NetSuiteJournalClient", "NetSuiteQuery", "entry_record"]

log = logging.getLogger("erpgw.erp.netsuite")
_enc = ns.decimal_encoder()
_err_dec = msgspec.json.Decoder(ns.ErrorBody)
_rec_dec = msgspec.json.Decoder(ns.JournalEntryRecord)
_page_dec = msgspec.json.Decoder(ns.SuiteQlPage)
DUPLICATE_EXTERNAL_ID = "DUPLICATE_EXTERNAL_ID"


def entry_record(e: PostJournalEntry, *, subsidiary: str | None = None,
                 currency_ids: Mapping[str, str] | None = None,
                 account_ids: Mapping[str, str] | None = None,
                 subsidiary_ids: Mapping[str, str] | None = None) -> ns.JournalEntryRecord:
    """The journal entry record NetSuite is sent for ``e``: amounts converted exactly from
    minor units to the currency's decimals; currencies and accounts by internal id when
    mapped, else the currency by ``refName`` (its ISO code) and the account by its number.
    The subsidiary: ``e``'s entity by its internal id (``subsidiary_ids``, else the entity
    itself), or ``subsidiary`` for an entry naming no entity; ``e``'s exchange rate as the
    record's ``exchangeRate``."""
    cur_id = (currency_ids or {}).get(e.currency)
    accounts = account_ids or {}
    sub_id = (subsidiary_ids or {}).get(e.entity, e.entity) if e.entity else subsidiary
    return ns.JournalEntryRecord(
        external_id=e.external_id,
        subsidiary=ns.Ref(id=sub_id) if sub_id else None,
        currency=ns.Ref(id=cur_id) if cur_id else ns.Ref(ref_name=e.currency),
        exchange_rate=Decimal(e.exchange_rate) if e.exchange_rate else None,
        tran_date=e.posting_date,
        memo=e.memo,
        line=ns.JournalLines(items=[ns.JournalLine(
            account=ns.Ref(id=accounts.get(ln.account, ln.account)),
            debit=to_decimal(ln.debit, e.currency) if ln.debit else None,
            credit=to_decimal(ln.credit, e.currency) if ln.credit else None,
            memo=ln.memo or None) for ln in e.lines]))


def _error_of(exc: PlatformRejected) -> ns.ErrorBody | None:
    try:
        return _err_dec.decode(exc.body)
    except (msgspec.DecodeError, ValueError):
        return None


class _Guarded:
    """Signed, guarded single requests to one NetSuite account (shared by posting and
    queries)."""

    def __init__(self, guard: PlatformGuard, auth: Auth, clock: Callable[[], float]) -> None:
        self.guard = guard
        self.auth = auth
        self._clock = clock
        self.requests = 0
        self.throttled = 0
        self.unauthorized = 0
        self.calls = 0  # guarded calls under way (waiting for a permit or sent)
        self.in_flight = 0  # requests sent and not answered yet (after the permit)
        self.max_in_flight = 0

    async def call(self, method: str, path: str, body: bytes | None,
                   headers: dict[str, str] | None = None) -> HttpResponse:
        http = self.guard.http
        url_of = getattr(http, "url", None)
        url = url_of(path) if url_of is not None else path

        async def send() -> HttpResponse:
            hdrs = dict(headers or {})
            hdrs.update(await self.auth.headers(method, url, body))
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await http.request(method, path, body, headers=hdrs)
            except PlatformUnavailable as exc:
                if exc.code == "http.rate_limited":
                    self.throttled += 1
                raise
            except PlatformRejected as exc:
                err = _error_of(exc)
                code = err.code if err else ""
                if code in ns.THROTTLE_CODES:
                    self.throttled += 1
                    raise PlatformUnavailable(
                        f"NetSuite: {code} ({exc.status})", code="http.rate_limited") from exc
                if exc.status in (401, 403):
                    self.unauthorized += 1
                    raise PlatformUnavailable(
                        f"NetSuite refused the credentials ({exc.status} {code or 'no code'}):"
                        " check erp.auth", code="erp.unauthorized") from exc
                raise
            finally:
                self.in_flight -= 1

        def refuse(retry_after: float) -> PlatformUnavailable:
            return PlatformUnavailable(f"{self.guard.name} circuit breaker is open",
                                       code=self.guard.open_code, retry_after=retry_after)

        while True:
            self.calls += 1
            try:
                return await guarded_call(send, breaker=self.guard.breaker,
                                          limiter=self.guard.limiter, refuse=refuse,
                                          clock=self._clock)
            except PlatformUnavailable as exc:
                breaker = self.guard.breaker
                if (exc.code != self.guard.open_code or breaker is None
                        or breaker.state is not BreakerState.HALF_OPEN):
                    raise
                # Another request of this account holds the half-open breaker's probe slot:
                # wait for its verdict (closed: go on; open again: refused with the open
                # period) instead of failing the batch with no known retry time.
            except GatewayError:
                raise
            except Exception as exc:
                log.warning("NetSuite %s %s failed unexpectedly: %r", method, path, exc)
                raise
            finally:
                self.calls -= 1
            await anyio.sleep(0.05)


class NetSuiteJournalClient:
    dialect = "netsuite"

    def __init__(self, guard: PlatformGuard, *, auth: Auth | None = None,
                 concurrency: int = 5, subsidiary: str | None = None,
                 currency_ids: Mapping[str, str] | None = None,
                 account_ids: Mapping[str, str] | None = None,
                 subsidiary_ids: Mapping[str, str] | None = None, throttle_retries: int = 8,
                 async_requests: bool = False, async_timeout_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.guard = guard
        self.concurrency = concurrency
        self.subsidiary = subsidiary
        self.currency_ids = dict(currency_ids or {})
        self.account_ids = dict(account_ids or {})
        self.subsidiary_ids = dict(subsidiary_ids or {})
        self.throttle_retries = throttle_retries
        self.async_requests = async_requests
        self.async_timeout_s = async_timeout_s
        self._io = _Guarded(guard, auth or NoAuth(), clock)
        self._clock = clock
        self.jobs = 0
        self.lookups = 0
        self.retried_throttled = 0

    @property
    def requests(self) -> int:
        return self._io.requests

    def record(self, e: PostJournalEntry) -> ns.JournalEntryRecord:
        return entry_record(e, subsidiary=self.subsidiary, currency_ids=self.currency_ids,
                            account_ids=self.account_ids, subsidiary_ids=self.subsidiary_ids)

    async def post_journal_entries(self, entries: Sequence[PostJournalEntry], *,
                                   before_send: BeforeSend | None = None,
                                   redelivered: Collection[str] = ()
                                   ) -> list[BulkItemResult]:
        """Upsert ``entries`` with ``concurrency`` requests in flight; see the module
        docstring. Raises the first ``Retryable`` (or other error) that kept an entry from
        being durable, after every request already in flight has ended."""
        results: list[BulkItemResult | None] = [None] * len(entries)
        failures: list[BaseException] = []
        todo = iter(enumerate(entries))
        if before_send is not None and entries:
            await before_send()

        async def worker() -> None:
            for i, e in todo:  # one shared iterator: each worker takes the next entry
                if failures:
                    return
                try:
                    results[i] = await self._post_one(e, e.idempotency_key in redelivered)
                except Exception as exc:  # kept, raised once every worker has stopped
                    failures.append(exc)
                    return

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.concurrency, len(entries))):
                tg.start_soon(worker)
        if failures:
            raise failures[0]
        return [r for r in results if r is not None]

    async def _post_one(self, e: PostJournalEntry, maybe_posted: bool) -> BulkItemResult:
        path = ns.journal_path(e.external_id)
        if maybe_posted:
            found = await self._lookup(path)
            if found is not None:
                return self._judge_existing(e, found)
        body = _enc.encode(self.record(e))
        # NetSuite answers a repeated request key with the first answer: an entry moved out of a
        # closed period (``actors.erp.periods``) is another request than the refused one, so
        # the request key names the posting date too (every retry of one attempt repeats it).
        headers = {ns.IDEMPOTENCY_HEADER: ns.idempotency_uuid(
            f"{e.idempotency_key}@{e.posting_date.isoformat()}")}
        attempt = 0
        while True:
            try:
                if self.async_requests:
                    return await self._put_async(e, path, body, headers)
                await self._io.call("PUT", path, body, headers)
                return BulkItemResult(e.idempotency_key, "created", id=f"eid:{e.external_id}")
            except PlatformRejected as exc:
                err = _error_of(exc)
                code = err.code if err and err.code else f"HTTP_{exc.status}"
                if err and err.details and err.details[0].error_path == ns.POSTING_PERIOD_PATH:
                    code = PERIOD_CLOSED  # a closed accounting period, whatever NetSuite's code
                return BulkItemResult(e.idempotency_key, "rejected", error=ErpError(
                    code=code, message=err.message if err else exc.body[:500]))
            except PlatformUnavailable as exc:
                if exc.code != "http.rate_limited" or attempt >= self.throttle_retries:
                    raise
                attempt += 1
                self.retried_throttled += 1
                if self.guard.limiter is None:  # no budget to hold us back: back off here
                    await anyio.sleep(min(exc.retry_after or 0.05 * 2**attempt, 2.0))

    async def _put_async(self, e: PostJournalEntry, path: str, body: bytes,
                         headers: dict[str, str]) -> BulkItemResult:
        """The upsert as an asynchronous request: ``202`` and a job to poll, whose task's
        result is the upsert's answer. A repeat of the idempotency key is answered ``400
        IDEMPOTENCY_ERROR`` naming the first job: its success is ``replayed``. Raises
        ``PlatformRejected`` with the result's status and body when the job failed, and
        ``Retryable`` ``erp.async_pending`` when it is not done within ``async_timeout_s``."""
        replayed = False
        try:
            resp = await self._io.call("PUT", path, body,
                                       {**headers, "Prefer": "respond-async"})
            location = resp.headers.get("Location", "")
        except PlatformRejected as exc:
            err = _error_of(exc)
            location = exc.headers.get("Location", "")
            if err is None or err.code != ns.IDEMPOTENCY_ERROR or not location:
                raise
            replayed = True
        job = urlsplit(location).path
        if not job.startswith(ns.ASYNC_JOB_PATH + "/"):
            raise PlatformRejected(f"NetSuite answered an asynchronous request without a job "
                                   f"({location!r})", status=202, body="",
                                   code="erp.bad_response")
        self.jobs += 1
        deadline = self._clock() + self.async_timeout_s
        wait = 0.02
        while True:
            state = msgspec.json.decode((await self._io.call("GET", job, None)).body,
                                        type=ns.AsyncJob)
            if state.completed:
                break
            if self._clock() >= deadline:
                raise Retryable(f"NetSuite job {job} not completed within "
                                f"{self.async_timeout_s:g} s", code="erp.async_pending")
            await anyio.sleep(wait)
            wait = min(wait * 2, 1.0)
        tasks = msgspec.json.decode((await self._io.call("GET", job + "/task", None)).body,
                                    type=ns.AsyncTasks)
        hrefs = [ln.get("href", "") for item in tasks.items for ln in item.get("links", [])
                 if ln.get("rel") == "self"]
        if not hrefs:
            raise PlatformRejected(f"NetSuite job {job} has no task", status=200, body="",
                                   code="erp.bad_response")
        await self._io.call("GET", urlsplit(hrefs[0]).path + "/result", None)
        return BulkItemResult(e.idempotency_key, "replayed" if replayed else "created",
                              id=f"eid:{e.external_id}")

    async def _lookup(self, path: str) -> ns.JournalEntryRecord | None:
        self.lookups += 1
        attempt = 0
        while True:
            try:
                resp = await self._io.call("GET", path, None)
                return _rec_dec.decode(resp.body)
            except PlatformRejected as exc:
                if exc.status == 404:
                    return None
                raise
            except PlatformUnavailable as exc:
                if exc.code != "http.rate_limited" or attempt >= self.throttle_retries:
                    raise
                attempt += 1
                if self.guard.limiter is None:
                    await anyio.sleep(min(exc.retry_after or 0.05 * 2**attempt, 2.0))

    def _judge_existing(self, e: PostJournalEntry,
                        found: ns.JournalEntryRecord) -> BulkItemResult:
        try:
            same = ns.line_amounts(found, e.currency) == (e.amount, e.amount) and (
                found.currency.ref_name in (None, e.currency))
        except ValueError:
            same = False
        if same:
            return BulkItemResult(e.idempotency_key, "replayed",
                                  id=found.id or f"eid:{e.external_id}")
        return BulkItemResult(e.idempotency_key, "rejected", error=ErpError(
            code=DUPLICATE_EXTERNAL_ID,
            message=f"journal entry eid:{e.external_id} exists with other amounts"))

    def statistics(self) -> dict[str, object]:
        return {"dialect": self.dialect, "requests": self._io.requests,
                "concurrency": self.concurrency, "max_in_flight": self._io.max_in_flight,
                "calls": self._io.calls, "in_flight": self._io.in_flight,
                "throttled": self._io.throttled, "retried_throttled": self.retried_throttled,
                "unauthorized": self._io.unauthorized, "lookups": self.lookups,
                "async_jobs": self.jobs}


class NetSuiteQuery:
    """SuiteQL reads (``POST /services/rest/query/v1/suiteql``), paged with ``limit`` /
    ``offset`` until ``hasMore`` is false; each page is one guarded, signed call."""

    def __init__(self, guard: PlatformGuard, *, auth: Auth | None = None, page_size: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= page_size <= 1000:
            raise ValueError("SuiteQL pages hold 1 to 1000 rows")
        self.page_size = page_size
        self._io = _Guarded(guard, auth or NoAuth(), clock)

    async def rows(self, q: str) -> AsyncIterator[dict[str, object]]:
        """Every row of ``q``, page after page. Raises the ``HttpClient`` errors and
        ``GatewayError`` ``erp.bad_response`` for an answer that is not a SuiteQL page."""
        offset = 0
        body = msgspec.json.encode(ns.SuiteQlRequest(q=q))
        while True:
            path = f"{ns.SUITEQL_PATH}?{urlencode({'limit': self.page_size, 'offset': offset})}"
            resp = await self._io.call("POST", path, body, {"Prefer": "transient"})
            try:
                page = _page_dec.decode(resp.body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise GatewayError(f"SuiteQL answer is not a page: {exc}",
                                   code="erp.bad_response") from exc
            for item in page.items:
                yield {k: v for k, v in item.items() if k != "links"}
            if not page.has_more or page.count == 0:
                return
            offset += page.count

    async def postings(self) -> list[tuple[str, str, str, int]]:
        """Every journal entry NetSuite holds as (external id, internal id, currency, debit
        total in minor units): what the reconciler compares billing with."""
        q = ("SELECT t.id AS id, t.externalid AS externalid, c.symbol AS currency, "
             "SUM(tl.debitforeignamount) AS debit FROM transaction t "
             "JOIN transactionline tl ON tl.transaction = t.id "
             "JOIN currency c ON c.id = t.currency WHERE t.recordtype = 'journalentry' "
             "GROUP BY t.id, t.externalid, c.symbol ORDER BY t.id")
        out: list[tuple[str, str, str, int]] = []
        async for row in self.rows(q):
            cur = str(row.get("currency", ""))
            try:
                out.append((str(row["externalid"]), str(row.get("id") or ""), cur,
                            from_decimal(Decimal(str(row.get("debit") or "0")), cur)))
            except (KeyError, ValueError) as exc:
                raise Retryable(f"SuiteQL row unreadable: {exc}",
                                code="erp.bad_response") from exc
        return out

    async def journal_entries(self, external_ids: Sequence[str] | None = None
                              ) -> dict[str, tuple[str, int]]:
        """External id → (currency, debit total in minor units) of the journal entries
        NetSuite holds (all of them, or those of ``external_ids``)."""
        where = ""
        if external_ids is not None:
            if not external_ids:
                return {}
            quoted = ", ".join("'" + x.replace("'", "''") + "'" for x in external_ids)
            where = f" AND t.externalid IN ({quoted})"
        # SuiteQL over REST has no bind parameters: ids are quoted with '' doubled.
        q = ("SELECT t.externalid AS externalid, c.symbol AS currency, "  # noqa: S608
             "SUM(tl.debitforeignamount) AS debit FROM transaction t "
             "JOIN transactionline tl ON tl.transaction = t.id "
             "JOIN currency c ON c.id = t.currency WHERE t.recordtype = 'journalentry'"
             f"{where} GROUP BY t.externalid, c.symbol ORDER BY t.externalid")
        out: dict[str, tuple[str, int]] = {}
        async for row in self.rows(q):
            cur = str(row.get("currency", ""))
            try:
                out[str(row["externalid"])] = (cur, from_decimal(
                    Decimal(str(row.get("debit") or "0")), cur))
            except (KeyError, ValueError) as exc:
                raise Retryable(f"SuiteQL row unreadable: {exc}",
                                code="erp.bad_response") from exc
        return out
