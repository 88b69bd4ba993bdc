"""The simulated billing platform's subscriptions: create (idempotent), read, cancel.

Theory of operation: ``SubscriptionBook`` is the pure core. ``create`` takes the request's
``Idempotency-Key``, the decoded body and ``now``; a key seen before with the same body (its
canonical encoding's SHA-256) answers the stored subscription as a replay, with another body
``idempotency.key_reused``; a new key creates ``sub_<n>`` at version 1. ``cancel`` moves a
subscription to ``canceled`` (version + 1) once; cancelling it again answers it unchanged, so a
retried compensation is harmless. Nothing is ever deleted: the ground truth counts, per deal
(``metadata["deal_id"]``), how many subscriptions were created and how many cancelled.

``SubscriptionService`` is the HTTP shell (the fault guard wraps it like every platform route).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from datetime import date, timedelta

import msgspec
from aiohttp import web

from contracts.platforms.billing import (
    BillingSubscription,
    SubscriptionIn,
    SubscriptionItemIn,
    SubscriptionItemRecord,
    SubscriptionPhase,
)

from ._http import SimHTTPError, decode_body, json_response

__all__ = ["IDEMPOTENCY_HEADER", "SubscriptionBook", "SubscriptionService", "end_date",
           "phase_months", "phase_value", "subscription_value"]

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_DECODER = msgspec.json.Decoder(SubscriptionIn)
_CANONICAL = msgspec.json.Encoder()


def phase_months(phase: SubscriptionPhase) -> int:
    """Whole calendar months of ``phase`` (phases start on a first and end on a last day)."""
    return ((phase.end_date.year - phase.start_date.year) * 12
            + phase.end_date.month - phase.start_date.month + 1)


def phase_value(phase: SubscriptionPhase) -> int:
    """What ``phase`` is worth: its items' monthly amounts times its months."""
    return sum(i.amount for i in phase.items) * phase_months(phase)


def subscription_value(sub: BillingSubscription) -> int:
    """The whole subscription's value over its phases (what the ERP order and the revenue
    contract must say at its version)."""
    return sum(phase_value(p) for p in sub.phases)


def end_date(start: date, months: int) -> date:
    """The last day of a term of ``months`` starting ``start`` (the day before the same day
    ``months`` later, clipped to month ends: 2025-01-31 + 1 month ends 2025-02-27)."""
    month = start.month - 1 + months
    year = start.year + month // 12
    month = month % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return date.fromordinal(date(year, month, day).toordinal() - 1)


