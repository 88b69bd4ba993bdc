"""The simulated billing platform: invoice generation and signed webhook delivery.

Theory of operation. ``generate_invoices`` is pure: invoice ``i`` depends only on the seed and
``i`` (each invoice draws from its own ``random.Random(f"{seed}/{i}")``), so any split of a run
into chunks produces the same invoices. ``BillingService`` is the shell:

* one *host* coroutine (``run``) owns everything that runs in the background: a task group
  with ``delivery_concurrency`` delivery workers reading one memory stream (the outbox), plus
  one issuer task per bill run. Nothing is spawned per invoice (but see duplicates below).
* an issuer paces its run (``due_count``), generates invoices in chunks, and for each one
  takes a slot of a semaphore (``2 * delivery_concurrency`` slots), stamps ``issued_at``,
  encodes the event once and puts it in the outbox. A worker frees the slot when the event is
  accepted, so the sim never holds more than that many undelivered events: a slow receiver
  slows issuance (backpressure) instead of growing memory, and ``issued_at`` is the moment an
  event was ready to go rather than the start of a queue wait inside the sim.
* a worker POSTs the body, signed afresh per attempt, until a 2xx, sleeping
  ``backoff_delay`` between attempts; connection errors and the 10 s timeout count as failed
  attempts with status 0.
* webhook faults (``sim._faults.BillingFaults``, from ``PUT /sim/v1/faults`` and scenario
  windows) are planned per event when it is issued (``plan_webhook``, pure and seeded by the
  invoice number). The worker sends an event's mangled and drifted extras first, then the
  genuine delivery (with any concurrent duplicate copies in a small task group, the only
  per-event tasks), then the later copies and the replay. Extras are sent once, never
  retried; their statuses are counted per mode (``ModeStats``) for the audit. Reordering
  holds up to ``reorder_window`` issued events (each holding a slot) and releases them
  shuffled.
* the events list (``GET /billing/v1/events``) rebuilds each event from its record (seed,
  invoice number, times), so listing costs no stored bodies.
* all the state one ``reset`` clears lives in an ``_Epoch``. Reset swaps in a new epoch and
  cancels the old one's task group; the host then starts the new epoch's workers. Invoice and
  bill-run numbers are not reset, so ids stay unique for the life of the process.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

import aiohttp
import anyio
import msgspec
from aiohttp import web
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from contracts.platforms.billing import (
    BillingCreditNote,
    BillingEvent,
    BillingEventList,
    BillingInvoice,
    BillingInvoiceLine,
    BillingPayment,
    CreditNoteEvent,
    CreditNoteEventData,
    CreditNoteEventList,
    CreditNoteLine,
    CreditNoteLineList,
    EventData,
    LineList,
    PaymentEvent,
    PaymentEventData,
    PaymentEventList,
)
from contracts.platforms.signing import SIGNATURE_HEADER, sign

from ._config import SimConfig
from ._control import FaultControl, Handler
from ._faults import WebhookPlan, plan_webhook
from ._http import SimHTTPError, decode_body, json_response, query_int
from ._records import IssuedInvoice
from ._stripe import SIGNATURE_HEADER as STRIPE_SIGNATURE_HEADER
from ._stripe import StripeLog, check_key, project_followup, stripe_invoice
from ._stripe import event_body as stripe_event_body
from ._stripe import followup_events as stripe_followups
from ._webhooks import drift_body, mangled_request, shadow_event, shuffle_window

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "REQUEST_TIMEOUT_S",
    "BillRunOptions",
    "BillRunRequest",
    "BillRunStatus",
    "BillingService",
    "Delivery",
    "EventStatus",
    "ModeStats",
    "TokenBucket",
    "amended_invoice",
    "backoff_delay",
    "due_count",
    "followup_events",
    "generate_invoices",
    "plan_amendment",
    "post_signed",
    "until_accepted",
]

log = logging.getLogger("sim.billing")

BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0
REQUEST_TIMEOUT_S = 10.0
MAX_BILL_RUN = 1_000_000
MAX_RATE = 1_000_000.0  # events/s; bounds the pacing arithmetic (an infinite rate would overflow)
_CHUNK = 256
MAX_EVENTS_PAGE = 1000
IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")

_EVENT_ENCODER = msgspec.json.Encoder()
_NOTE_DECODER = msgspec.json.Decoder(CreditNoteEvent)
# ``GET /billing/v1/events?type=`` values and the follow-up kind each lists.
_FOLLOWUP_TYPES = {"credit_note.created": "credit_memos", "invoice.paid": "payments"}
_PAYMENT_DECODER = msgspec.json.Decoder(PaymentEvent)

# (product id, description); the weights below make a few products common, as in real catalogs.
_PRODUCTS: tuple[tuple[str, str], ...] = (
    ("prod_platform", "Platform subscription"),
    ("prod_seats", "Additional seats"),
    ("prod_api", "API calls (per 1k)"),
    ("prod_storage", "Storage (per GB-month)"),
    ("prod_support", "Premium support"),
    ("prod_onboarding", "Onboarding services"),
    ("prod_sms", "SMS messages"),
    ("prod_analytics", "Analytics add-on"),
)
_PRODUCT_WEIGHTS = (30, 20, 15, 10, 8, 5, 7, 5)
_CURRENCIES = ("usd", "eur", "gbp", "jpy")
_CURRENCY_WEIGHTS = (70, 15, 10, 5)
_LINE_COUNTS = (1, 2, 3, 4, 5)
_LINE_COUNT_WEIGHTS = (40, 25, 15, 10, 10)
# Tax rates in basis points (0 to 20 %).
_TAX_BP = (0, 500, 700, 800, 1000, 1900, 2000)
_TAX_WEIGHTS = (20, 10, 10, 10, 15, 15, 20)


def _month_bounds(now: float) -> tuple[int, int]:
    """First and last second (unix, UTC) of the month containing ``now``."""
    dt = datetime.fromtimestamp(now, UTC)
    start = datetime(dt.year, dt.month, 1, tzinfo=UTC)
    nxt = datetime(dt.year + dt.month // 12, dt.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()), int(nxt.timestamp()) - 1


def _quantity(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.6:
        return rng.randint(1, 5)
    if roll < 0.9:
        return rng.randint(6, 25)
    return rng.randint(26, 100)


def _invoice(seed: int, index: int, created: int, period: tuple[int, int]) -> BillingInvoice:
    return _invoice_and_tax(seed, index, created, period)[0]


def _invoice_and_tax(
    seed: int, index: int, created: int, period: tuple[int, int]
) -> tuple[BillingInvoice, int]:
    rng = random.Random(f"{seed}/{index}")
    currency = rng.choices(_CURRENCIES, _CURRENCY_WEIGHTS)[0]
    n_lines = rng.choices(_LINE_COUNTS, _LINE_COUNT_WEIGHTS)[0]
    lines: list[BillingInvoiceLine] = []
    for k in range(1, n_lines + 1):
        product, description = rng.choices(_PRODUCTS, _PRODUCT_WEIGHTS)[0]
        quantity = _quantity(rng)
        unit_amount = rng.randint(100, 50_000)
        lines.append(
            BillingInvoiceLine(
                id=f"il_{index:06d}_{k}",
                product=product,
                description=description,
                quantity=quantity,
                unit_amount=unit_amount,
                amount=quantity * unit_amount,
            )
        )
    subtotal = sum(line.amount for line in lines)
    tax_bp = rng.choices(_TAX_BP, _TAX_WEIGHTS)[0]
    tax = (subtotal * tax_bp + 5_000) // 10_000  # round half up, in integers
    return BillingInvoice(
        id=f"in_{index:06d}",
        number=f"INV-{index:06d}",
        customer=f"cus_{rng.randint(1, 2_000):05d}",
        currency=currency,
        created=created,
        period_start=period[0],
        period_end=period[1],
        lines=LineList(data=lines),
        subtotal=subtotal,
        tax=tax,
        total=subtotal + tax,
    ), tax_bp


def amended_invoice(seed: int, index: int, created: int) -> BillingInvoice:
    """Version 2 of invoice ``index`` (as ``generate_invoices`` makes it with ``now=created``).

    One line, drawn from ``random.Random(f"{seed}/amend/{index}")``, gains 1 to 5 units (an
    upsell after finalisation); its amount, the subtotal, the tax (the same rate, rounded half
    up) and the total follow. Pure. Raises nothing.
    """
    v1, tax_bp = _invoice_and_tax(seed, index, created, _month_bounds(created))
    rng = random.Random(f"{seed}/amend/{index}")
    lines = list(v1.lines.data)
    k = rng.randrange(len(lines))
    line = lines[k]
    quantity = line.quantity + rng.randint(1, 5)
    lines[k] = msgspec.structs.replace(line, quantity=quantity,
                                       amount=quantity * line.unit_amount)
    subtotal = sum(x.amount for x in lines)
    tax = (subtotal * tax_bp + 5_000) // 10_000
    return msgspec.structs.replace(v1, lines=LineList(data=lines), subtotal=subtotal, tax=tax,
                                   total=subtotal + tax, version=2)


def plan_amendment(seed: int, index: int, amend_rate: float, reorder_rate: float
                   ) -> tuple[bool, bool]:
    """Whether invoice ``index`` gets a version 2 at ``amend_rate``, and whether that v2 is
    delivered before v1 at ``reorder_rate``. Pure, seeded per invoice; draws nothing when
    ``amend_rate`` is 0."""
    if amend_rate <= 0.0:
        return False, False
    rng = random.Random(f"{seed}/amend-plan/{index}")
    amended = rng.random() < amend_rate
    early = rng.random() < reorder_rate
    return amended, amended and early


def followup_events(seed: int, index: int, invoice: BillingInvoice, created: int,
                    options: BillRunOptions) -> list[tuple[str, bytes]]:
    """The credit note and payment webhooks of invoice ``index`` (``invoice`` is its latest
    version), as (kind, encoded event), in delivery order. Pure, seeded per invoice.

    A credit note (at ``credit_memo_rate``) credits part (10 to 100 %) of one line; a payment
    (at ``payment_rate``) pays the total less any credit note, ``paid_at`` 1 to 3600 s after
    ``created``.
    """
    rng = random.Random(f"{seed}/followups/{index}")
    out: list[tuple[str, bytes]] = []
    credited = 0
    if options.credit_memo_rate > 0 and rng.random() < options.credit_memo_rate:
        line = rng.choice(invoice.lines.data)
        credited = max(1, line.amount * rng.randint(10, 100) // 100) if line.amount else 0
        note = BillingCreditNote(
            id=f"cn_{index:06d}", invoice=invoice.id, currency=invoice.currency,
            lines=CreditNoteLineList(data=[CreditNoteLine(
                id=f"cnli_{index:06d}_1", invoice_line=line.id, description=line.description,
                amount=credited)]),
            amount=credited, created=created, customer=invoice.customer)
        out.append(("credit_memos", _EVENT_ENCODER.encode(CreditNoteEvent(
            id=f"evt_{note.id}", type="credit_note.created", created=created,
            data=CreditNoteEventData(object=note)))))
    if options.payment_rate > 0 and rng.random() < options.payment_rate:
        paid_at = created + rng.randint(1, 3600)
        payment = BillingPayment(id=f"py_{index:06d}", invoice=invoice.id,
                                 amount=max(0, invoice.total - credited),
                                 currency=invoice.currency, paid_at=paid_at,
                                 customer=invoice.customer)
        out.append(("payments", _EVENT_ENCODER.encode(PaymentEvent(
            id=f"evt_{payment.id}", type="invoice.paid", created=paid_at,
            data=PaymentEventData(object=payment)))))
    return out


def _updated_event(v2: BillingInvoice, created: int) -> BillingEvent:
    """The ``invoice.updated`` event carrying version 2 of an invoice."""
    return BillingEvent(id=f"evt_{v2.id}_v{v2.version}", type="invoice.updated",
                        created=created, data=EventData(object=v2))


def generate_invoices(
    count: int, seed: int, start_index: int, *, now: float | None = None
) -> list[BillingInvoice]:
    """``count`` invoices numbered from ``start_index`` (``in_000001`` for index 1).

    A realistic mix: 1-5 lines, quantities 1-100 (mostly small), unit amounts 100-50,000
    minor units, currencies mostly usd with eur, gbp and some jpy, tax 0-20 % of the subtotal
    rounded half up. ``created`` is ``now`` (default: the wall clock) and the period is the
    calendar month (UTC) containing it. Pure when ``now`` is given: invoice ``i`` depends only
    on ``seed``, ``i`` and ``now``. Raises ``ValueError`` for a negative ``count`` or a
    ``start_index`` below 1.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if start_index < 1:
        raise ValueError(f"start_index must be >= 1, got {start_index}")
    at = time.time() if now is None else now
    period = _month_bounds(at)
    return [_invoice(seed, i, int(at), period) for i in range(start_index, start_index + count)]


