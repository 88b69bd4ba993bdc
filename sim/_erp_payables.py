"""The simulated ERP's payables: vendor bills (what the company owes its partners).

``POST /erp/v1/vendor-bills`` records one bill per ``Idempotency-Key`` (required): the same key
and body again answers the stored record with 200 and ``Idempotent-Replayed: true``, the same
key with another body 422 ``IDEMPOTENCY_KEY_REUSED``. Like the journal API, the ERP does not
dedupe by ``externalId``: two keys for one settlement are two bills, which the audit counts as
a duplicate. ``GET /erp/v1/vendor-bills`` lists them (``?externalId=`` filters).

``PayablesBook`` is pure (``now`` passed in); ``PayablesService`` the HTTP shell, mounted
behind the ERP's concurrency limit and fault guard like every ERP route (``sim._app``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

import msgspec
from aiohttp import web

from contracts.platforms.erp import VendorBillIn, VendorBillList, VendorBillRecord

from ._erp import _valid_date
from ._http import SimHTTPError, decode_body, json_response

__all__ = ["PayablesBook", "PayablesService", "validate_bill"]

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(VendorBillIn)


def validate_bill(bill: VendorBillIn) -> str | None:
    """Why the ERP refuses ``bill`` (a message), or ``None``: empty external id or vendor, a
    currency that is not three upper-case letters, a bad ``tranDate``, no lines, a negative
    amount, lines not summing to ``amount`` (when given). Raises nothing."""
    if not bill.external_id or not bill.vendor:
        return "externalId and vendor must not be empty"
    if not _CURRENCY.match(bill.currency):
        return f"currency must be 3 upper-case letters, got {bill.currency!r}"
    if not _valid_date(bill.tran_date):
        return f"tranDate must be a YYYY-MM-DD date, got {bill.tran_date!r}"
    if not bill.lines:
        return "a vendor bill needs at least one line"
    if (bill.amount or 0) < 0 or any(line.amount < 0 for line in bill.lines):
        return "amounts must not be negative"
    if bill.amount is not None and sum(line.amount for line in bill.lines) != bill.amount:
        return "the lines' amounts do not sum to amount"
    return None


class PayablesBook:
    """Vendor bills, append-only, and the idempotency-key index. Pure; numbering continues
    across resets (``first_number``)."""

    def __init__(self, *, first_number: int = 1) -> None:
        self.bills: list[VendorBillRecord] = []
        self._keys: dict[str, tuple[bytes, VendorBillRecord]] = {}
        self._next = first_number

    @property
    def next_number(self) -> int:
        return self._next

    def post(self, key: str, bill: VendorBillIn, now: float) -> tuple[int, VendorBillRecord]:
        """Record ``bill`` under ``key``: ``(201, record)``, or ``(200, stored record)`` for
        the same key and body again.

        Raises ``SimHTTPError`` 422: ``IDEMPOTENCY_KEY_REUSED`` (same key, other body),
        ``INVALID`` (``validate_bill``).
        """
        digest = hashlib.sha256(_ENCODER.encode(bill)).digest()
        seen = self._keys.get(key)
        if seen is not None:
            if not hmac.compare_digest(seen[0], digest):
                raise SimHTTPError(422, "IDEMPOTENCY_KEY_REUSED",
                                   f"{IDEMPOTENCY_HEADER} {key!r} was used with a different "
                                   "request body", path=IDEMPOTENCY_HEADER)
            return 200, seen[1]
        problem = validate_bill(bill)
        if problem is not None:
            raise SimHTTPError(422, "INVALID", problem)
        record = VendorBillRecord(id=f"VB-{self._next}", seq=self._next, idempotency_key=key,
                                  external_id=bill.external_id, vendor=bill.vendor,
                                  currency=bill.currency,
                                  amount=sum(line.amount for line in bill.lines), accepted_at=now)
        self._next += 1
        self.bills.append(record)
        self._keys[key] = (digest, record)
        return 201, record


class PayablesService:
    """``POST /erp/v1/vendor-bills`` and ``GET /erp/v1/vendor-bills``."""

    def __init__(self) -> None:
        self.book = PayablesBook()

    def reset(self) -> None:
        self.book = PayablesBook(first_number=self.book.next_number)

    async def post_bill(self, request: web.Request) -> web.Response:
        """201 created, 200 replayed (``Idempotent-Replayed: true``); 400 for a missing or
        malformed key or a body that breaks the schema; 422 as ``PayablesBook.post``."""
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None or not _KEY.match(key):
            raise SimHTTPError(400, "request.invalid",
                               f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters",
                               path=IDEMPOTENCY_HEADER)
        bill = await decode_body(request, _DECODER)
        status, record = self.book.post(key, bill, time.time())
        headers = {"Idempotent-Replayed": "true"} if status == 200 else None
        return json_response(record, status=status, headers=headers)

    async def list_bills(self, request: web.Request) -> web.Response:
        """Bills in commit order, only those of ``?externalId=`` when given."""
        external = request.query.get("externalId")
        items = [b for b in self.book.bills if external is None or b.external_id == external]
        return json_response(VendorBillList(items=items))
