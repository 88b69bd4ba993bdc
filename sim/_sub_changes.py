"""Flow 5 in the simulator: seeded subscription changes (amend, renew, cancel) delivered as
billing webhooks, possibly out of order, and the ground truth of what the ERP and the revenue
platform must end up saying.

Theory of operation. ``POST /billing/v1/subscription-changes`` picks up to ``count`` active
subscriptions (a seeded sample, in id order) and, for each, applies one to three changes to the
billing book at once (``plan_changes``, pure and seeded per subscription id): amendments (one
item's quantity changes from the first of a later month), renewals (a new 12-month term) and at
most one cancellation (always last). Every change is a new version of the subscription and one
webhook, ``customer.subscription.updated`` (amend, renew) or ``customer.subscription.deleted``
(cancel), carrying the whole subscription at that version (its phases restate everything),
signed like every billing webhook and retried until a 2xx. With ``reorderRate`` a seeded share
of the subscriptions have their webhooks delivered shuffled (v3 before v2). In Stripe's
dialect (``dialect="stripe"``) the same versions go out as Stripe events carrying Stripe
subscription objects (``sim._stripe.subscription_event``), signed with ``Stripe-Signature``.

``lifecycle_audit`` (pure) is the ground truth: a changed subscription is in sync when its ERP
sales order and its revenue contract are at the subscription's latest version with the value
of its phases (and the order closed exactly when the subscription is canceled).
"""

from __future__ import annotations

import random
import time
from datetime import date, timedelta
from typing import Annotated, Literal

import aiohttp
import anyio
import msgspec
from aiohttp import web
from anyio.abc import TaskGroup

from contracts.platforms.billing import (
    BillingSubscription,
    SubscriptionEvent,
    SubscriptionEventData,
    SubscriptionItemIn,
)
from contracts.platforms.signing import SIGNATURE_HEADER, sign

from ._billing import REQUEST_TIMEOUT_S, post_signed, until_accepted
from ._erp_orders import SalesOrderBook
from ._http import SimHTTPError, decode_body, json_response
from ._revenue_contracts import ContractBook
from ._stripe import SIGNATURE_HEADER as STRIPE_SIGNATURE_HEADER
from ._stripe import subscription_event as stripe_subscription_event
from ._subscriptions import SubscriptionBook, subscription_value

__all__ = ["ChangeRunRequest", "ChangeService", "LifecycleAudit", "lifecycle_audit",
           "plan_changes"]

_ENCODER = msgspec.json.Encoder()
_WORKERS = 8
MAX_LISTED = 100

Kind = Literal["amend", "renew", "cancel"]


def _month_starts(after: date, until: date) -> list[date]:
    """The firsts of months strictly after ``after`` and not after ``until``."""
    out = []
    first = (after.replace(day=1) + timedelta(days=32)).replace(day=1)
    while first <= until:
        out.append(first)
        first = (first + timedelta(days=32)).replace(day=1)
    return out


def plan_changes(seed: int, book: SubscriptionBook, sub_id: str, now: float
                 ) -> list[BillingSubscription]:
    """Apply one to three seeded changes to subscription ``sub_id`` in ``book``; the
    versions they made, in order. Pure but for the book it changes (seeded per id)."""
    rng = random.Random(f"{seed}/sub-change/{sub_id}")
    made: list[BillingSubscription] = []
    for _ in range(rng.choice((1, 2, 3))):
        sub = book.subscriptions[sub_id]
        if sub.status != "active":
            break
        roll = rng.random()
        last = sub.phases[-1]
        starts = _month_starts(last.start_date, last.end_date)
        if roll < 0.6 and starts:
            items = [SubscriptionItemIn(product=i.product, quantity=i.quantity,
                                        unit_amount=i.unit_amount) for i in sub.items]
            k = rng.randrange(len(items))
            qty = max(1, items[k].quantity + rng.choice((-2, -1, 1, 2, 3, 5)))
            items[k] = msgspec.structs.replace(items[k], quantity=qty)
            made.append(book.amend(sub_id, items, rng.choice(starts), now))
        elif roll < 0.85:
            made.append(book.renew(sub_id, 12, now))
        else:
            ends = _month_starts(sub.start_date, sub.end_date)
            if not ends:
                continue
            made.append(book.cancel_at(sub_id, rng.choice(ends), now))
    return made


