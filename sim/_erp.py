"""The simulated ERP: a journal-entry bulk API over an append-only posting record.

Theory of operation: ``ErpLedger`` is the pure core. It takes decoded items and ``now`` and
returns one ``BulkItemResult`` per item, in order, appending a ``Posting`` for each item it
creates. Idempotency is by ``idempotencyKey``: the ledger remembers, per key, a SHA-256 of the
item's canonical encoding (msgspec's JSON of the decoded struct, so whitespace and key order in
the request do not matter) and the entry id. A key seen with the same digest is ``replayed``
(nothing new recorded); with another digest, ``rejected`` as ``IDEMPOTENCY_KEY_REUSED``.
Rejected items record nothing, not even their key, so a corrected retry can still be created.

``ErpService`` is the HTTP shell: it applies the fault plan (``sim._faults``), decodes, calls
the ledger and encodes. Items within one request are processed in order, so a key repeated
inside one request behaves exactly like a key repeated across requests.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Sequence

import anyio
import msgspec
from aiohttp import web

from contracts.platforms.erp import (
    BulkItemResult,
    BulkRequest,
    BulkResponse,
    ErpError,
    JournalEntryIn,
)

from ._config import SimConfig
from ._faults import Faults, plan_bulk
from ._http import SimHTTPError, decode_body, json_response
from ._records import Posting

__all__ = ["STALL_S", "ErpLedger", "ErpService", "JournalEntryList", "validate_entry"]

# How long a commit-then-timeout request stalls: longer than any sane client timeout.
STALL_S = 30.0

_BULK_DECODER = msgspec.json.Decoder(BulkRequest)
_FAULTS_DECODER = msgspec.json.Decoder(Faults)
_CANONICAL = msgspec.json.Encoder()
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class JournalEntryList(msgspec.Struct, frozen=True):
    """Body of ``GET /erp/v1/journal-entries?externalId=…``: postings in commit order."""

    items: list[Posting]


def validate_entry(item: JournalEntryIn) -> ErpError | None:
    """The business-rule error for ``item``, or ``None`` when the ERP would accept it.

    ``INVALID``: an empty ``idempotencyKey`` or ``externalId``, fewer than two lines, a line
    without exactly one of debit or credit above zero (negative amounts included), or a
    currency that is not three upper-case letters. ``UNBALANCED``: debits differ from credits.
    Structure is checked before balance. Raises nothing.
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
    debits = sum(line.debit for line in item.lines)
    credits = sum(line.credit for line in item.lines)
    if debits != credits:
        return ErpError(
            code="UNBALANCED", message=f"debits {debits} != credits {credits} {item.currency}"
        )
    return None


def _digest(item: JournalEntryIn) -> bytes:
    return hashlib.sha256(_CANONICAL.encode(item)).digest()


class ErpLedger:
    """The ERP's books: append-only postings plus the idempotency-key index. Pure, no I/O.

    ``first_number`` is the number of the next ``JE-<n>`` id, so a reset ledger can continue
    numbering and never reuse an entry id within one sim process.
    """

    def __init__(self, *, first_number: int = 1) -> None:
        self._postings: list[Posting] = []
        self._keys: dict[str, tuple[bytes, str]] = {}
        self._by_external: dict[str, list[Posting]] = {}
        self._next = first_number

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

    def post(self, items: Sequence[JournalEntryIn], now: float) -> list[BulkItemResult]:
        """Apply ``items`` in order at time ``now``; one result per item. Raises nothing."""
        return [self._post_one(item, now) for item in items]

    def _post_one(self, item: JournalEntryIn, now: float) -> BulkItemResult:
        key = item.idempotency_key
        digest = _digest(item)
        seen = self._keys.get(key)
        if seen is not None:
            if seen[0] == digest:
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
        entry_id = f"JE-{self._next}"
        self._next += 1
        posting = Posting(
            seq=len(self._postings) + 1,
            id=entry_id,
            idempotency_key=key,
            external_id=item.external_id,
            currency=item.currency,
            amount=sum(line.debit for line in item.lines),
            accepted_at=now,
        )
        self._postings.append(posting)
        self._keys[key] = (digest, entry_id)
        self._by_external.setdefault(item.external_id, []).append(posting)
        return BulkItemResult(idempotency_key=key, status="created", id=entry_id)