class SubscriptionBook:
    """Subscriptions, their idempotency keys and per-deal counts. Pure; ``first_number``
    continues numbering across resets."""

    def __init__(self, *, first_number: int = 1) -> None:
        self.subscriptions: dict[str, BillingSubscription] = {}
        self._keys: dict[str, tuple[bytes, str]] = {}
        self._next = first_number
        self.cancelled: set[str] = set()
        self.history: dict[str, list[BillingSubscription]] = {}  # every version, in order

    @property
    def next_number(self) -> int:
        return self._next

    def create(self, key: str, body: SubscriptionIn, now: float
               ) -> tuple[BillingSubscription, bool]:
        """The subscription for ``key`` and whether it was replayed. Raises ``SimHTTPError``
        422 ``idempotency.key_reused`` (same key, other body) or 400 (a start after 9000)."""
        digest = hashlib.sha256(_CANONICAL.encode(body)).digest()
        seen = self._keys.get(key)
        if seen is not None:
            if not hmac.compare_digest(seen[0], digest):
                raise SimHTTPError(422, "idempotency.key_reused",
                                   f"{IDEMPOTENCY_HEADER} {key!r} was used with a different "
                                   "request body", path=IDEMPOTENCY_HEADER)
            return self.subscriptions[seen[1]], True
        start = body.start_date
        if start.year > 9000:  # the term's end must stay a date
            raise SimHTTPError(400, "request.invalid", "start_date is too far in the future",
                               path="$.start_date")
        sub_id = f"sub_{self._next:06d}"
        self._next += 1
        items = [SubscriptionItemRecord(id=f"si_{sub_id[4:]}_{i}", product=it.product,
                                        quantity=it.quantity, unit_amount=it.unit_amount,
                                        amount=it.quantity * it.unit_amount)
                 for i, it in enumerate(body.items, 1)]
        end = end_date(start, body.term_months)
        sub = BillingSubscription(
            id=sub_id, customer=body.customer, currency=body.currency, items=items,
            amount=sum(it.amount for it in items), start_date=body.start_date,
            end_date=end, term_months=body.term_months, interval=body.interval,
            created=int(now), metadata=dict(body.metadata),
            phases=[SubscriptionPhase(start_date=start, end_date=end, items=items)])
        self.subscriptions[sub_id] = sub
        self.history[sub_id] = [sub]
        self._keys[key] = (digest, sub_id)
        return sub, False

    def cancel(self, sub_id: str, now: float) -> BillingSubscription:
        """Cancel ``sub_id`` (once; again answers it unchanged). Raises ``SimHTTPError`` 404."""
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise SimHTTPError(404, "not_found", f"no subscription {sub_id!r}")
        if sub.status == "canceled":
            return sub
        sub = msgspec.structs.replace(sub, status="canceled", version=sub.version + 1,
                                      canceled_at=int(now), change="cancel")
        self._store(sub)
        self.cancelled.add(sub_id)
        return sub

    def _store(self, sub: BillingSubscription) -> None:
        self.subscriptions[sub.id] = sub
        self.history.setdefault(sub.id, []).append(sub)

    def _active(self, sub_id: str) -> BillingSubscription:
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise SimHTTPError(404, "not_found", f"no subscription {sub_id!r}")
        if sub.status != "active":
            raise SimHTTPError(422, "subscription.canceled",
                               f"subscription {sub_id} is canceled")
        return sub

    def amend(self, sub_id: str, items: list[SubscriptionItemIn], effective: date,
              now: float) -> BillingSubscription:
        """Version + 1 with ``items`` from ``effective`` (the first of a month inside the
        term, after its start): the last phase is split there. ``proration`` is the new
        minus the old value of the rest of the term. Raises ``SimHTTPError`` (404, 422)."""
        sub = self._active(sub_id)
        last = sub.phases[-1]
        if effective.day != 1 or not last.start_date < effective <= last.end_date:
            raise SimHTTPError(422, "subscription.bad_effective_date",
                               f"an amendment takes effect on the first of a month within "
                               f"{last.start_date}..{last.end_date}, not {effective}")
        new = [SubscriptionItemRecord(id=f"si_{sub_id[4:]}_{sub.version + 1}_{i}",
                                      product=it.product, quantity=it.quantity,
                                      unit_amount=it.unit_amount,
                                      amount=it.quantity * it.unit_amount)
               for i, it in enumerate(items, 1)]
        before = msgspec.structs.replace(last, end_date=effective - timedelta(days=1))
        after = SubscriptionPhase(start_date=effective, end_date=last.end_date, items=new)
        rest = phase_months(after)
        proration = (sum(i.amount for i in new) - sum(i.amount for i in last.items)) * rest
        sub = msgspec.structs.replace(
            sub, items=new, amount=sum(i.amount for i in new), version=sub.version + 1,
            phases=[*sub.phases[:-1], before, after], change="amend",
            effective_date=effective, proration=proration)
        self._store(sub)
        return sub

    def renew(self, sub_id: str, term_months: int, now: float) -> BillingSubscription:
        """Version + 1 with a new term of ``term_months`` after the current end (same
        items). Raises ``SimHTTPError`` (404, 422)."""
        sub = self._active(sub_id)
        start = sub.end_date + timedelta(days=1)
        end = end_date(start, term_months)
        phase = SubscriptionPhase(start_date=start, end_date=end, items=list(sub.items))
        sub = msgspec.structs.replace(
            sub, version=sub.version + 1, end_date=end, phases=[*sub.phases, phase],
            change="renew", effective_date=start, proration=sub.amount * term_months)
        self._store(sub)
        return sub

    def cancel_at(self, sub_id: str, effective: date, now: float) -> BillingSubscription:
        """Version + 1, canceled from ``effective`` (the first of a month after the start,
        at most the day after the end): the phases are cut there. Raises ``SimHTTPError``."""
        sub = self._active(sub_id)
        if effective.day != 1 or not sub.start_date < effective <= sub.end_date:
            raise SimHTTPError(422, "subscription.bad_effective_date",
                               f"a cancellation takes effect on the first of a month after "
                               f"{sub.start_date}, not {effective}")
        kept = [p if p.end_date < effective else
                msgspec.structs.replace(p, end_date=effective - timedelta(days=1))
                for p in sub.phases if p.start_date < effective]
        lost = sum(phase_value(p) for p in sub.phases) - sum(phase_value(p) for p in kept)
        sub = msgspec.structs.replace(
            sub, status="canceled", version=sub.version + 1, canceled_at=int(now),
            end_date=effective - timedelta(days=1), phases=kept, change="cancel",
            effective_date=effective, proration=-lost)
        self._store(sub)
        self.cancelled.add(sub_id)
        return sub

    def by_deal(self) -> dict[str, list[BillingSubscription]]:
        """Subscriptions per ``metadata["deal_id"]`` (those without one under ``""``)."""
        out: dict[str, list[BillingSubscription]] = {}
        for sub in self.subscriptions.values():
            out.setdefault(sub.metadata.get("deal_id", ""), []).append(sub)
        return out


class SubscriptionService:
    """``POST /billing/v1/subscriptions``, ``GET /billing/v1/subscriptions/{id}`` and
    ``POST /billing/v1/subscriptions/{id}/cancel``."""

    def __init__(self) -> None:
        self.book = SubscriptionBook()

    def reset(self) -> None:
        self.book = SubscriptionBook(first_number=self.book.next_number)

    async def create(self, request: web.Request) -> web.Response:
        """201 created, 200 replayed (``Idempotent-Replayed: true``), 400 for a missing or
        malformed ``Idempotency-Key`` or body, 422 for a key reused with another body."""
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None or not _KEY.match(key):
            raise SimHTTPError(400, "request.invalid",
                               f"{IDEMPOTENCY_HEADER} is required: 1 to 255 visible ASCII "
                               "characters", path=IDEMPOTENCY_HEADER)
        body = await decode_body(request, _DECODER)
        sub, replayed = self.book.create(key, body, time.time())
        if replayed:
            return json_response(sub, headers={"Idempotent-Replayed": "true"})
        return json_response(sub, status=201)

    async def get(self, request: web.Request) -> web.Response:
        sub_id = request.match_info["id"]
        sub = self.book.subscriptions.get(sub_id)
        if sub is None:
            raise SimHTTPError(404, "not_found", f"no subscription {sub_id!r}")
        return json_response(sub)

    async def cancel(self, request: web.Request) -> web.Response:
        """200 with the cancelled subscription (idempotent); 404 for an unknown id."""
        return json_response(self.book.cancel(request.match_info["id"], time.time()))
