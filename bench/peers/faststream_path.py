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

Same streams, consumer settings, event count, admission window, ERP simulator and latency
clock as the raw baselines (see ``bench._probe``); streams are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import nats
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsResponse, PullSub
from nats.js import api
from pydantic import BaseModel

from sim import generate_invoices

from .._probe import Arrivals, Probe
from .._raw import BULK_PATH, BaselineConfig, ErpBudget, seed_option

__all__ = ["PUBLISH_TIMEOUT_S", "InvoiceIn", "Pipeline", "delete_streams", "run_peer"]

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
    lines: list[tuple[str, int]]


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

    return broker, in_subject, in_stream, out_stream


async def run_peer(cfg: BaselineConfig) -> dict[str, Any]:
    """Run the FastStream pipeline once; the figures dict (see ``Probe.figures``)."""
    probe = Probe(cfg.events, cfg.box_pids)
    pipe = Pipeline(cfg, probe)
    broker, in_subject, in_stream, out_stream = (pipe.broker, pipe.in_subject, pipe.in_stream,
                                                 pipe.out_stream)
    invoices = {
        b.id: InvoiceIn(id=b.id, number=b.number, customer=b.customer,
                        currency=b.currency.upper(), subtotal=b.subtotal, tax=b.tax,
                        total=b.total, issued_at=b.created,
                        lines=[(ln.product, ln.amount) for ln in b.lines.data])
        for b in generate_invoices(cfg.events, cfg.seed, 1)
    }
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
        finally:
            for t in [*workers, sampler]:
                t.cancel()
            await asyncio.gather(*workers, sampler, return_exceptions=True)
            await broker.stop()
            await delete_streams(cfg, [in_stream.name, out_stream.name])
    out = probe.figures("peer", cfg.rate, complete)
    out["variant"] = "FastStream NatsBroker, pydantic JSON, per-message router handler"
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
