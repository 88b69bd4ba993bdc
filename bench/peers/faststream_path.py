"""Peer (c): the gateway's pipeline written the way a FastStream user would write it.

Pydantic models for the messages (FastStream serialises them as JSON), a JetStream pull
subscriber with a per-message handler for the router whose return value a decorated publisher
publishes to the next stream (FastStream waits for the PubAck, then acks the input), and a
batch pull subscriber (``PullSub(batch=True)``) for the ERP adapter, which posts each batch in
one bulk request. The ingress publishes each invoice with ``broker.publish(..., stream=...)``
(waiting for its PubAck) from as many concurrent publishers as the bench's admission window,
like an HTTP handler per webhook. Three settings differ from FastStream's defaults: the
batch subscriber collects for at most 0.5 s (the default 5 s would hold a partial batch that
long at light load), its per-message INFO log lines are off (the gateway logs none), and a
publish waits up to ``PUBLISH_TIMEOUT_S`` for its PubAck, as the gateway's bus does. With
FastStream's default 0.5 s, PubAcks on a busy 2-core box with fsync on every write came late:
hundreds of publishes per leg timed out, their inputs were nak'd and redelivered, and a few
were lost from a failed pull and waited ``ack_wait`` (30 s) for redelivery, so the peer was
measured on its retries rather than its framework. The point is the framework's own cost, not
a tuned FastStream.

The gateway's revenue lane is a second batch pull subscriber on the IN stream (durable
``revenue``, the same consumer settings, 200 invoices per batch): one pydantic revenue line per
invoice line (line id ``<run id>:<invoice id>:<line id>``, the invoice's service period), packed
into uploads of at most 500 lines, each within the revenue account's budget (10/s, burst 5)
and posted as JSON to the simulated revenue platform (``POST /revenue/v1/batches``, 201); the
batch is acked when its uploads are in. A non-201 answer counts an error, acks the invoices
whose lines were all uploaded and naks the rest with a 0.5 s delay (``NackMessage``). No
ledger and no guard, as for its ERP side. It runs beside the ERP lane and is stopped with the
broker when the leg ends; the figures' ``revenue`` section says how far it got.

Same streams, consumer settings, event count, admission window, ERP simulator and latency
clock as the raw baselines (see ``bench._probe``); streams are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any

import aiohttp
import nats
from faststream import AckPolicy, Context
from faststream.exceptions import NackMessage
from faststream.nats import JStream, NatsBroker, NatsResponse, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.js import api
from pydantic import BaseModel

from actors.revenue.plan import pack
from sim import generate_invoices

from .._probe import Arrivals, Probe
from .._raw import BULK_PATH, REVENUE_PATH, BaselineConfig, ErpBudget, RevenueStats, seed_option

__all__ = ["PUBLISH_TIMEOUT_S", "InvoiceIn", "Pipeline", "delete_streams", "invoice_in",
           "run_peer"]

log = logging.getLogger("bench.peer")

# The gateway's JetStream publish timeout (actors.infra.bus.NatsBus), for a like-for-like peer.
PUBLISH_TIMEOUT_S = 5.0


class InvoiceIn(BaseModel):
    id: str
    number: str
    customer: str
    currency: str
    subtotal: int
    tax: int
    total: int
    issued_at: int
    lines: list[tuple[str, str, int]]  # (line id, product, amount)
    period_start: int  # the service period, Unix seconds
    period_end: int


class JournalLine(BaseModel):
    account: str
    debit: int = 0
    credit: int = 0
    memo: str = ""


class JournalEntry(BaseModel):
    # camelCase: the ERP's wire spelling, so the model dumps straight into the request body
    idempotencyKey: str
    externalId: str
    tranDate: str
    currency: str
    memo: str
    lines: list[JournalLine]


class RevenueLine(BaseModel):
    # camelCase: the revenue platform's wire spelling (RevenueLineIn)
    lineId: str
    invoiceId: str
    product: str
    currency: str
    amount: int
    periodStart: str
    periodEnd: str


def _revenue_lines(inv: InvoiceIn, run_id: str) -> list[RevenueLine]:
    start, end = (datetime.fromtimestamp(t, UTC).date().isoformat()
                  for t in (inv.period_start, inv.period_end))
    return [RevenueLine(lineId=f"{run_id}:{inv.id}:{line_id}", invoiceId=inv.id,
                        product=product, currency=inv.currency.upper(), amount=amount,
                        periodStart=start, periodEnd=end)
            for line_id, product, amount in inv.lines]


def invoice_in(b: Any) -> InvoiceIn:
    """The peer's message for a billing invoice (``BillingInvoice`` or its pydantic twin)."""
    return InvoiceIn(id=b.id, number=b.number, customer=b.customer,
                     currency=b.currency.upper(), subtotal=b.subtotal, tax=b.tax,
                     total=b.total, issued_at=b.created,
                     lines=[(ln.id, ln.product, ln.amount) for ln in b.lines.data],
                     period_start=b.period_start, period_end=b.period_end)


