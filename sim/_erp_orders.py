"""The simulated ERP's sales orders: create (idempotent), look up by external id, close.

Theory of operation: ``SalesOrderBook`` is the pure core. ``create`` is idempotent by
``Idempotency-Key`` exactly like the journal entries (same key and body: the stored order,
replayed; same key, another body: ``IDEMPOTENCY_KEY_REUSED``); the ERP computes each line's
amount and the total. Like a real ERP it does *not* refuse a second order with the same
external id under a new key: that would be the caller's bug, and the ground truth counts it as
a duplicate. ``close`` is the only way an order ends: the record stays, marked ``closed`` with
a reversing entry's id (``SOR-<n>``), never deleted; closing a closed order answers it
unchanged.

A business rejection can be injected per external id (``rejects``: the deal engine's saga
faults): the order is refused ``CREDIT_HOLD`` (422) and nothing is recorded but the refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable

import msgspec
from aiohttp import web

from contracts.platforms.erp import (
    CREDIT_HOLD,
    ORDER_CLOSED,
    ErpError,
    SalesOrderClose,
    SalesOrderIn,
    SalesOrderLine,
    SalesOrderList,
    SalesOrderRecord,
    SalesOrderRevision,
)

from ._control import require
from ._http import SimHTTPError, decode_body, json_response

__all__ = ["SalesOrderBook", "SalesOrderService"]

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_DECODER = msgspec.json.Decoder(SalesOrderIn)
_CLOSE = msgspec.json.Decoder(SalesOrderClose)
_REVISE = msgspec.json.Decoder(SalesOrderRevision)
_CANONICAL = msgspec.json.Encoder()
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def validate_order(body: SalesOrderIn) -> ErpError | None:
    """The ``INVALID`` error of an order the ERP would not take, or ``None``: an empty
    external id or customer, no lines, a currency that is not three upper-case letters (the
    schema says so too; this guards orders built without decoding)."""
    if not body.external_id or not body.customer:
        return ErpError(code="INVALID", message="externalId and customer must not be empty")
    if not body.lines:
        return ErpError(code="INVALID", message="a sales order needs at least one line")
    if not _CURRENCY.match(body.currency):
        return ErpError(code="INVALID",
                        message=f"currency must be 3 upper-case letters, got {body.currency!r}")
    return None


class SalesOrderBook:
    """Sales orders, their keys, closures and refusals. Pure; numbering continues across
    resets (``first_number``)."""

    def __init__(self, *, first_number: int = 1) -> None:
        self.orders: dict[str, SalesOrderRecord] = {}
        self._keys: dict[str, tuple[bytes, str]] = {}
        self._by_external: dict[str, list[str]] = {}
        self._next = first_number
        self.refused: list[str] = []  # external ids refused CREDIT_HOLD, in answer order
        self.stale = 0  # revisions refused 409 (a version not above the order's)

    @property
    def next_number(self) -> int:
        return self._next

    def create(self, key: str, body: SalesOrderIn, now: float, *, reject: bool = False
               ) -> tuple[int, SalesOrderRecord | ErpError]:
        """(HTTP status, order or error) for one create: 201, 200 (replay), 422."""
        digest = hashlib.sha256(_CANONICAL.encode(body)).digest()
        seen = self._keys.get(key)
        if seen is not None:
            if not hmac.compare_digest(seen[0], digest):
                return 422, ErpError(code="IDEMPOTENCY_KEY_REUSED",
                                     message=f"Idempotency-Key {key!r} was used for a "
                                             f"different order ({seen[1]})")
            return 200, self.orders[seen[1]]
        error = validate_order(body)
        if error is not None:
            return 422, error
        if reject:
            self.refused.append(body.external_id)
            return 422, ErpError(code=CREDIT_HOLD,
                                 message=f"customer {body.customer} is on credit hold "
                                         "(injected business rejection)")
        order_id = f"SO-{self._next}"
        self._next += 1
        lines = [SalesOrderLine(product=ln.product, quantity=ln.quantity,
                                unit_amount=ln.unit_amount, amount=ln.quantity * ln.unit_amount)
                 for ln in body.lines]
        order = SalesOrderRecord(
            id=order_id, external_id=body.external_id, idempotency_key=key,
            customer=body.customer, currency=body.currency,
            total=sum(ln.amount for ln in lines), lines=lines, tran_date=body.tran_date,
            created_at=now, subscription=body.subscription)
        self.orders[order_id] = order
        self._keys[key] = (digest, order_id)
        self._by_external.setdefault(body.external_id, []).append(order_id)
        return 201, order

    def revise(self, order_id: str, body: SalesOrderRevision, now: float
               ) -> tuple[int, SalesOrderRecord | ErpError]:
        """(HTTP status, order or error) for one revision: 200 applied or replayed, 409
        ``STALE_VERSION`` / ``VERSION_CONFLICT``, 422 ``ORDER_CLOSED``. Raises
        ``SimHTTPError`` 404 for an unknown order."""
        order = self.orders.get(order_id)
        if order is None:
            raise SimHTTPError(404, "not_found", f"no sales order {order_id!r}")
        lines = [SalesOrderLine(product=ln.product, quantity=ln.quantity,
                                unit_amount=ln.unit_amount, amount=ln.quantity * ln.unit_amount)
                 for ln in body.lines]
        if body.version <= order.version:
            if body.version == order.version and lines == order.lines:
                return 200, order
            self.stale += 1
            code = "STALE_VERSION" if body.version < order.version else "VERSION_CONFLICT"
            return 409, ErpError(code=code, message=f"order {order_id} is at version "
                                                    f"{order.version}; got {body.version}")
        if order.status == "closed":
            return 422, ErpError(code=ORDER_CLOSED, message=f"order {order_id} is closed")
        order = msgspec.structs.replace(order, version=body.version, lines=lines,
                                        total=sum(ln.amount for ln in lines))
        self.orders[order_id] = order
        return 200, order

    def by_external_id(self, external_id: str) -> list[SalesOrderRecord]:
        return [self.orders[i] for i in self._by_external.get(external_id, ())]

    def close(self, order_id: str, reason: str, now: float) -> SalesOrderRecord:
        """Close ``order_id`` once (a reversing entry, the record kept); again answers it
        unchanged. Raises ``SimHTTPError`` 404 for an unknown order."""
        order = self.orders.get(order_id)
        if order is None:
            raise SimHTTPError(404, "not_found", f"no sales order {order_id!r}")
        if order.status == "closed":
            return order
        order = msgspec.structs.replace(order, status="closed", closed_at=now,
                                        close_reason=reason[:500],
                                        reversal_id=f"SOR-{order_id[3:]}")
        self.orders[order_id] = order
        return order


class SalesOrderService:
    """``POST /erp/v1/sales-orders``, ``GET /erp/v1/sales-orders?externalId=`` and
    ``POST /erp/v1/sales-orders/{id}/close``. ``rejects(external_id)`` says whether an order
    is refused ``CREDIT_HOLD`` (the deal runs' injected saga faults)."""

    def __init__(self, rejects: Callable[[str], bool] = lambda _: False) -> None:
        self.book = SalesOrderBook()
        self._rejects = rejects

    def reset(self) -> None:
        self.book = SalesOrderBook(first_number=self.book.next_number)

    async def create(self, request: web.Request) -> web.Response:
        """201 created, 200 replayed (``Idempotent-Replayed: true``), 400 for a missing key or
        a body that breaks the schema, 422 ``ErpError`` for a refusal."""
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None or not _KEY.match(key):
            raise SimHTTPError(400, "request.invalid",
                               f"{IDEMPOTENCY_HEADER} is required: 1 to 255 visible ASCII "
                               "characters", path=IDEMPOTENCY_HEADER)
        body = await decode_body(request, _DECODER)
        status, result = self.book.create(key, body, time.time(),
                                          reject=self._rejects(body.external_id))
        headers = {"Idempotent-Replayed": "true"} if status == 200 else None
        return json_response(result, status=status, headers=headers)

    async def lookup(self, request: web.Request) -> web.Response:
        """``?externalId=X`` → the orders of X in creation order (400 without it)."""
        return json_response(SalesOrderList(
            items=self.book.by_external_id(require(request, "externalId"))))

    async def revise(self, request: web.Request) -> web.Response:
        """``POST /erp/v1/sales-orders/{id}/revise``: 200, 404, 409, 422 (see ``revise``)."""
        order_id = request.match_info["id"]
        if order_id not in self.book.orders:  # the resource first, as for any path id
            raise SimHTTPError(404, "not_found", f"no sales order {order_id!r}")
        body = await decode_body(request, _REVISE)
        status, result = self.book.revise(order_id, body, time.time())
        return json_response(result, status=status)

    async def close(self, request: web.Request) -> web.Response:
        """200 with the closed order (idempotent), 404 for an unknown id."""
        body = await decode_body(request, _CLOSE) if request.can_read_body else SalesOrderClose()
        return json_response(self.book.close(request.match_info["id"], body.reason, time.time()))