class ChangeRunRequest(msgspec.Struct, frozen=True, rename="camel"):
    """Body of ``POST /billing/v1/subscription-changes``: change up to ``count`` active
    subscriptions (seed default: the simulator's); ``reorder_rate`` of them get their webhooks
    shuffled. ``webhook_url`` (default: billing's ``--webhook-url``) receives them."""

    count: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**53)] | None = None
    reorder_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    webhook_url: Annotated[str, msgspec.Meta(pattern="^https?://", max_length=2000)] | None = None


class ChangeRunStatus(msgspec.Struct, frozen=True, rename="camel"):
    """Body of both routes: the run's subscriptions, its webhooks issued and accepted."""

    change_run_id: str
    subscriptions: int
    changes: int
    accepted: int
    reordered: int
    done: bool


class _Run:
    __slots__ = ("accepted", "changes", "id", "reordered", "subs")

    def __init__(self, run_id: str) -> None:
        self.id = run_id
        self.subs = 0
        self.changes = 0
        self.accepted = 0
        self.reordered = 0

    def status(self) -> ChangeRunStatus:
        return ChangeRunStatus(change_run_id=self.id, subscriptions=self.subs,
                               changes=self.changes, accepted=self.accepted,
                               reordered=self.reordered, done=self.accepted == self.changes)


class ChangeService:
    """Subscription change runs and their webhook delivery (to billing's webhook URL with its
    secret, in billing's ``dialect``: "erpgw" or "stripe"). ``run`` is the host coroutine;
    handlers only touch state synchronously."""

    def __init__(self, book: SubscriptionBook, *, seed: int, webhook_url: str,
                 webhook_secret: str, dialect: str = "erpgw") -> None:
        if dialect not in ("erpgw", "stripe"):
            raise ValueError(f"dialect must be erpgw or stripe, got {dialect!r}")
        self._stripe = dialect == "stripe"
        self.book = book
        self._seed = seed
        self._url = webhook_url
        self._secret = webhook_secret
        self._rng = random.Random(f"{seed}/sub-change-delivery")
        self._next = 1
        self.runs: dict[str, _Run] = {}
        self.changed: set[str] = set()  # subscriptions a change run changed
        self._tg: TaskGroup | None = None
        self._pending: list[tuple[_Run, list[list[bytes]], str]] = []
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Deliver change runs with ``session`` until cancelled."""
        self._session = session
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for job in self._pending:
                    tg.start_soon(self._deliver, *job)
                self._pending.clear()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            self._session = None

    def reset(self, book: SubscriptionBook) -> None:
        """Forget the runs (deliveries in flight finish) and use the new ``book``."""
        self.book = book
        self.runs = {}
        self.changed = set()

    async def create_run(self, request: web.Request) -> web.Response:
        """``POST /billing/v1/subscription-changes`` → 202 ``ChangeRunStatus``."""
        body = await decode_body(request, _DECODER)
        seed = self._seed if body.seed is None else body.seed
        active = sorted(i for i, s in self.book.subscriptions.items() if s.status == "active")
        chosen = sorted(random.Random(f"{seed}/sub-change-pick").sample(
            active, min(body.count, len(active))))
        run = _Run(f"cr_{self._next:06d}")
        self._next += 1
        now = time.time()
        queues: list[list[bytes]] = []
        for sub_id in chosen:
            versions = plan_changes(seed, self.book, sub_id, now)
            if not versions:
                continue
            bodies = [self._body(v, now) for v in versions]
            rng = random.Random(f"{seed}/sub-change-order/{sub_id}")
            if len(bodies) > 1 and rng.random() < body.reorder_rate:
                rng.shuffle(bodies)
                run.reordered += 1
            queues.append(bodies)
            self.changed.add(sub_id)
            run.subs += 1
            run.changes += len(bodies)
        self.runs[run.id] = run
        url = body.webhook_url or self._url
        if self._tg is not None:
            self._tg.start_soon(self._deliver, run, queues, url)
        else:
            self._pending.append((run, queues, url))
        return json_response(run.status(), status=202)

    def _body(self, sub: BillingSubscription, now: float) -> bytes:
        """The webhook body of version ``sub`` in billing's dialect."""
        if not self._stripe:
            return _ENCODER.encode(_event(sub))
        previous = next(v for v in self.book.history[sub.id] if v.version == sub.version - 1)
        return stripe_subscription_event(previous, sub, int(now))

    async def get_run(self, request: web.Request) -> web.Response:
        run = self.runs.get(request.match_info["id"])
        if run is None:
            raise SimHTTPError(404, "not_found", f"no change run {request.match_info['id']!r}")
        return json_response(run.status())

    async def _deliver(self, run: _Run, queues: list[list[bytes]], url: str) -> None:
        todo = iter(queues)

        async def worker() -> None:
            for bodies in todo:  # one subscription's webhooks, one after another
                for body in bodies:
                    await self._until_accepted(url, body)
                    run.accepted += 1

        async with anyio.create_task_group() as tg:
            for _ in range(min(_WORKERS, len(queues))):
                tg.start_soon(worker)

    async def _until_accepted(self, url: str, body: bytes) -> None:
        await until_accepted(lambda: self._post_once(url, body), self._rng)

    async def _post_once(self, url: str, body: bytes) -> int:
        session = self._session
        assert session is not None, "delivery runs only inside ChangeService.run"
        header = STRIPE_SIGNATURE_HEADER if self._stripe else SIGNATURE_HEADER
        return await post_signed(session, url, body, header=header,
                                 signature=sign(self._secret, body, int(time.time())),
                                 timeout=self._timeout)