def backoff_delay(attempt: int, jitter: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential from ``BACKOFF_BASE_S`` doubling per attempt, capped at ``BACKOFF_CAP_S``;
    ``jitter`` in [0, 1) picks a point in the upper half of that delay ("equal jitter"), so
    retries of many events spread out but never fire early. Raises ``ValueError`` for
    ``attempt < 1``.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** min(attempt - 1, 32))
    return delay / 2 + delay / 2 * jitter


async def post_signed(session: aiohttp.ClientSession, url: str, body: bytes, *,
                      header: str, signature: str | None,
                      timeout: aiohttp.ClientTimeout) -> int:
    """One webhook POST of ``body`` with ``signature`` in ``header`` (no header when
    ``None``): its status, or 0 for a connection error or timeout (never raises those)."""
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[header] = signature
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.debug("webhook delivery to %s failed: %r", url, exc)
        return 0


async def until_accepted(post: Callable[[], Awaitable[int]], rng: random.Random) -> None:
    """Call ``post`` (one delivery attempt, answering its status) until a 2xx, sleeping
    ``backoff_delay`` between attempts: at-least-once delivery, as the platforms do."""
    attempt = 0
    while True:
        attempt += 1
        if 200 <= await post() < 300:
            return
        await anyio.sleep(backoff_delay(attempt, rng.random()))