class ErpService:
    """HTTP handlers of the ERP API and of the fault hooks, over one ``ErpLedger``.

    Handlers run in aiohttp's request tasks. ``shutdown`` (wired to the app's ``on_shutdown``)
    wakes every request sleeping for injected latency or a commit-then-timeout stall, so the
    server stops promptly instead of waiting for them.
    """

    def __init__(self, config: SimConfig) -> None:
        if config.erp_max_bulk < 1:
            raise ValueError(f"erp_max_bulk must be >= 1, got {config.erp_max_bulk}")
        self._seed = config.seed
        self._max_bulk = config.erp_max_bulk
        self._rng = random.Random(config.seed)
        self.ledger = ErpLedger()
        self.faults = Faults()
        self._pauses: set[anyio.CancelScope] = set()

    def reset(self) -> None:
        """Forget every posting, key and fault; entry numbering continues (ids stay unique)."""
        self.ledger = ErpLedger(first_number=self.ledger.next_number)
        self.faults = Faults()
        self._rng = random.Random(self._seed)

    async def shutdown(self, app: web.Application) -> None:
        for scope in list(self._pauses):
            scope.cancel()

    async def _pause(self, seconds: float) -> None:
        with anyio.CancelScope() as scope:
            self._pauses.add(scope)
            try:
                await anyio.sleep(seconds)
            finally:
                self._pauses.discard(scope)

    async def post_bulk(self, request: web.Request) -> web.Response:
        """``POST /erp/v1/journal-entries/bulk``: ``BulkRequest`` in, ``BulkResponse`` out.

        Answers 400 (naming the field) for a body that breaks ``BulkRequest``, 413 for more
        than ``erp_max_bulk`` items, and the injected status (429 with ``Retry-After: 1``,
        503 during an outage) when a fault fires; those commit nothing.
        """
        plan = plan_bulk(self.faults.erp, self._rng)
        if plan.delay_s > 0:
            await self._pause(plan.delay_s)
        if plan.fail_status is not None:
            raise _fault_error(plan.fail_status)
        bulk = await decode_body(request, _BULK_DECODER)
        if len(bulk.items) > self._max_bulk:
            raise SimHTTPError(
                413,
                "request.too_many_items",
                f"a bulk request takes at most {self._max_bulk} items, got {len(bulk.items)}",
                path="$.items",
            )
        results = self.ledger.post(bulk.items, time.time())
        response = json_response(BulkResponse(results=results))
        if plan.commit_then_timeout:
            await self._pause(STALL_S)
        return response

    async def lookup(self, request: web.Request) -> web.Response:
        """``GET /erp/v1/journal-entries?externalId=X``: the postings of X (400 without X)."""
        external_id = request.query.get("externalId")
        if not external_id:
            raise SimHTTPError(
                400, "request.invalid", "query parameter externalId is required", path="externalId"
            )
        return json_response(JournalEntryList(items=self.ledger.by_external_id(external_id)))

    async def get_faults(self, request: web.Request) -> web.Response:
        return json_response(self.faults)

    async def put_faults(self, request: web.Request) -> web.Response:
        """Replace the fault settings; 400 naming the field for an invalid or unknown one."""
        self.faults = await decode_body(request, _FAULTS_DECODER)
        return json_response(self.faults)

    async def delete_faults(self, request: web.Request) -> web.Response:
        self.faults = Faults()
        return json_response(self.faults)


def _fault_error(status: int) -> SimHTTPError:
    if status == 429:
        return SimHTTPError(
            429,
            "erp.rate_limited",
            "injected fault: too many requests",
            headers={"Retry-After": "1"},
        )
    if status == 503:
        return SimHTTPError(503, "erp.unavailable", "injected fault: service unavailable")
    return SimHTTPError(status, "erp.injected_error", f"injected fault: HTTP {status}")