_DECODER = msgspec.json.Decoder(ChangeRunRequest)


def _event(sub: BillingSubscription) -> SubscriptionEvent:
    kind = "customer.subscription.deleted" if sub.change == "cancel" else \
        "customer.subscription.updated"
    return SubscriptionEvent(id=f"evt_{sub.id}_v{sub.version}", type=kind,
                             created=sub.canceled_at or int(time.time()),
                             data=SubscriptionEventData(object=sub))


class LifecycleAudit(msgspec.Struct, frozen=True):
    """The ``subscriptions`` section of the audit: the ground truth of flow 5.

    ``changed`` subscriptions (version above 1, made by change runs), ``changes`` webhooks
    issued and ``accepted``; ``in_sync`` changed subscriptions whose ERP sales order and revenue
    contract are both at the subscription's version with the value of its phases (the order
    closed exactly when the subscription is canceled); ``out_of_sync`` lists at most 100 others
    (``out_of_sync_count`` all); ``stale_refused`` counts the writes the ERP and the revenue
    platform refused as stale (409: a version not above theirs), ``cancelled`` the changed
    subscriptions that ended.
    """

    changed: int = 0
    changes: int = 0
    accepted: int = 0
    in_sync: int = 0
    out_of_sync: list[str] = []
    out_of_sync_count: int = 0
    stale_refused: int = 0
    cancelled: int = 0


def lifecycle_audit(book: SubscriptionBook, orders: SalesOrderBook, contracts: ContractBook,
                    service: ChangeService) -> LifecycleAudit:
    """Compare every subscription a change run changed with its order and contract. Pure."""
    runs = list(service.runs.values())
    changed = [book.subscriptions[i] for i in sorted(service.changed)
               if i in book.subscriptions]
    ok, bad = 0, []
    for sub in changed:
        deal = sub.metadata.get("deal_id", "")
        value = subscription_value(sub)
        found = orders.by_external_id(deal)
        contract = contracts.contracts.get(deal)
        order = found[0] if len(found) == 1 else None
        if (order is not None and contract is not None and order.version == sub.version
                and order.total == value and (order.status == "closed")
                == (sub.status == "canceled") and contract.version == sub.version
                and contract.total == value):
            ok += 1
        else:
            bad.append(sub.id)
    return LifecycleAudit(
        changed=len(changed), changes=sum(r.changes for r in runs),
        accepted=sum(r.accepted for r in runs), in_sync=ok,
        out_of_sync=sorted(bad)[:MAX_LISTED], out_of_sync_count=len(bad),
        stale_refused=orders.stale + contracts.stale,
        cancelled=sum(1 for s in changed if s.status == "canceled"))