def _journal(inv: InvoiceIn, run_id: str) -> JournalEntry:
    memo = f"Invoice {inv.number} ({inv.id}) customer {inv.customer}"
    lines = [JournalLine(account="1200", debit=inv.total, memo=memo)]
    if inv.subtotal:
        lines.append(JournalLine(account="2400", credit=inv.subtotal, memo="deferred revenue"))
    if inv.tax:
        lines.append(JournalLine(account="2200", credit=inv.tax, memo="tax"))
    return JournalEntry(idempotencyKey=f"{run_id}:{inv.id}:v1", externalId=inv.id,
                        tranDate=datetime.fromtimestamp(inv.issued_at, UTC).date().isoformat(),
                        currency=inv.currency, memo=memo, lines=lines)


def _consumer(durable: str, cfg: BaselineConfig) -> api.ConsumerConfig:
    return api.ConsumerConfig(durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT,
                              ack_wait=30.0, max_deliver=8, max_ack_pending=cfg.max_ack_pending)


class Pipeline:
    """The peer's broker, streams, router and ERP adapter (shared with the webhook peer)."""

    def __init__(self, cfg: BaselineConfig, probe: Probe) -> None:
        self.http: aiohttp.ClientSession | None = None
        self.cfg = cfg
        self.revenue = RevenueStats()
        (self.broker, self.in_subject, self.in_stream,
         self.out_stream) = _build(cfg, probe, self)


def _build(cfg: BaselineConfig, probe: Probe,
           holder: Pipeline) -> tuple[NatsBroker, str, JStream, JStream]:
    tag = cfg.run_id.replace("-", "_").upper()
    in_subject, out_subject = f"bench.{cfg.run_id}.in", f"bench.{cfg.run_id}.out"
    in_stream = JStream(f"BENCH_{tag}_IN", subjects=[in_subject], duplicate_window=600.0,
                        storage=api.StorageType.FILE, discard=api.DiscardPolicy.NEW)
    out_stream = JStream(f"BENCH_{tag}_OUT", subjects=[out_subject], duplicate_window=600.0,
                         storage=api.StorageType.FILE, discard=api.DiscardPolicy.NEW)
    # FastStream logs every message at INFO by default; like the gateway (which logs no
    # per-message lines), keep only warnings and errors.
    quiet = logging.getLogger("bench.peer.faststream")
    quiet.setLevel(logging.WARNING)
    broker = NatsBroker(cfg.nats_url, logger=quiet, **seed_option(cfg))
    budget = ErpBudget(cfg.erp_rate, cfg.erp_burst)  # the ERP budget every system gets
    to_erp = broker.publisher(out_subject, stream=out_stream, timeout=PUBLISH_TIMEOUT_S)

    @broker.subscriber(in_subject, stream=in_stream, durable="router",
                       config=_consumer("router", cfg), ack_policy=AckPolicy.NACK_ON_ERROR,
                       pull_sub=PullSub(batch_size=cfg.router_batch, timeout=0.5))
    @to_erp
    async def route(inv: InvoiceIn) -> NatsResponse:
        return NatsResponse(_journal(inv, cfg.run_id),
                            headers={"Nats-Msg-Id": f"{cfg.run_id}:{inv.id}:erp"})

    @broker.subscriber(out_subject, stream=out_stream, durable="adapter",
                       config=_consumer("adapter", cfg), ack_policy=AckPolicy.NACK_ON_ERROR,
                       pull_sub=PullSub(batch_size=cfg.adapter_batch, timeout=0.5, batch=True))
    async def post(entries: list[JournalEntry]) -> None:
        http = holder.http
        assert http is not None
        body = {"items": [e.model_dump() for e in entries]}
        await budget.take()
        async with http.post(cfg.sim_url + BULK_PATH, json=body) as resp:
            resp.raise_for_status()  # an exception naks the whole batch (NACK_ON_ERROR)
            answer = await resp.json()
        now = time.time()
        for e, r in zip(entries, answer["results"], strict=True):
            if r["status"] != "rejected":
                probe.complete(e.externalId, now)
            else:
                probe.errors += 1

    revenue_budget = ErpBudget(cfg.revenue_rate, cfg.revenue_burst)  # the revenue account's

    @broker.subscriber(in_subject, stream=in_stream, durable="revenue",
                       config=_consumer("revenue", cfg), ack_policy=AckPolicy.NACK_ON_ERROR,
                       pull_sub=PullSub(batch_size=cfg.revenue_batch, timeout=0.5, batch=True))
    async def upload_revenue(invoices: list[InvoiceIn],
                             message: Annotated[NatsBatchMessage, Context("message")]
                             ) -> None:
        http = holder.http
        assert http is not None
        stats = holder.revenue
        unique = {inv.id: inv for inv in invoices}
        groups = [_revenue_lines(inv, cfg.run_id) for inv in unique.values()]
        left = Counter(ln.invoiceId for g in groups for ln in g)
        for part in pack(groups, cfg.revenue_max_lines):
            await revenue_budget.take()
            body = {"lines": [ln.model_dump() for ln in part]}
            try:
                async with http.post(cfg.sim_url + REVENUE_PATH, json=body) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if status != 201:
                probe.errors += 1
                stats.errors += 1
                # the invoices whose lines are all in are acked; the rest redelivered
                for raw, inv in zip(message.raw_message, invoices, strict=True):
                    if left[inv.id] <= 0:
                        await raw.ack()
                raise NackMessage(delay=0.5)
            stats.uploads += 1
            stats.lines_uploaded += len(part)
            left.subtract(ln.invoiceId for ln in part)
        stats.invoices_acked += len(invoices)  # acked by FastStream on return

    return broker, in_subject, in_stream, out_stream