def due_count(elapsed: float, rate: float, total: int) -> int:
    """How many of ``total`` events are due ``elapsed`` seconds into a run at ``rate``/s.

    Event ``k`` (0-based) is due at ``k / rate``, so the first goes at once; ``rate`` 0 means
    all at once. Raises nothing.
    """
    if rate <= 0:
        return total
    return min(total, math.floor(max(elapsed, 0.0) * rate) + 1)


Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class BillRunOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The opt-in extras of a bill run (all off by default; see ``BillRunRequest``)."""

    amend_rate: float = 0.0
    reorder_amendments: float = 0.0
    credit_memo_rate: float = 0.0
    payment_rate: float = 0.0


class BillRunRequest(msgspec.Struct, frozen=True):
    """Body of ``POST /billing/v1/bill-runs``.

    Opt-in extras (0 = off): ``amend_rate`` is the share of invoices that get a version 2
    (``invoice.updated``, the full invoice with ``version: 2``) delivered after v1 is
    accepted; ``reorder_amendments`` the share of those whose v2 is delivered before v1.
    ``credit_memo_rate`` and ``payment_rate``: the share of invoices that get a
    ``credit_note.created`` and an ``invoice.paid`` webhook after the invoice was accepted.
    """

    invoices: Annotated[int, msgspec.Meta(ge=1, le=MAX_BILL_RUN)]
    rate: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_RATE)] = 0.0
    amend_rate: Share = 0.0
    reorder_amendments: Share = 0.0
    credit_memo_rate: Share = 0.0
    payment_rate: Share = 0.0


_BILL_RUN_DECODER = msgspec.json.Decoder(BillRunRequest)


class BillRunCreated(msgspec.Struct, frozen=True):
    bill_run_id: str
    invoices: int


class BillRunStatus(msgspec.Struct, frozen=True):
    """Body of ``GET /billing/v1/bill-runs/{id}``. ``pending`` = issued but not yet accepted."""

    bill_run_id: str
    invoices: int
    rate: float
    issued: int
    accepted: int
    pending: int
    attempts: int
    done: bool


class EventStatus(msgspec.Struct, frozen=True):
    """Body of ``GET /billing/v1/events/{id}``: one webhook's delivery record.

    ``last_status`` is the last HTTP status received, 0 for a connection error or timeout,
    null before the first attempt.
    """

    event_id: str
    invoice_id: str
    issued_at: float
    attempts: int
    accepted_at: float | None
    last_status: int | None


class Delivery(msgspec.Struct):
    """Mutable delivery record of one issued invoice's event (written by one worker).

    ``index`` is the invoice number, ``created`` the invoice's ``created`` (so the event can be
    rebuilt byte for byte for the events list) and ``seq`` the event's position in the events
    list (its cursor), unique for the life of the process.
    """

    invoice: IssuedInvoice
    attempts: int = 0
    accepted_at: float | None = None
    last_status: int | None = None
    index: int = 0
    created: int = 0
    seq: int = 0
    v2_seq: int = 0  # the seq of the invoice.updated event (0: not amended)


class ModeStats(msgspec.Struct):
    """Extra deliveries of one fault mode: how many were sent and the statuses that came back
    (0 for a connection error or timeout)."""

    sent: int = 0
    statuses: dict[int, int] = {}

    def add(self, status: int) -> None:
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1


class _BillRun:
    __slots__ = ("accepted", "attempts", "id", "invoices", "issued", "options", "rate")

    def __init__(self, run_id: str, invoices: int, rate: float,
                 options: BillRunOptions | None = None) -> None:
        self.id = run_id
        self.invoices = invoices
        self.rate = rate
        self.options = options or _NO_OPTIONS
        self.issued = 0
        self.accepted = 0
        self.attempts = 0

    def status(self) -> BillRunStatus:
        return BillRunStatus(
            bill_run_id=self.id,
            invoices=self.invoices,
            rate=self.rate,
            issued=self.issued,
            accepted=self.accepted,
            pending=self.issued - self.accepted,
            attempts=self.attempts,
            done=self.accepted == self.invoices,
        )


_NO_OPTIONS = BillRunOptions()


class _Outbound:
    __slots__ = ("amendment", "amendment_first", "body", "event", "followups", "plan", "record",
                 "run")

    def __init__(
        self, record: Delivery, body: bytes, run: _BillRun, event: BillingEvent, plan: WebhookPlan
    ) -> None:
        self.record = record
        self.body = body
        self.run = run
        self.event = event
        self.plan = plan
        self.amendment: bytes | None = None  # the invoice.updated body, when amended
        self.amendment_first = False  # deliver v2 before v1
        self.followups: list[tuple[str, bytes]] = []  # (kind, body) after acceptance


class _Epoch:
    """Everything a reset clears: records, runs, the outbox and the tasks working on them,
    the events list, the idempotency keys and the webhook fault statistics."""

    def __init__(self, slots: int) -> None:
        self.records: dict[str, Delivery] = {}
        self.runs: dict[str, _BillRun] = {}
        # issue order = seq order (the events list): a record and the invoice version
        self.order: list[tuple[Delivery, int]] = []
        self.seqs: list[int] = []
        self.idempotency: dict[str, tuple[bytes, int, bytes]] = {}
        self.stats: dict[str, ModeStats] = {}
        # kind ("credit_memos", "payments") -> [issued, accepted]
        self.followups: dict[str, list[int]] = {"credit_memos": [0, 0], "payments": [0, 0]}
        # (kind, body) of every accepted follow-up webhook, in acceptance order (the audit's
        # ground truth of credit memos, payments and the settlements they should cause)
        self.accepted_followups: list[tuple[str, bytes]] = []
        # document id (cn_…, py_…) -> when its webhook got the 2xx (unix s)
        self.followup_accepted_at: dict[str, float] = {}
        self.reordered = 0
        self.stripe_log = StripeLog()  # the Stripe dialect's events and invoices lists
        self.outbox_send: MemoryObjectSendStream[_Outbound]
        self.outbox_recv: MemoryObjectReceiveStream[_Outbound]
        self.outbox_send, self.outbox_recv = anyio.create_memory_object_stream[_Outbound](
            max_buffer_size=math.inf
        )
        self.jobs_send: MemoryObjectSendStream[_BillRun]
        self.jobs_recv: MemoryObjectReceiveStream[_BillRun]
        self.jobs_send, self.jobs_recv = anyio.create_memory_object_stream[_BillRun](
            max_buffer_size=math.inf
        )
        self.slots_total = slots
        self.slots = anyio.Semaphore(slots)
        self.scope: anyio.CancelScope | None = None

    def close(self) -> None:
        for stream in (self.outbox_send, self.outbox_recv, self.jobs_send, self.jobs_recv):
            stream.close()

    def stat(self, mode: str) -> ModeStats:
        s = self.stats.get(mode)
        if s is None:
            s = self.stats[mode] = ModeStats()
        return s


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` banked; pure but for the clock passed in.

    ``take(now)`` returns 0.0 when a token was taken, else the seconds until one is due.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.at = now

    def take(self, now: float) -> float:
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class BillingService:
    """Bill runs and webhook delivery; HTTP handlers for the billing API.

    ``run`` is the host coroutine (one task, started and cancelled by the app's cleanup
    context); handlers run in aiohttp's request tasks and only touch state synchronously.
    """

    def __init__(self, config: SimConfig, control: FaultControl | None = None) -> None:
        if config.delivery_concurrency < 1:
            raise ValueError(
                f"delivery_concurrency must be >= 1, got {config.delivery_concurrency}"
            )
        if not config.webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url must be an http(s) URL, got {config.webhook_url!r}")
        if config.billing_rate_limit < 0:
            raise ValueError(
                f"billing_rate_limit must be >= 0, got {config.billing_rate_limit}"
            )
        if config.billing_dialect not in ("erpgw", "stripe"):
            raise ValueError(f"billing_dialect must be erpgw or stripe, got "
                             f"{config.billing_dialect!r}")
        self._config = config
        # Stripe's dialect: Stripe-shaped events signed with Stripe-Signature (sim._stripe).
        self._stripe = config.billing_dialect == "stripe"
        self._control = control or FaultControl(config.seed, config.scenario)
        self._rng = random.Random(config.seed)
        self._next_invoice = 1
        self._next_run = 1
        self._next_seq = 1
        self._epoch: _Epoch | None = None
        self._session: aiohttp.ClientSession | None = None
        self._running = False
        self._timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        self._bucket: TokenBucket | None = None

    # -- the host ---------------------------------------------------------------------------

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Run delivery workers and issuers with ``session`` until cancelled.

        Runs in its own task for the life of the app; each reset ends one epoch's task group
        and this loop starts the next. Raises only what cancels it.
        """
        self._session = session
        self._running = True
        try:
            while True:
                if self._epoch is None:
                    self._epoch = _Epoch(2 * self._config.delivery_concurrency)
                epoch = self._epoch
                try:
                    async with anyio.create_task_group() as tg:
                        epoch.scope = tg.cancel_scope
                        for _ in range(self._config.delivery_concurrency):
                            tg.start_soon(self._deliver_loop, epoch)
                        async for bill_run in epoch.jobs_recv:
                            tg.start_soon(self._issue, epoch, bill_run)
                finally:
                    epoch.close()
        finally:
            self._running = False
            self._session = None
            if self._epoch is not None:  # a reset may have made one the loop never reached
                self._epoch.close()

    def reset(self) -> None:
        """Forget every bill run and delivery record; stop issuing and delivering them.

        Synchronous: the next bill run goes to the new epoch at once, and the host starts its
        workers as soon as the old epoch's tasks are cancelled. Numbering continues.
        """
        old = self._epoch
        self._epoch = _Epoch(2 * self._config.delivery_concurrency)
        if old is not None:
            if old.scope is not None:
                old.scope.cancel()
            else:  # never started by the host: nothing runs in it
                old.close()

    # -- state, for the audit and the handlers ------------------------------------------------

    def deliveries(self) -> list[Delivery]:
        """The delivery records of the current epoch, in issue order."""
        return [] if self._epoch is None else list(self._epoch.records.values())

    def followup_counts(self) -> dict[str, tuple[int, int]]:
        """Per kind (``credit_memos``, ``payments``): (issued, accepted) webhooks."""
        if self._epoch is None:
            return {"credit_memos": (0, 0), "payments": (0, 0)}
        return {k: (v[0], v[1]) for k, v in self._epoch.followups.items()}

    def accepted_followups(self) -> tuple[list[BillingCreditNote], list[BillingPayment]]:
        """The credit notes and payments whose webhook got a 2xx, in acceptance order."""
        if self._epoch is None:
            return [], []
        notes: list[BillingCreditNote] = []
        payments: list[BillingPayment] = []
        for kind, body in self._epoch.accepted_followups:
            if self._stripe:
                doc = project_followup(kind, body)
                if isinstance(doc, BillingCreditNote):
                    notes.append(doc)
                else:
                    payments.append(doc)
            elif kind == "credit_memos":
                notes.append(_NOTE_DECODER.decode(body).data.object)
            else:
                payments.append(_PAYMENT_DECODER.decode(body).data.object)
        return notes, payments

    def followup_accepted_at(self) -> dict[str, float]:
        """When each credit note's and payment's webhook got its 2xx, by document id."""
        return {} if self._epoch is None else dict(self._epoch.followup_accepted_at)

    def fault_stats(self) -> tuple[dict[str, ModeStats], int]:
        """Extra deliveries per fault mode, and how many events reordering moved."""
        if self._epoch is None:
            return {}, 0
        return dict(self._epoch.stats), self._epoch.reordered

    def start_bill_run(self, invoices: int, rate: float,
                       options: BillRunOptions | None = None) -> str:
        """Queue a bill run (as ``POST /billing/v1/bill-runs`` does); its id.

        ``options`` are the opt-in extras (amendments); default: none.
        Raises ``SimHTTPError`` 503 when the host task is not running.
        """
        epoch = self._current()
        if not self._running:
            raise SimHTTPError(503, "sim.stopped", "the billing host task is not running")
        bill_run = _BillRun(f"br_{self._next_run:06d}", invoices, rate, options)
        self._next_run += 1
        epoch.runs[bill_run.id] = bill_run
        epoch.jobs_send.send_nowait(bill_run)
        return bill_run.id

    # -- issuing ------------------------------------------------------------------------------

    async def _issue(self, epoch: _Epoch, bill_run: _BillRun) -> None:
        started = anyio.current_time()
        sent = 0
        held: list[_Outbound] = []  # events held back for reordering
        while sent < bill_run.invoices:
            elapsed = anyio.current_time() - started
            due = due_count(elapsed, bill_run.rate, bill_run.invoices)
            if due <= sent:
                self._release(epoch, held)
                await anyio.sleep(sent / bill_run.rate - elapsed)
                continue
            n = min(due - sent, _CHUNK)
            first = self._next_invoice
            self._next_invoice += n
            created = time.time()
            for offset, inv in enumerate(
                generate_invoices(n, self._config.seed, first, now=created)
            ):
                await epoch.slots.acquire()
                issued_at = time.time()
                event = BillingEvent(
                    id=f"evt_{inv.id}",
                    type="invoice.finalized",
                    created=int(issued_at),
                    data=EventData(object=inv),
                )
                index = first + offset
                opts = bill_run.options
                amended, early = plan_amendment(self._config.seed, index, opts.amend_rate,
                                                opts.reorder_amendments)
                v2 = amended_invoice(self._config.seed, index, inv.created) if amended else None
                latest = inv if v2 is None else v2
                stripe_doc = None
                if self._stripe:  # the same id and times; Stripe's invoice, no amendments
                    stripe_doc = stripe_invoice(self._config.seed, index, int(issued_at))
                    v2, latest = None, inv
                record = Delivery(
                    invoice=IssuedInvoice(
                        invoice_id=inv.id,
                        currency=(inv.currency if stripe_doc is None
                                  else stripe_doc["currency"]).upper(),
                        total=latest.total if stripe_doc is None else stripe_doc["total"],
                        issued_at=issued_at,
                        version=latest.version,
                    ),
                    index=index,
                    created=inv.created,
                    seq=self._next_seq,
                )
                self._next_seq += 1
                if v2 is not None:
                    record.v2_seq = self._next_seq
                    self._next_seq += 1
                    if early:  # the events list shows v2 first, as the webhooks deliver it
                        record.seq, record.v2_seq = record.v2_seq, record.seq
                epoch.records[inv.id] = record
                versions = [(record.seq, 1)] + ([(record.v2_seq, 2)] if v2 is not None else [])
                for seq, version in sorted(versions):
                    epoch.order.append((record, version))
                    epoch.seqs.append(seq)
                bill_run.issued += 1
                sources = self._control.webhook_sources()
                plan = plan_webhook(sources, self._config.seed, record.index)
                body = _EVENT_ENCODER.encode(event)
                if stripe_doc is not None:
                    body = stripe_event_body(f"evt_{inv.id}", "invoice.finalized",
                                             int(issued_at), stripe_doc)
                    epoch.stripe_log.add(body)
                out = _Outbound(record, body, bill_run, event, plan)
                if v2 is not None:
                    out.amendment = _EVENT_ENCODER.encode(_updated_event(v2, int(issued_at)))
                    out.amendment_first = early
                if stripe_doc is not None:
                    out.followups = stripe_followups(self._config.seed, index, stripe_doc,
                                                     int(issued_at), opts.credit_memo_rate,
                                                     opts.payment_rate)
                    for _, fbody in out.followups:
                        epoch.stripe_log.add(fbody)
                elif opts.credit_memo_rate > 0 or opts.payment_rate > 0:
                    out.followups = followup_events(self._config.seed, index, latest,
                                                    int(issued_at), opts)
                window = min(max(s.reorder_window for s in sources), epoch.slots_total)
                if window <= 1 and not held:
                    epoch.outbox_send.send_nowait(out)
                    continue
                held.append(out)
                if len(held) >= window:
                    self._release(epoch, held)
            sent += n
        self._release(epoch, held)

    def _release(self, epoch: _Epoch, held: list[_Outbound]) -> None:
        """Shuffle (seeded) and hand over the events held back for reordering."""
        if not held:
            return
        epoch.reordered += shuffle_window(held, self._config.seed, held[0].record.index)
        for out in held:
            epoch.outbox_send.send_nowait(out)
        held.clear()

    # -- delivering ---------------------------------------------------------------------------

    async def _deliver_loop(self, epoch: _Epoch) -> None:
        async for item in epoch.outbox_recv:
            try:
                await self._deliver(epoch, item)
            finally:
                epoch.slots.release()

    async def _deliver(self, epoch: _Epoch, item: _Outbound) -> None:
        """Deliver one invoice's events: v1 with its fault extras, and an amendment (v2)
        after v1 is accepted, or before it when reordered. The record is accepted when the
        last of them is."""
        amendment = item.amendment
        if amendment is None:
            await self._deliver_v1(epoch, item, final=True)
        elif item.amendment_first:
            await self._deliver_genuine(item, amendment, final=False)
            await self._deliver_v1(epoch, item, final=True)
        else:
            await self._deliver_v1(epoch, item, final=False)
            await self._deliver_genuine(item, amendment, final=True)
        for kind, body in item.followups:
            counts = epoch.followups[kind]
            counts[0] += 1
            await self._deliver_until_accepted(body)
            counts[1] += 1
            epoch.accepted_followups.append((kind, body))
            prefix = "cn" if kind == "credit_memos" else "py"
            if self._stripe and kind == "credit_memos" and b'"invoice.voided"' in body:
                prefix = "cn_void"
            epoch.followup_accepted_at[f"{prefix}_{item.record.index:06d}"] = time.time()

    async def _deliver_until_accepted(self, body: bytes) -> None:
        """POST ``body`` (a credit note or payment event) until a 2xx, with backoff."""
        await until_accepted(lambda: self._post_once(body, self._sign(body)), self._rng)

    async def _deliver_v1(self, epoch: _Epoch, item: _Outbound, *, final: bool) -> None:
        plan = item.plan
        if self._stripe and (plan.mangles or plan.drifts):
            # Mangled and drifted copies are built from the erpgw event: in Stripe's dialect
            # only the shape-blind faults (copies, replays) apply.
            plan = msgspec.structs.replace(plan, mangles=(), drifts=())
        if plan.empty:
            await self._deliver_genuine(item, final=final)
            return
        secret = self._config.webhook_secret
        for mode in plan.mangles:
            shadow = _EVENT_ENCODER.encode(shadow_event(item.event, mode))
            body, header = mangled_request(mode, shadow, secret, int(time.time()))
            epoch.stat(mode).add(await self._post_once(body, header))
        for mode in plan.drifts:
            body = drift_body(mode, item.event)
            epoch.stat(mode).add(await self._post_once(body, self._sign(body)))
        if plan.concurrent_copies:
            async with anyio.create_task_group() as tg:
                for _ in range(plan.concurrent_copies):
                    tg.start_soon(self._send_copy, epoch, item.body)
                await self._deliver_genuine(item, final=final)
        else:
            await self._deliver_genuine(item, final=final)
        for _ in range(plan.later_copies):
            await self._send_copy(epoch, item.body)
        if plan.replay:
            old = sign(secret, item.body, int(time.time()) - plan.replay_age_s)
            epoch.stat("replay").add(await self._post_once(item.body, old))

    async def _send_copy(self, epoch: _Epoch, body: bytes) -> None:
        epoch.stat("duplicate").add(await self._post_once(body, self._sign(body)))

    async def _deliver_genuine(
        self, item: _Outbound, body: bytes | None = None, *, final: bool = True
    ) -> None:
        """POST ``body`` (default: the invoice's v1 event) until a 2xx; when ``final``, the
        record (and the bill run) count it accepted."""
        record, run = item.record, item.run
        payload = item.body if body is None else body

        async def attempt() -> int:
            record.attempts += 1
            run.attempts += 1
            record.last_status = await self._post_once(payload, self._sign(payload))
            return record.last_status

        await until_accepted(attempt, self._rng)
        if final:
            record.accepted_at = time.time()
            run.accepted += 1

    def _sign(self, body: bytes) -> str:
        return sign(self._config.webhook_secret, body, int(time.time()))

    async def _post_once(self, body: bytes, signature: str | None) -> int:
        """One POST of ``body`` with ``signature`` (no header when ``None``); its status, or 0
        for a connection error or timeout."""
        session = self._session
        assert session is not None, "delivery runs only inside BillingService.run"
        header = STRIPE_SIGNATURE_HEADER if self._stripe else SIGNATURE_HEADER
        return await post_signed(session, self._config.webhook_url, body,
                                 header=header, signature=signature,
                                 timeout=self._timeout)

    # -- HTTP handlers ------------------------------------------------------------------------

    def limited(self, handler: Handler) -> Handler:
        """``handler`` behind the billing API's request-rate limit (429 with Retry-After)."""
        rate = self._config.billing_rate_limit
        if rate <= 0:
            return handler

        async def limited(request: web.Request) -> web.StreamResponse:
            now = anyio.current_time()
            if self._bucket is None:
                self._bucket = TokenBucket(rate, self._config.billing_rate_burst, now)
            wait = self._bucket.take(now)
            if wait > 0:
                self._control.count("billing/api", "rate_limited")
                raise SimHTTPError(
                    429, "billing.rate_limited",
                    f"more than {rate:g} requests per second; retry after the Retry-After delay",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
            return await handler(request)

        return limited

    def _current(self) -> _Epoch:
        if self._epoch is None:
            raise SimHTTPError(503, "sim.starting", "the billing service is not running yet")
        return self._epoch

    async def create_bill_run(self, request: web.Request) -> web.Response:
        """``POST /billing/v1/bill-runs`` ``{"invoices": N, "rate": R}`` → 202.

        400 naming the field when N is outside 1..1,000,000 or R outside 0..1,000,000; 503
        when the host task is not running (not started yet, or crashed: see the log). With an
        ``Idempotency-Key`` header: the same key and body again answers the stored response
        (``Idempotent-Replayed: true``) and starts nothing; the same key with another body
        answers 422 ``idempotency.key_reused``.
        """
        key = request.headers.get(IDEMPOTENCY_HEADER)
        body = await decode_body(request, _BILL_RUN_DECODER)
        epoch = self._current()
        digest = b""
        if key is not None:
            if not _KEY.match(key):
                raise SimHTTPError(400, "request.invalid",
                                   f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII "
                                   "characters", path=IDEMPOTENCY_HEADER)
            digest = hashlib.sha256(_EVENT_ENCODER.encode(body)).digest()
            seen = epoch.idempotency.get(key)
            if seen is not None:
                if not hmac.compare_digest(seen[0], digest):
                    raise SimHTTPError(
                        422, "idempotency.key_reused",
                        f"{IDEMPOTENCY_HEADER} {key!r} was used with a different request body",
                        path=IDEMPOTENCY_HEADER,
                    )
                return web.Response(body=seen[2], status=seen[1], content_type="application/json",
                                    headers={"Idempotent-Replayed": "true"})
        run_id = self.start_bill_run(body.invoices, body.rate, BillRunOptions(
            amend_rate=body.amend_rate, reorder_amendments=body.reorder_amendments,
            credit_memo_rate=body.credit_memo_rate, payment_rate=body.payment_rate))
        encoded = _EVENT_ENCODER.encode(BillRunCreated(bill_run_id=run_id, invoices=body.invoices))
        if key is not None:
            epoch.idempotency[key] = (digest, 202, encoded)
        return web.Response(body=encoded, status=202, content_type="application/json")

    async def get_bill_run(self, request: web.Request) -> web.Response:
        """``GET /billing/v1/bill-runs/{id}`` → ``BillRunStatus``; 404 for an unknown id."""
        run_id = request.match_info["id"]
        bill_run = self._current().runs.get(run_id)
        if bill_run is None:
            raise SimHTTPError(404, "not_found", f"no bill run {run_id!r}")
        return json_response(bill_run.status())

    async def get_event(self, request: web.Request) -> web.Response:
        """``GET /billing/v1/events/{id}`` → ``EventStatus``; 404 for an unknown event id."""
        event_id = request.match_info["id"]
        invoice_id = event_id.removeprefix("evt_")
        record = self._current().records.get(invoice_id) if event_id.startswith("evt_") else None
        if record is None:
            raise SimHTTPError(404, "not_found", f"no event {event_id!r}")
        return json_response(
            EventStatus(
                event_id=event_id,
                invoice_id=invoice_id,
                issued_at=record.invoice.issued_at,
                attempts=record.attempts,
                accepted_at=record.accepted_at,
                last_status=record.last_status,
            )
        )

    def _rebuild(self, record: Delivery, version: int = 1) -> BillingEvent:
        """The event of ``record`` (its ``version``), byte for byte as its webhook carried it."""
        if version == 2:
            return _updated_event(amended_invoice(self._config.seed, record.index,
                                                  record.created),
                                  int(record.invoice.issued_at))
        inv = _invoice(self._config.seed, record.index, record.created,
                       _month_bounds(record.created))
        return BillingEvent(id=f"evt_{inv.id}", type="invoice.finalized",
                            created=int(record.invoice.issued_at), data=EventData(object=inv))

    def _list_followups(self, epoch: _Epoch, event_type: str, after: int,
                        limit: int) -> web.Response:
        """A page of the delivered credit note or payment events (``event_type``); the cursor
        is a position in their delivery order. 400 for another type."""
        kind = _FOLLOWUP_TYPES.get(event_type)
        if kind is None:
            raise SimHTTPError(400, "request.invalid",
                               f"type must be one of {', '.join(sorted(_FOLLOWUP_TYPES))}",
                               path="type")
        bodies = [body for k, body in epoch.accepted_followups if k == kind]
        page = bodies[after:after + limit]
        cursor = str(after + len(page)) if page else str(after)
        more = after + limit < len(bodies)
        if self._stripe:  # the Stripe events as delivered
            return web.Response(body=_EVENT_ENCODER.encode({
                "object": "list", "data": [msgspec.Raw(b) for b in page], "has_more": more,
                "next_cursor": cursor}), content_type="application/json")
        if kind == "credit_memos":
            return json_response(CreditNoteEventList(
                data=[_NOTE_DECODER.decode(b) for b in page], has_more=more, next_cursor=cursor))
        return json_response(PaymentEventList(
            data=[_PAYMENT_DECODER.decode(b) for b in page], has_more=more, next_cursor=cursor))

    async def list_events(self, request: web.Request) -> web.Response:
        """``GET /billing/v1/events?after=CURSOR&limit=N`` → ``BillingEventList``.

        Events in issue order after ``CURSOR`` (an opaque decimal string; omitted: from the
        start), at most ``N`` (1..1000, default 100). ``next_cursor`` is the cursor to pass
        next (unchanged when there was nothing new). 400 naming the parameter otherwise.
        ``type=credit_note.created`` or ``type=invoice.paid`` lists those events instead
        (``CreditNoteEventList`` / ``PaymentEventList``), in delivery order, once delivered;
        without ``type`` the list holds the invoice events, as it always did.
        """
        after = query_int(request.query.get("after"), "after", 0, 0, 10**18)
        limit = query_int(request.query.get("limit"), "limit", 100, 1, MAX_EVENTS_PAGE)
        epoch = self._current()
        kind = request.query.get("type")
        if kind is not None:
            return self._list_followups(epoch, kind, after, limit)
        start = bisect.bisect_right(epoch.seqs, after)
        page = epoch.order[start:start + limit]
        last = epoch.seqs[start + len(page) - 1] if page else after
        if self._stripe:  # Stripe's invoice.finalized events, as their webhooks carried them
            raw = [msgspec.Raw(stripe_event_body(
                f"evt_{r.invoice.invoice_id}", "invoice.finalized", int(r.invoice.issued_at),
                stripe_invoice(self._config.seed, r.index, int(r.invoice.issued_at))))
                for r, _ in page]
            return web.Response(body=_EVENT_ENCODER.encode({
                "object": "list", "data": raw, "has_more": start + limit < len(epoch.order),
                "next_cursor": str(last)}), content_type="application/json")
        events = [self._rebuild(r, v) for r, v in page]
        return json_response(BillingEventList(
            data=events,
            has_more=start + limit < len(epoch.order),
            next_cursor=str(last),
        ))

    # -- Stripe's list APIs (the Stripe dialect) -----------------------------------------------

    def _stripe_list(self, request: web.Request, which: str) -> web.Response:
        try:
            check_key(request, self._config.stripe_secret_key)
            if not self._stripe:
                raise SimHTTPError(404, "resource_missing",
                                   "Stripe's API is served only with --billing-dialect stripe")
            log = self._current().stripe_log
            body = (log.list_events(request.query) if which == "events"
                    else log.list_invoices(request.query))
        except SimHTTPError as err:  # Stripe's error body
            error = {"type": "invalid_request_error", "code": err.code,
                     "message": err.message}
            if err.path:
                error["param"] = err.path
            return web.Response(status=err.status, body=_EVENT_ENCODER.encode({"error": error}),
                                headers=err.headers, content_type="application/json")
        return web.Response(body=body, content_type="application/json")

    async def stripe_events(self, request: web.Request) -> web.Response:
        """``GET /v1/events?limit=&starting_after=&type=`` (Bearer secret key): newest first."""
        return self._stripe_list(request, "events")

    async def stripe_invoices(self, request: web.Request) -> web.Response:
        """``GET /v1/invoices?limit=&starting_after=&status=`` (Bearer secret key)."""
        return self._stripe_list(request, "invoices")
