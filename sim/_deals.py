"""The partner portal's deal engine: seeded deal runs delivered as signed webhooks, the deals'
saga faults, and the ground truth of flow 1 (deal to contract).

Theory of operation. ``generate_deal`` and ``decide_deal`` are pure: deal ``i`` (``dl_<i>``)
depends only on the run's seed, ``i`` and the creation time, each drawing from its own
``random.Random(f"{seed}/deal/{i}")``, so any split of a run gives the same deals. A deal is
registered (version 1) and then decided (version 2): approved with a discount, or rejected at
the run's ``rejectRate``. ``saga_fault`` picks, per approved deal, whether the ERP will refuse
its sales order (``orderRejectRate``) or the revenue platform its contract
(``contractRejectRate``): permanent business rejections that make the gateway's saga
compensate. The choice is kept in the ``DealRegistry``, which the ERP and revenue services ask
(``rejects_order`` / ``rejects_contract``) so the refusal is the same on every retry.

``DealService`` is the shell: a deal run is one task of the host task group (``run``) with a
few delivery workers; each worker takes the next deal (paced by the run's ``rate``), registers
its customer with its partner (``attribute``, the partner portal's attribution), and POSTs
``deal.registered`` then the decision to the run's webhook URL, each until a 2xx, with the
billing platform's backoff and a fresh ``Partner-Signature`` per attempt. ``reset`` cancels the
running deliveries and forgets every deal (numbering continues).

``deal_audit`` is pure: it compares the deals with what billing, the ERP and the revenue
platform recorded (see ``DealAudit``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

import aiohttp
import anyio
import msgspec
from aiohttp import web
from anyio.abc import TaskGroup

from contracts.platforms.partner import (
    DEAL_SIGNATURE_HEADER,
    DealEvent,
    DealEventData,
    DealItem,
    PartnerDeal,
)
from contracts.platforms.signing import sign

from ._billing import REQUEST_TIMEOUT_S, post_signed, until_accepted
from ._cpq import CATALOG
from ._erp_orders import SalesOrderBook
from ._http import SimHTTPError, decode_body, json_response
from ._revenue_contracts import ContractBook
from ._subscriptions import SubscriptionBook

__all__ = [
    "MAX_DEAL_RUN",
    "DealAudit",
    "DealRegistry",
    "DealRunCreated",
    "DealRunRequest",
    "DealRunStatus",
    "DealService",
    "deal_audit",
    "decide_deal",
    "generate_deal",
    "saga_fault",
]

MAX_DEAL_RUN = 100_000
MAX_LISTED = 100
_WORKERS = 8
_ENCODER = msgspec.json.Encoder()

_PARTNERS = tuple(f"pt_{n:04d}" for n in range(1, 9))
_PRODUCTS = tuple(p.id for p in CATALOG)
_PRICES = {p.id: p.list_prices for p in CATALOG}
_CURRENCIES = ("USD", "EUR", "GBP", "JPY")
_CURRENCY_WEIGHTS = (70, 15, 10, 5)
_TERMS = (12, 24, 36)
_TERM_WEIGHTS = (60, 25, 15)
_DISCOUNTS_BP = (0, 500, 1000, 1500, 2000)
_REJECTIONS = ("duplicate registration", "channel conflict", "not qualified")

SagaStep = Literal["sales_order", "revenue_contract"]
Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


def _day(ts: int) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def generate_deal(seed: int, index: int, created: int) -> PartnerDeal:
    """Deal ``index`` (``dl_<index>``) as registered at ``created`` (unix seconds). Pure.

    A partner of ``pt_0001``..``pt_0008``, a customer ``cus_00001``..``cus_02000``, one to
    three catalog products of 1..20 units each, mostly USD, a 12/24/36-month term starting on
    the first of the next month.
    """
    rng = random.Random(f"{seed}/deal/{index}")
    partner = rng.choice(_PARTNERS)
    customer = f"cus_{rng.randint(1, 2_000):05d}"
    currency = rng.choices(_CURRENCIES, _CURRENCY_WEIGHTS)[0]
    products = rng.sample(_PRODUCTS, rng.choice((1, 1, 2, 3)))
    items = [DealItem(product=p, quantity=rng.randint(1, 20)) for p in products]
    term = rng.choices(_TERMS, _TERM_WEIGHTS)[0]
    today = _day(created)
    start = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    monthly = sum(_PRICES[it.product][currency] * it.quantity for it in items)
    return PartnerDeal(
        id=f"dl_{index:06d}", partner=partner, customer=customer,
        prospect_name=f"Prospect {index:06d} Ltd", currency=currency, items=items,
        estimated_amount=monthly * term, term_months=term, start_date=start.isoformat(),
        expected_close=(today + timedelta(days=rng.randint(7, 60))).isoformat(),
        created=created)


def decide_deal(deal: PartnerDeal, seed: int, index: int, reject_rate: float,
                decided: int) -> PartnerDeal:
    """Version 2 of ``deal``: rejected at ``reject_rate``, else approved with a discount of
    0..20 % valid 90 days from ``decided``. Pure, seeded per deal."""
    rng = random.Random(f"{seed}/deal-decision/{index}")
    if rng.random() < reject_rate:
        return msgspec.structs.replace(deal, status="rejected", version=2, decided=decided,
                                       rejection_reason=rng.choice(_REJECTIONS))
    day = _day(decided)
    return msgspec.structs.replace(
        deal, status="approved", version=2, decided=decided,
        discount_bp=rng.choice(_DISCOUNTS_BP), approver="channel-desk",
        valid_from=day.isoformat(), valid_until=(day + timedelta(days=90)).isoformat())


def saga_fault(seed: int, index: int, order_rate: float, contract_rate: float
               ) -> SagaStep | None:
    """Which step of approved deal ``index``'s saga the platforms refuse for good: its sales
    order (at ``order_rate``), its revenue contract (at ``contract_rate``), or none. Pure;
    draws nothing when both rates are 0."""
    if order_rate <= 0 and contract_rate <= 0:
        return None
    roll = random.Random(f"{seed}/deal-saga/{index}").random()
    if roll < order_rate:
        return "sales_order"
    if roll < order_rate + contract_rate:
        return "revenue_contract"
    return None


class DealRunRequest(msgspec.Struct, frozen=True, rename="camel"):
    """Body of ``POST /partner/v1/deal-runs``.

    ``deals`` to register, at ``rate`` per second (0: all at once), from ``seed`` (default:
    the simulator's), delivered to ``webhook_url`` (default: the simulator's partner webhook
    URL). ``reject_rate``: the share of deals rejected; ``order_reject_rate`` /
    ``contract_reject_rate``: the share of approved deals whose sales order (``CREDIT_HOLD``)
    or revenue contract (``CONTRACT_REJECTED``) the platforms refuse for good.
    """

    deals: Annotated[int, msgspec.Meta(ge=1, le=MAX_DEAL_RUN)]
    rate: Annotated[float, msgspec.Meta(ge=0.0, le=1_000_000.0)] = 0.0
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**53)] | None = None
    webhook_url: Annotated[str, msgspec.Meta(pattern="^https?://", max_length=2000)] | None = None
    reject_rate: Share = 0.1
    order_reject_rate: Share = 0.0
    contract_reject_rate: Share = 0.0


_RUN_DECODER = msgspec.json.Decoder(DealRunRequest)


class DealRunCreated(msgspec.Struct, frozen=True, rename="camel"):
    deal_run_id: str
    deals: int
    first_deal: str


class DealRunStatus(msgspec.Struct, frozen=True, rename="camel"):
    """Body of ``GET /partner/v1/deal-runs/{id}``: ``accepted`` deals had both webhooks
    answered 2xx; ``pending`` were issued but not yet."""

    deal_run_id: str
    deals: int
    issued: int
    accepted: int
    pending: int
    attempts: int
    approved: int
    rejected: int
    done: bool


class _Deal:
    __slots__ = ("accepted_at", "deal", "fault", "index", "registered")

    def __init__(self, index: int, registered: PartnerDeal, deal: PartnerDeal,
                 fault: SagaStep | None) -> None:
        self.index = index
        self.registered = registered
        self.deal = deal  # the latest version
        self.fault = fault
        self.accepted_at: float | None = None


class _Run:
    __slots__ = ("accepted", "approved", "attempts", "first", "id", "issued", "rejected",
                 "request", "seed", "url")

    def __init__(self, run_id: str, request: DealRunRequest, first: int, seed: int,
                 url: str) -> None:
        self.id = run_id
        self.request = request
        self.first = first
        self.seed = seed
        self.url = url
        self.issued = self.accepted = self.attempts = self.approved = self.rejected = 0

    def status(self) -> DealRunStatus:
        n = self.request.deals
        return DealRunStatus(deal_run_id=self.id, deals=n, issued=self.issued,
                             accepted=self.accepted, pending=self.issued - self.accepted,
                             attempts=self.attempts, approved=self.approved,
                             rejected=self.rejected, done=self.accepted == n)


class DealRegistry:
    """Every deal issued since start or the last reset, with its saga fault. Pure state."""

    def __init__(self) -> None:
        self.deals: dict[str, _Deal] = {}
        self.runs: dict[str, _Run] = {}

    def rejects_order(self, external_id: str) -> bool:
        """Whether the ERP refuses the sales order of deal ``external_id`` (injected)."""
        d = self.deals.get(external_id)
        return d is not None and d.fault == "sales_order"

    def rejects_contract(self, contract_id: str) -> bool:
        """Whether the revenue platform refuses the contract of deal ``contract_id``."""
        d = self.deals.get(contract_id)
        return d is not None and d.fault == "revenue_contract"


class DealAudit(msgspec.Struct, frozen=True):
    """The ``deals`` section of the audit: the ground truth of flow 1 (deal to contract).

    ``deals`` issued, ``accepted`` (both webhooks answered 2xx), ``approved`` / ``rejected``;
    ``injected_failures`` approved deals whose sales order or revenue contract the platforms
    refuse for good. What the platforms hold: ``subscriptions_created`` / ``_cancelled``,
    ``sales_orders_created`` / ``_closed``, ``revenue_contracts``. Per approved deal:
    ``completed`` = no injected failure and exactly one active subscription, one open sales
    order and one revenue contract; ``compensated`` = an injected failure that was met, every
    subscription and order it had created cancelled/closed and no revenue contract.
    ``duplicates`` = subscriptions and orders beyond the first per deal (DUP); ``unexpected``
    = subscriptions, orders or contracts of a rejected or unknown deal. ``incomplete`` lists
    (at most 100, sorted) the approved deals neither completed nor compensated (in flight,
    dead-lettered or lost); ``incomplete_count`` counts them all.
    """

    deals: int = 0
    accepted: int = 0
    approved: int = 0
    rejected: int = 0
    injected_failures: int = 0
    subscriptions_created: int = 0
    subscriptions_cancelled: int = 0
    sales_orders_created: int = 0
    sales_orders_closed: int = 0
    revenue_contracts: int = 0
    completed: int = 0
    compensated: int = 0
    duplicates: int = 0
    unexpected: int = 0
    incomplete: list[str] = []
    incomplete_count: int = 0


def deal_audit(registry: DealRegistry, subscriptions: SubscriptionBook,
               orders: SalesOrderBook, contracts: ContractBook) -> DealAudit:
    """Compare the deals with the platforms' records (see ``DealAudit``). Pure; raises
    nothing."""
    subs_by_deal = subscriptions.by_deal()
    approved = {i for i, d in registry.deals.items() if d.deal.status == "approved"}
    refused_orders = set(orders.refused)
    refused_contracts = set(contracts.refused)
    completed = compensated = duplicates = 0
    incomplete: list[str] = []
    for deal_id in approved:
        d = registry.deals[deal_id]
        subs = subs_by_deal.get(deal_id, [])
        sos = orders.by_external_id(deal_id)
        contract = contracts.contracts.get(deal_id)
        duplicates += max(0, len(subs) - 1) + max(0, len(sos) - 1)
        if d.fault is None:
            if (len(subs) == 1 and subs[0].status == "active" and len(sos) == 1
                    and sos[0].status == "open" and contract is not None):
                completed += 1
                continue
        else:
            met = deal_id in (refused_orders if d.fault == "sales_order" else refused_contracts)
            undone = (bool(subs) and all(s.status == "canceled" for s in subs)
                      and all(o.status == "closed" for o in sos) and contract is None
                      and (d.fault == "sales_order") == (not sos))
            if met and undone:
                compensated += 1
                continue
        incomplete.append(deal_id)
    unexpected = sum(len(v) for k, v in subs_by_deal.items() if k and k not in approved)
    unexpected += sum(1 for o in orders.orders.values() if o.external_id not in approved)
    unexpected += sum(1 for c in contracts.contracts if c not in approved)
    all_orders = list(orders.orders.values())
    all_subs = list(subscriptions.subscriptions.values())
    return DealAudit(
        deals=len(registry.deals),
        accepted=sum(1 for d in registry.deals.values() if d.accepted_at is not None),
        approved=len(approved),
        rejected=sum(1 for d in registry.deals.values() if d.deal.status == "rejected"),
        injected_failures=sum(1 for i in approved if registry.deals[i].fault is not None),
        subscriptions_created=len(all_subs),
        subscriptions_cancelled=sum(1 for s in all_subs if s.status == "canceled"),
        sales_orders_created=len(all_orders),
        sales_orders_closed=sum(1 for o in all_orders if o.status == "closed"),
        revenue_contracts=len(contracts.contracts),
        completed=completed, compensated=compensated, duplicates=duplicates,
        unexpected=unexpected, incomplete=sorted(incomplete)[:MAX_LISTED],
        incomplete_count=len(incomplete))


class _Epoch:
    """What a reset forgets: the registry and the task group delivering its runs (``pending``
    holds runs started before the host entered the epoch)."""

    def __init__(self) -> None:
        self.registry = DealRegistry()
        self.tg: TaskGroup | None = None
        self.pending: list[_Run] = []


class DealService:
    """Deal runs, their webhook delivery and the deals API of the partner portal.

    ``attribute(customer, partner, deal_id)`` registers a deal's customer with its partner
    (``PartnerPortal.attribute``). Handlers run in aiohttp's request tasks and only touch state
    synchronously; ``run`` is the host coroutine (a task of the app's host task group).
    """

    def __init__(self, *, seed: int, webhook_url: str, webhook_secret: str,
                 attribute: Callable[[str, str, str], None] | None = None) -> None:
        if not webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"partner webhook_url must be an http(s) URL, got {webhook_url!r}")
        self._seed = seed
        self._url = webhook_url
        self._secret = webhook_secret
        self._attribute = attribute
        self._rng = random.Random(f"{seed}/deal-delivery")
        self._next_deal = 1
        self._next_run = 1
        self._epoch = _Epoch()
        self._session: aiohttp.ClientSession | None = None
        self._running = False
        self._timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    @property
    def registry(self) -> DealRegistry:
        return self._epoch.registry

    def rejects_order(self, external_id: str) -> bool:
        return self._epoch.registry.rejects_order(external_id)

    def rejects_contract(self, contract_id: str) -> bool:
        return self._epoch.registry.rejects_contract(contract_id)

    # -- the host -----------------------------------------------------------------------------

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Deliver deal runs with ``session`` until cancelled (one epoch after another)."""
        self._session = session
        self._running = True
        try:
            while True:
                epoch = self._epoch
                async with anyio.create_task_group() as tg:
                    epoch.tg = tg
                    for job in epoch.pending:
                        tg.start_soon(self._deliver_run, epoch, job)
                    epoch.pending.clear()
                    await anyio.sleep_forever()  # until a reset cancels this epoch
                epoch.tg = None
        finally:
            self._running = False
            self._session = None

    def reset(self) -> None:
        """Forget every deal and run and stop their deliveries; numbering continues."""
        old = self._epoch
        self._epoch = _Epoch()
        if old.tg is not None:
            old.tg.cancel_scope.cancel()

    def start_run(self, request: DealRunRequest) -> DealRunCreated:
        """Queue a deal run. Raises ``SimHTTPError`` 503 when the host is not running."""
        if not self._running:
            raise SimHTTPError(503, "sim.stopped", "the deal delivery host is not running")
        run = _Run(f"dr_{self._next_run:06d}", request, self._next_deal,
                   self._seed if request.seed is None else request.seed,
                   request.webhook_url or self._url)
        self._next_run += 1
        self._next_deal += request.deals
        epoch = self._epoch
        epoch.registry.runs[run.id] = run
        if epoch.tg is not None:  # handlers run in their own tasks; the host's group owns it
            epoch.tg.start_soon(self._deliver_run, epoch, run)
        else:
            epoch.pending.append(run)
        return DealRunCreated(deal_run_id=run.id, deals=request.deals,
                              first_deal=f"dl_{run.first:06d}")

    async def _deliver_run(self, epoch: _Epoch, run: _Run) -> None:
        started = anyio.current_time()
        indices = iter(range(run.first, run.first + run.request.deals))

        async def worker() -> None:
            for index in indices:
                k = index - run.first
                if run.request.rate > 0:
                    wait = k / run.request.rate - (anyio.current_time() - started)
                    if wait > 0:
                        await anyio.sleep(wait)
                await self._deliver_deal(epoch, run, index)

        async with anyio.create_task_group() as tg:
            for _ in range(min(_WORKERS, run.request.deals)):
                tg.start_soon(worker)

    async def _deliver_deal(self, epoch: _Epoch, run: _Run, index: int) -> None:
        req = run.request
        now = int(time.time())
        registered = generate_deal(run.seed, index, now)
        decided = decide_deal(registered, run.seed, index, req.reject_rate, now)
        fault = None if decided.status != "approved" else saga_fault(
            run.seed, index, req.order_reject_rate, req.contract_reject_rate)
        record = _Deal(index, registered, decided, fault)
        epoch.registry.deals[registered.id] = record
        run.issued += 1
        if decided.status == "approved":
            run.approved += 1
        else:
            run.rejected += 1
        if self._attribute is not None:
            self._attribute(registered.customer, registered.partner, registered.id)
        for deal, kind in ((registered, "deal.registered"), (decided, f"deal.{decided.status}")):
            event = DealEvent(id=f"evt_{deal.id}_v{deal.version}", type=kind,
                              created=deal.decided or deal.created,
                              data=DealEventData(object=deal))
            await self._until_accepted(run, _ENCODER.encode(event))
        record.accepted_at = time.time()
        run.accepted += 1

    async def _until_accepted(self, run: _Run, body: bytes) -> None:
        async def attempt() -> int:
            run.attempts += 1
            return await self._post_once(run.url, body)

        await until_accepted(attempt, self._rng)

    async def _post_once(self, url: str, body: bytes) -> int:
        session = self._session
        assert session is not None, "delivery runs only inside DealService.run"
        return await post_signed(session, url, body, header=DEAL_SIGNATURE_HEADER,
                                 signature=sign(self._secret, body, int(time.time())),
                                 timeout=self._timeout)

    # -- HTTP handlers ------------------------------------------------------------------------

    async def create_run(self, request: web.Request) -> web.Response:
        """``POST /partner/v1/deal-runs`` → 202 ``DealRunCreated``; 400 naming the field."""
        body = await decode_body(request, _RUN_DECODER)
        if body.order_reject_rate + body.contract_reject_rate > 1.0:
            raise SimHTTPError(400, "request.invalid",
                               "orderRejectRate + contractRejectRate must not exceed 1",
                               path="$.contractRejectRate")
        return json_response(self.start_run(body), status=202)

    async def get_run(self, request: web.Request) -> web.Response:
        run_id = request.match_info["id"]
        run = self._epoch.registry.runs.get(run_id)
        if run is None:
            raise SimHTTPError(404, "not_found", f"no deal run {run_id!r}")
        return json_response(run.status())

    async def get_deal(self, request: web.Request) -> web.Response:
        """``GET /partner/v1/deals/{id}`` → the deal's latest version; 404 when unknown."""
        deal_id = request.match_info["id"]
        record = self._epoch.registry.deals.get(deal_id)
        if record is None:
            raise SimHTTPError(404, "not_found", f"no deal {deal_id!r}")
        return json_response(record.deal)