async def run_peer(cfg: BaselineConfig) -> dict[str, Any]:
    """Run the FastStream pipeline once; the figures dict (see ``Probe.figures``)."""
    probe = Probe(cfg.events, cfg.box_pids)
    pipe = Pipeline(cfg, probe)
    broker, in_subject, in_stream, out_stream = (pipe.broker, pipe.in_subject, pipe.in_stream,
                                                 pipe.out_stream)
    invoices = {b.id: invoice_in(b) for b in generate_invoices(cfg.events, cfg.seed, 1)}
    arrivals = Arrivals(list(invoices), cfg.rate, cfg.window, probe)
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def ingress_worker() -> None:
        while True:
            key = await queue.get()
            try:
                await broker.publish(invoices[key], in_subject, stream=in_stream.name,
                                     headers={"Nats-Msg-Id": f"{cfg.run_id}:{key}"},
                                     timeout=PUBLISH_TIMEOUT_S)
            except Exception:
                log.exception("ingress publish failed")
                probe.errors += 1
            finally:
                arrivals.release()

    async def admit(_i: int, key: str, _t: float) -> None:
        queue.put_nowait(key)

    complete = False
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8),
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        pipe.http = session
        await broker.start()
        workers = [asyncio.ensure_future(ingress_worker()) for _ in range(cfg.window)]
        sampler = asyncio.ensure_future(probe.sample())
        try:
            probe.start()
            await arrivals.run(admit)
            complete = await probe.wait(cfg.stall_timeout)
            if complete and cfg.revenue_drain_s > 0:
                await pipe.revenue.drain(cfg.events, cfg.revenue_drain_s)
            pipe.revenue.end()
        finally:
            for t in [*workers, sampler]:
                t.cancel()
            await asyncio.gather(*workers, sampler, return_exceptions=True)
            await broker.stop()
            await delete_streams(cfg, [in_stream.name, out_stream.name])
    out = probe.figures("peer", cfg.rate, complete)
    out["variant"] = ("FastStream NatsBroker, pydantic JSON, per-message router handler, "
                      "batch revenue subscriber")
    out["revenue"] = pipe.revenue.figures()
    return out


async def delete_streams(cfg: BaselineConfig, names: list[str]) -> None:
    nc = await nats.connect(cfg.nats_url, name="bench-peer-cleanup", **seed_option(cfg))
    try:
        js = nc.jetstream()
        for name in names:
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
    finally:
        await nc.close()
