"""The simulated ERP speaking NetSuite SuiteTalk REST (``erpgw sim --erp-dialect netsuite``).

Routes (``contracts.platforms.netsuite`` has the shapes):

``PUT  /services/rest/record/v1/journalEntry/eid:<externalId>``  upsert a journal entry: 204
``GET  /services/rest/record/v1/journalEntry/eid:<externalId>``  the record, or 404
``POST /services/rest/query/v1/suiteql?limit=&offset=``           SuiteQL over the journals
``GET  /services/rest/async/v1/job/<id>`` (``/task``, ``/task/<id>/result``)  asynchronous jobs

An upsert with ``Prefer: respond-async`` is answered ``202`` with ``Location:
/services/rest/async/v1/job/<id>`` and ``Preference-Applied: respond-async``; the job is
``pending`` for the request latency, then ``succeeded`` (or ``failed``) and its task's result is
the answer the synchronous request would have had. An asynchronous request repeating an
``X-NetSuite-Idempotency-Key`` is answered ``400 IDEMPOTENCY_ERROR`` with the first job's
``Location`` (nothing is applied again).

Every request, in this order:

1. must carry NetSuite Token-Based Authentication (OAuth 1.0a, HMAC-SHA256, ``realm`` = the
   account id) that oauthlib's server side verifies (``sim._netsuite_tba``); else ``401
   INVALID_LOGIN``: a gateway that forgets its credentials posts nothing;
2. counts against the account's concurrency limit (``netsuite_concurrency_limit``, shared with
   the ERP's other routes' in-flight count): one more is answered ``429
   CONCURRENCY_LIMIT_EXCEEDED`` with ``Retry-After: 1``;
3. waits the per-request latency (``netsuite_latency_ms`` ± half, seeded) while holding its
   concurrency slot, as a real account's requests do;
4. goes through the ERP's fault guard (``erp`` service, endpoints ``journalEntry`` and
   ``suiteql``): outages, injected 429s (answered with the older ``SSS_REQUEST_LIMIT_EXCEEDED``
   body), silent drops, per-item rejections, altered amounts, commit-then-timeout.

An upsert is recorded in the same ``ErpLedger`` as the bulk API (so the ground-truth audit
counts NetSuite postings exactly as the bulk ones), keyed by the external id: upserting an
external id that holds the same amounts again changes nothing (204); with other amounts it is
refused ``400 USER_ERROR`` (the simulator does not overwrite a posted journal). A new entry dated
in a closed period is refused ``400 USER_ERROR`` with ``o:errorPath`` ``postingPeriod``. Amounts are
decimals converted exactly to minor units (``from_decimal``): more fraction digits than the
currency has is ``400 INVALID_FLD_VALUE``. A request repeating an ``X-NetSuite-Idempotency-Key``
gets the first answer again. Every error body is NetSuite's (``o:errorDetails``).

SuiteQL understands the journal query of the gateway's reconciler (``SELECT … FROM transaction
… WHERE t.recordtype = 'journalentry' [AND t.externalid IN ('…', …)] …``), answering rows
``{id, externalid, currency, debit}`` (strings, as SuiteQL answers) ordered by external id, paged
by ``limit`` (1..1000) and ``offset`` (a multiple of ``limit``); another query is ``400
INVALID_PARAMETER``.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import anyio
import msgspec
from aiohttp import web

from contracts import CURRENCY_EXPONENTS, from_decimal, to_decimal
from contracts.platforms import netsuite as ns
from contracts.platforms.erp import PERIOD_CLOSED, JournalEntryIn, JournalLineIn

from ._control import FaultControl
from ._erp import ErpService
from ._http import SimHTTPError, json_response
from ._netsuite_tba import DEMO_TBA, TbaCredentials, TbaVerifier

__all__ = ["NetSuiteService", "error_response"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_record_dec = msgspec.json.Decoder(ns.JournalEntryRecord)
_query_dec = msgspec.json.Decoder(ns.SuiteQlRequest)
_enc = ns.decimal_encoder()
_TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
_JOURNAL_Q = re.compile(r"\bfrom\s+transaction\b.*\brecordtype\s*=\s*'journalentry'",
                        re.IGNORECASE | re.DOTALL)
_IN_LIST = re.compile(r"\bexternalid\s+in\s*\(([^)]*)\)", re.IGNORECASE)
_QUOTED = re.compile(r"'((?:[^']|'')*)'")


def error_response(status: int, code: str, detail: str, *,
                   headers: dict[str, str] | None = None,
                   path: str | None = None) -> web.Response:
    """A NetSuite REST error answer."""
    body = ns.ErrorBody(
        type=f"https://www.rfc-editor.org/rfc/rfc9110.html#section-15.{5 if status < 500 else 6}",
        title=_TITLES.get(status, "Error"), status=status,
        details=[ns.ErrorDetail(detail=detail, error_code=code, error_path=path)])
    return web.Response(body=_enc.encode(body), status=status, headers=headers,
                        content_type="application/vnd.oracle.resource+json")


def _netsuite_code(err: SimHTTPError) -> str:
    """The ``o:errorCode`` a simulator error becomes (faults keep their meaning)."""
    if err.status == 429:
        return ns.REQUEST_LIMIT_EXCEEDED
    if err.status >= 500:
        return "UNEXPECTED_ERROR"
    if err.status == 404:
        return "NONEXISTENT_ID"
    return "INVALID_CONTENT"


class NetSuiteService:
    """The NetSuite REST face of the simulated ERP (its books are ``erp.ledger``)."""

    def __init__(self, erp: ErpService, control: FaultControl, *, seed: int,
                 concurrency_limit: int = 5, latency_ms: int = 30,
                 credentials: TbaCredentials = DEMO_TBA) -> None:
        if concurrency_limit < 0 or latency_ms < 0:
            raise ValueError("netsuite_concurrency_limit and netsuite_latency_ms must be >= 0")
        self.erp = erp
        self.control = control
        self.limit = concurrency_limit
        self.latency_s = latency_ms / 1000
        self.verifier = TbaVerifier(credentials)
        self._rng = random.Random(f"{seed}/netsuite/latency")
        self.records: dict[str, tuple[str, ns.JournalEntryRecord]] = {}  # eid -> (id, record)
        self._answers: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        # asynchronous jobs: id -> (done at (monotonic), status, body); idempotency key -> id
        self.jobs: dict[str, tuple[float, int, bytes]] = {}
        self._job_keys: dict[str, str] = {}
        self.unauthorized = 0
        self.limited = 0
        self.max_in_flight = 0

    def reset(self) -> None:
        self.records.clear()
        self._answers.clear()
        self.jobs.clear()
        self._job_keys.clear()
        self.unauthorized = self.limited = self.max_in_flight = 0

    # -- the request path: auth, concurrency, latency, faults ---------------------------------

    def route(self, endpoint: str, handler: Handler) -> Handler:
        guarded = self.control.guard("erp", endpoint, handler)

        async def serve(request: web.Request) -> web.StreamResponse:
            url = f"{request.scheme}://{request.host}{request.raw_path}"
            if not self.verifier.verify(request.method, url, dict(request.headers)):
                self.unauthorized += 1
                self.control.count(f"erp/{endpoint}", "unauthorized")
                return error_response(401, ns.INVALID_LOGIN, "Invalid login attempt. For more "
                                      "details, see the Login Audit Trail.")
            erp = self.erp
            erp.requests += 1
            if self.limit and erp.in_flight >= self.limit:
                erp.limited_requests += 1
                self.limited += 1
                self.control.count("erp/account", "concurrency_limit")
                return error_response(
                    429, ns.CONCURRENCY_LIMIT_EXCEEDED,
                    f"Concurrent request limit of {self.limit} exceeded. Request blocked.",
                    headers={"Retry-After": "1"})
            erp.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, erp.in_flight)
            try:
                if self.latency_s:
                    await anyio.sleep(self.latency_s * (0.5 + self._rng.random()))
                return await guarded(request)
            except SimHTTPError as err:
                return error_response(err.status, _netsuite_code(err), err.message,
                                      headers=err.headers, path=err.path)
            finally:
                erp.in_flight -= 1

        return serve

    # -- record service -------------------------------------------------------------------------

    def _eid(self, request: web.Request) -> str:
        ref = request.match_info["ref"]
        if not ref.startswith("eid:") or len(ref) == 4:
            raise SimHTTPError(404, "not_found", f"journalEntry {ref!r}: only eid:<externalId> "
                               "references are served")
        return ref[4:]

    async def upsert(self, request: web.Request) -> web.StreamResponse:
        eid = self._eid(request)
        key = request.headers.get(ns.IDEMPOTENCY_HEADER)
        if key is not None:
            try:
                uuid.UUID(key)
            except ValueError:
                return error_response(400, "INVALID_HEADER",
                                      f"{ns.IDEMPOTENCY_HEADER} must be a UUID")
        if "respond-async" in request.headers.get("Prefer", ""):
            return await self._upsert_async(request, eid, key)
        if key is not None and key in self._answers:
            status, body = self._answers[key]
            return self._replay(status, body)
        answer = self._upsert(eid, await request.read())
        if key is not None and answer.status < 500:
            self._answers[key] = (answer.status, bytes(answer.body or b""))  # type: ignore[arg-type]
            while len(self._answers) > 100_000:
                self._answers.popitem(last=False)
        return answer

    async def _upsert_async(self, request: web.Request, eid: str,
                            key: str | None) -> web.Response:
        applied = {"Preference-Applied": "respond-async"}
        if key is not None and key in self._job_keys:
            return error_response(
                400, "IDEMPOTENCY_ERROR", "A request with the same idempotency key is already "
                "submitted. See the Location header for the previously submitted job.",
                headers={**applied, "Location": self._job_path(self._job_keys[key])})
        answer = self._upsert(eid, await request.read())
        job = str(len(self.jobs) + 1)
        self.jobs[job] = (time.monotonic() + self.latency_s, answer.status,
                          bytes(answer.body or b""))  # type: ignore[arg-type]
        if key is not None:
            self._job_keys[key] = job
        return web.Response(status=202, headers={**applied, "Location": self._job_path(job)})

    @staticmethod
    def _job_path(job: str) -> str:
        return f"{ns.ASYNC_JOB_PATH}/{job}"

    def _job(self, request: web.Request) -> tuple[str, tuple[float, int, bytes]]:
        job = request.match_info["job"]
        found = self.jobs.get(job)
        if found is None:
            raise SimHTTPError(404, "not_found", f"job {job} was not found")
        return job, found

    async def get_job(self, request: web.Request) -> web.StreamResponse:
        job, (done_at, status, _) = self._job(request)
        done = time.monotonic() >= done_at
        base = f"{request.scheme}://{request.host}{self._job_path(job)}"
        return json_response({
            "links": [{"rel": "self", "href": base}], "id": job, "completed": done,
            "progress": ("succeeded" if status < 400 else "failed") if done else "pending",
            "task": {"links": [{"rel": "self", "href": f"{base}/task"}]}})

    async def get_tasks(self, request: web.Request) -> web.StreamResponse:
        job, _ = self._job(request)
        base = f"{request.scheme}://{request.host}{self._job_path(job)}/task"
        return json_response({"links": [{"rel": "self", "href": base}], "count": 1,
                              "hasMore": False, "offset": 0, "totalResults": 1,
                              "items": [{"links": [{"rel": "self", "href": f"{base}/{job}"}]}]})

    async def get_task_result(self, request: web.Request) -> web.StreamResponse:
        job, (done_at, status, body) = self._job(request)
        if request.match_info["task"] != job:
            raise SimHTTPError(404, "not_found", "no such task")
        if time.monotonic() < done_at:
            return error_response(400, "INVALID_REQUEST", f"job {job} is not completed")
        return self._replay(status, body)

    def _replay(self, status: int, body: bytes) -> web.Response:
        if status == 204:
            return web.Response(status=204)
        return web.Response(status=status, body=body,
                            content_type="application/vnd.oracle.resource+json")

    def _upsert(self, eid: str, raw: bytes) -> web.Response:
        try:
            rec = _record_dec.decode(raw)
        except msgspec.ValidationError as exc:
            return error_response(400, "INVALID_CONTENT", str(exc))
        except msgspec.DecodeError as exc:
            return error_response(400, "INVALID_CONTENT", f"not JSON: {exc}")
        if rec.external_id is not None and rec.external_id != eid:
            return error_response(400, "INVALID_FLD_VALUE",
                                  "externalId differs from the eid in the URL",
                                  path="externalId")
        currency = rec.currency.ref_name
        if currency not in CURRENCY_EXPONENTS:
            return error_response(400, "INVALID_KEY_OR_REF",
                                  f"Invalid currency reference key {currency!r}.",
                                  path="currency")
        try:
            lines = [JournalLineIn(
                account=ln.account.id or ln.account.ref_name or "",
                debit=from_decimal(ln.debit, currency) if ln.debit is not None else 0,
                credit=from_decimal(ln.credit, currency) if ln.credit is not None else 0,
                memo=ln.memo or "") for ln in rec.line.items]
        except ValueError as exc:
            return error_response(400, "INVALID_FLD_VALUE", str(exc), path="line.items")
        item = JournalEntryIn(idempotency_key=f"eid:{eid}", external_id=eid,
                              tran_date=rec.tran_date.isoformat(), currency=currency,
                              memo=rec.memo, lines=lines)
        (result,) = self.erp._post([item], "erp/journalEntry")
        if result.status == "rejected":
            err = result.error
            code = err.code if err else "USER_ERROR"
            if code == "IDEMPOTENCY_KEY_REUSED":
                return error_response(400, "USER_ERROR", f"journal entry eid:{eid} is posted "
                                      "with other amounts; a posted journal is not changed")
            if code == PERIOD_CLOSED:
                # NetSuite refuses a new transaction dated in a closed accounting period as a
                # user error on its posting period (its own preference can instead default
                # such a transaction to the first open period; the gateway does that itself).
                return error_response(
                    400, "USER_ERROR", f"The accounting period {item.tran_date[:7]} of tranDate "
                    f"{item.tran_date} is closed; enter a date in an open period.",
                    path=ns.POSTING_PERIOD_PATH)
            return error_response(400, code, err.message if err else "rejected")
        if result.status == "created" and self.erp.ledger.by_external_id(eid):
            self.records[eid] = (result.id or "", msgspec.structs.replace(
                rec, id=(result.id or "").removeprefix("JE-"), external_id=eid))
        internal = self.records.get(eid, (result.id or "", rec))[0].removeprefix("JE-")
        return web.Response(status=204, headers={
            "Location": f"{ns.JOURNAL_PATH}/{internal}"})

    async def get(self, request: web.Request) -> web.StreamResponse:
        eid = self._eid(request)
        found = self.records.get(eid)
        if found is None:
            return error_response(404, "NONEXISTENT_ID",
                                  f"Record journalEntry eid:{eid} was not found.")
        return web.Response(body=_enc.encode(found[1]),
                            content_type="application/vnd.oracle.resource+json")

    # -- SuiteQL --------------------------------------------------------------------------------

    async def suiteql(self, request: web.Request) -> web.StreamResponse:
        try:
            limit = int(request.query.get("limit", "1000"))
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            return error_response(400, "INVALID_PARAMETER", "limit and offset are integers")
        if not 1 <= limit <= 1000 or offset < 0 or offset % limit:
            return error_response(400, "INVALID_PARAMETER", "limit is 1..1000 and offset a "
                                  "multiple of limit")
        try:
            q = _query_dec.decode(await request.read()).q
        except msgspec.MsgspecError as exc:
            return error_response(400, "INVALID_CONTENT", str(exc))
        if not _JOURNAL_Q.search(q):
            return error_response(400, "INVALID_PARAMETER",
                                  "the simulator answers journal entry queries only")
        wanted: set[str] | None = None
        m = _IN_LIST.search(q)
        if m is not None:
            wanted = {v.replace("''", "'") for v in _QUOTED.findall(m.group(1))}
        rows = [self._row(eid, rec) for eid, (_, rec) in sorted(self.records.items())
                if wanted is None or eid in wanted]
        page = rows[offset:offset + limit]
        base = f"{request.scheme}://{request.host}{ns.SUITEQL_PATH}"
        links = [{"rel": "self", "href": f"{base}?limit={limit}&offset={offset}"}]
        if offset + limit < len(rows):
            links.append({"rel": "next", "href": f"{base}?limit={limit}&offset={offset + limit}"})
        return json_response(ns.SuiteQlPage(
            items=page, has_more=offset + len(page) < len(rows), count=len(page),
            offset=offset, total_results=len(rows), links=links))

    def _row(self, eid: str, rec: ns.JournalEntryRecord) -> dict[str, Any]:
        cur = rec.currency.ref_name or ""
        debit = sum(from_decimal(ln.debit, cur) for ln in rec.line.items if ln.debit is not None)
        posting = self.erp.ledger.by_external_id(eid)
        if posting:  # what the books say (an altered amount shows here, as in a real ERP)
            debit = posting[0].amount
        amount: Decimal = to_decimal(debit, cur)
        return {"links": [], "id": rec.id or "", "externalid": eid, "currency": cur,
                "debit": str(amount)}

    def statistics(self) -> dict[str, int]:
        return {"records": len(self.records), "unauthorized": self.unauthorized,
                "limited": self.limited, "max_in_flight": self.max_in_flight}
