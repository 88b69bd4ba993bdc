"""The framework-free baselines, written directly against nats-py and aiohttp.

(a) ``raw_hop``: publish with ``Nats-Msg-Id`` → stream → pull ``fetch`` → decode → ``ack``.

(b) ``raw_path``: the gateway's shape with nothing of the gateway in it, all in one process and
one event loop like the gateway:

    ingress ──publish──▶ IN stream ──fetch 256──▶ router ──publish──▶ OUT stream
        ──fetch 100──▶ adapter ──one bulk POST──▶ simulated ERP ──▶ ack

The router publishes the outputs of a fetched batch, waits for their PubAcks and only then acks
its inputs; the adapter acks after the ERP answered. Two variants:

* ``b1``: per-message ``publish_async`` at the ingress and in the router;
* ``b2``: atomic batch publishes (stream ``allow_atomic``; headers ``Nats-Batch-Id``,
  ``Nats-Batch-Sequence``, ``Nats-Batch-Commit: 1`` on the last; at most 1,000 per batch). The
  ingress commits whatever arrived while its previous commit was in flight (one event alone is
  a plain publish); the router commits each fetched batch's outputs as one batch.

An atomic batch containing a ``Nats-Msg-Id`` the stream has already stored (or the same id
twice) is refused whole by nats-server 2.15.1 (err_code 10201, "atomic publish batch contains
duplicate message id"), so a redelivered router batch would never commit. The b2 router
therefore falls back to per-message publishes (which the stream deduplicates one by one) when
a commit is refused for that reason; ``atomic_fallbacks`` counts how often.

The webhook baselines (``bench._webhook``) add the gateway's revenue lane, ``_revenue``: a
second consumer on the IN stream doing the platform work of the gateway's revenue poster
(``actors/revenue/poster.py``): fetch 200 invoices, one revenue line per invoice line, uploads
of at most 500 lines to ``POST /revenue/v1/batches`` (the platform's JSON body), each upload
within the revenue account's budget (the gateway's ``revenue_limiter``: 10/s, burst 5), then
ack. b2wl's ledger brackets each upload with its two fsync'd transactions (``UploadBook``).

Consumers use the gateway's settings (explicit ack, ack_wait 30 s, max_deliver 8,
max_ack_pending 512); streams are file-backed with a 10-minute dedupe window. Every loop is
bounded by the number of events and by a stall timeout, and the streams are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import msgspec
import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from actors.revenue.plan import pack
from contracts.platforms.revenue import RevenueLineIn
from sim import generate_invoices

from ._probe import Arrivals, Probe
from ._wire import (
    BulkResponseDecoder,
    Invoice,
    Journal,
    RevenueResultDecoder,
    bulk_body,
    invoice_from_billing,
    journal_for,
    revenue_body,
    revenue_lines,
)

__all__ = ["BaselineConfig", "RevenueStats", "UploadBook", "atomic_publish", "run_raw_hop",
           "run_raw_path"]

log = logging.getLogger("bench.raw")

BULK_PATH = "/erp/v1/journal-entries/bulk"
REVENUE_PATH = "/revenue/v1/batches"
DUPLICATE_IN_BATCH = 10201  # nats-server: "atomic publish batch contains duplicate message id"
MAX_ATOMIC = 1000

_inv_enc = msgspec.msgpack.Encoder()
_inv_dec = msgspec.msgpack.Decoder(Invoice)
_jnl_dec = msgspec.msgpack.Decoder(Journal)


@dataclass(frozen=True)
class BaselineConfig:
    nats_url: str
    sim_url: str
    events: int
    # The broker identity's NKey seed file (the embedded broker's admin: the baselines create
    # and delete streams of their own, which only the admin identity may do).
    nats_seed: str = ""
    rate: float | None = None  # None: maximum load
    seed: int = 7
    window: int = 64  # outstanding admitted events, as the simulator allows the gateway
    run_id: str = "bench"
    router_batch: int = 256
    adapter_batch: int = 100
    stall_timeout: float = 60.0
    max_ack_pending: int = 512  # the gateway's default (each loop here holds one batch)
    # The ERP account's request budget, the same for every system (the gateway's default
    # ``erp_limiter``: 50 requests/s, burst 20; 0 = none). One bulk holds ``adapter_batch``.
    erp_rate: float = 50.0
    erp_burst: int = 20
    # Other processes of the box whose CPU counts in ``cpu_us_per_event_box`` (nats-server and
    # the simulator; the webhook baselines add their load generator's own).
    box_pids: tuple[int, ...] = ()
    webhook_secret: str = "whsec_bench"
    ledger_dir: str = ""  # b2wl: where its SQLite ledger goes ("": a temporary directory)
    # The revenue lane (b1w, b2w, b2wl and the peers): the gateway's defaults, its
    # ``RevenueConfig`` (invoices per fetch, lines per upload) and ``revenue_limiter`` (the
    # revenue account's budget: 10 uploads/s, burst 5; 0 = none).
    revenue_batch: int = 200
    revenue_max_lines: int = 500
    revenue_rate: float = 10.0
    revenue_burst: int = 5
    # After the leg, how long to let the revenue lane finish every invoice before it is
    # stopped (0: stopped when the leg ends, as the bench runs it: the gateway's revenue lane
    # is not waited on either). Tests set it to check every line was uploaded once; the
    # figures (CPU, throughput) are taken at the leg's end either way.
    revenue_drain_s: float = 0.0


def seed_option(cfg: BaselineConfig) -> dict[str, str]:
    """``nats.connect`` keyword for the baseline's broker identity (none: anonymous)."""
    return {"nkeys_seed": cfg.nats_seed} if cfg.nats_seed else {}


class ErpBudget:
    """A token bucket of ``rate`` requests per second holding at most ``burst``: the ERP
    account's budget, as the gateway's ``erp_limiter`` spends it (waits, never refuses)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.at = time.monotonic()

    def wait_s(self, now: float) -> float:
        """Take one token at ``now``; how long to wait before spending it (0: at once)."""
        if self.rate <= 0:
            return 0.0
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def take(self) -> None:
        wait = self.wait_s(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)


AfterPost = Callable[[list[Journal], list[tuple[str, str]]], Awaitable[None]]


class UploadBook(Protocol):
    """b2wl's ledger, as the revenue lane uses it (``bench._webhook.Ledger``)."""

    async def upload_states(self, line_ids: list[str]) -> dict[str, str]: ...

    async def claim_uploads(self, lines: list[RevenueLineIn]) -> None: ...

    async def record_uploads(self, lines: list[RevenueLineIn], status: str,
                             batch_id: str | None) -> None: ...


@dataclass
class RevenueStats:
    """What a baseline's revenue lane did by the time it was stopped."""

    lines_uploaded: int = 0
    uploads: int = 0
    invoices_acked: int = 0
    skipped_lines: int = 0  # at the platform already (b2wl's ledger says so): not sent again
    errors: int = 0
    ended: dict[str, int] | None = None

    def figures(self) -> dict[str, int]:
        """The counts when the leg ended (``end``), else now."""
        if self.ended is not None:
            return self.ended
        return {"lines_uploaded": self.lines_uploaded, "uploads": self.uploads,
                "invoices_acked": self.invoices_acked, "skipped_lines": self.skipped_lines,
                "errors": self.errors}

    def end(self) -> None:
        """The leg ended: keep the counts of now (the lane may finish its current batch while
        it stops)."""
        self.ended = self.figures()

    async def drain(self, events: int, seconds: float) -> None:
        """Wait up to ``seconds`` for the lane to have acked ``events`` invoices."""
        deadline = time.monotonic() + seconds
        while self.invoices_acked < events and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


class AtomicRefused(Exception):
    def __init__(self, err: dict[str, Any]) -> None:
        super().__init__(err.get("description", "atomic batch refused"))
        self.err_code = int(err.get("err_code", 0))


async def atomic_publish(nc: Client, subject: str, items: list[tuple[bytes, str]],
                         batch_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """Publish ``(data, msg_id)`` items as one atomic batch; the commit's PubAck as a dict.

    All but the last go out as plain core publishes (no reply: the server answers only the
    commit); the last carries ``Nats-Batch-Commit: 1`` and is a request. Raises
    ``AtomicRefused`` when the server refuses the batch (nothing of it is stored).
    """
    if not 0 < len(items) <= MAX_ATOMIC:
        raise ValueError(f"an atomic batch holds 1..{MAX_ATOMIC} messages, got {len(items)}")
    for seq, (data, msg_id) in enumerate(items[:-1], 1):
        await nc.publish(subject, data, headers={
            "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(seq), "Nats-Msg-Id": msg_id})
    data, msg_id = items[-1]
    reply = await nc.request(subject, data, timeout=timeout, headers={
        "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(len(items)),
        "Nats-Batch-Commit": "1", "Nats-Msg-Id": msg_id})
    ack: dict[str, Any] = json.loads(reply.data)
    if "error" in ack:
        raise AtomicRefused(ack["error"])
    return ack


async def _publish_each(js: JetStreamContext, subject: str,
                        items: list[tuple[bytes, str]]) -> None:
    futs = [await js.publish_async(subject, data, headers={"Nats-Msg-Id": mid})
            for data, mid in items]
    await asyncio.gather(*futs)


class _Pipe:
    """Streams, consumers and connections of one baseline run."""

    def __init__(self, cfg: BaselineConfig, atomic: bool) -> None:
        self.cfg = cfg
        self.atomic = atomic
        tag = cfg.run_id.replace("-", "_").upper()
        self.in_stream, self.out_stream = f"BENCH_{tag}_IN", f"BENCH_{tag}_OUT"
        self.in_subject, self.out_subject = f"bench.{cfg.run_id}.in", f"bench.{cfg.run_id}.out"
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.batches = 0
        self.atomic_fallbacks = 0

    async def open(self, streams: int) -> JetStreamContext:
        self.nc = await nats.connect(self.cfg.nats_url, name=f"bench-{self.cfg.run_id}",
                                     pending_size=64 * 1024 * 1024, **seed_option(self.cfg))
        self.js = self.nc.jetstream(timeout=10.0)
        names = [(self.in_stream, self.in_subject), (self.out_stream, self.out_subject)]
        for name, subject in names[:streams]:
            await self.js.add_stream(api.StreamConfig(
                name=name, subjects=[subject], retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE, discard=api.DiscardPolicy.NEW,
                duplicate_window=600.0, max_bytes=1024**3, max_msg_size=256 * 1024,
                allow_atomic=True if self.atomic else None))
        return self.js

    async def consumer(self, stream: str, durable: str) -> JetStreamContext.PullSubscription:
        assert self.js is not None
        await self.js.add_consumer(stream, api.ConsumerConfig(
            name=durable, durable_name=durable, deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0, max_deliver=8,
            max_ack_pending=self.cfg.max_ack_pending))
        return await self.js.pull_subscribe_bind(durable=durable, stream=stream,
                                                 pending_msgs_limit=4096)

    async def close(self) -> None:
        if self.js is not None:
            for name in (self.in_stream, self.out_stream):
                with contextlib.suppress(Exception):
                    await self.js.delete_stream(name)
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    async def publish_outputs(self, subject: str, items: list[tuple[bytes, str]]) -> None:
        assert self.nc is not None and self.js is not None
        if not self.atomic or len(items) == 1:
            await _publish_each(self.js, subject, items)
            return
        self.batches += 1
        for i in range(0, len(items), MAX_ATOMIC):
            chunk = items[i:i + MAX_ATOMIC]
            try:
                await atomic_publish(self.nc, subject, chunk,
                                     f"{self.cfg.run_id}-{self.batches}-{i}")
            except AtomicRefused as exc:
                if exc.err_code != DUPLICATE_IN_BATCH:
                    raise
                self.atomic_fallbacks += 1
                await _publish_each(self.js, subject, chunk)


async def _post_json(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, bytes]:
    """POST a JSON body; its status and body (0 and nothing when no answer came)."""
    try:
        async with http.post(url, data=body,
                             headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError):
        return 0, b""


async def _fetch(sub: JetStreamContext.PullSubscription, batch: int) -> list[Msg]:
    try:
        return await sub.fetch(batch, timeout=0.5)
    except (TimeoutError, nats.errors.TimeoutError):
        return []


def _inputs(cfg: BaselineConfig) -> list[Invoice]:
    """The same seeded invoices the simulator issues to the gateway (ids made unique per run)."""
    return [invoice_from_billing(b) for b in generate_invoices(cfg.events, cfg.seed, 1)]


async def _ingress(pipe: _Pipe, arrivals: Arrivals, invoices: dict[str, Invoice]) -> None:
    """Admit every invoice and publish it (b1: one by one; b2: group commit)."""
    assert pipe.js is not None
    js = pipe.js
    subject = pipe.in_subject
    probe = arrivals.probe

    def _released(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            probe.errors += 1
        arrivals.release()

    if not pipe.atomic:
        async def admit_one(_i: int, key: str, _t: float) -> None:
            fut = await js.publish_async(subject, _inv_enc.encode(invoices[key]),
                                         headers={"Nats-Msg-Id": f"{pipe.cfg.run_id}:{key}"})
            fut.add_done_callback(_released)

        await arrivals.run(admit_one)
        return

    gathered: list[tuple[bytes, str]] = []
    wake = asyncio.Event()
    admitted = asyncio.Event()

    async def admit(_i: int, key: str, _t: float) -> None:
        gathered.append((_inv_enc.encode(invoices[key]), f"{pipe.cfg.run_id}:{key}"))
        wake.set()

    async def committer() -> None:
        while True:
            if not gathered:
                if admitted.is_set():
                    return
                wake.clear()
                await wake.wait()
                continue
            take = gathered[:MAX_ATOMIC]
            del gathered[:MAX_ATOMIC]
            try:
                await pipe.publish_outputs(subject, take)
            except Exception:  # a failed commit: counted, the run reports it incomplete
                log.exception("ingress commit failed")
                probe.errors += len(take)
            arrivals.release(len(take))

    task = asyncio.ensure_future(committer())
    try:
        await arrivals.run(admit)
    finally:
        admitted.set()
        wake.set()
    await task


async def _router(pipe: _Pipe, sub: JetStreamContext.PullSubscription, stop: asyncio.Event,
                  probe: Probe) -> None:
    while not stop.is_set():
        msgs = await _fetch(sub, pipe.cfg.router_batch)
        if not msgs:
            continue
        outs = []
        for m in msgs:
            inv = _inv_dec.decode(m.data)
            j = journal_for(inv, pipe.cfg.run_id)
            outs.append((_inv_enc.encode(j), f"{pipe.cfg.run_id}:{inv.id}:erp"))
        try:
            await pipe.publish_outputs(pipe.out_subject, outs)
        except Exception:
            log.exception("router publish failed; naking the batch")
            probe.errors += 1
            for m in msgs:
                await m.nak(delay=0.5)
            continue
        for m in msgs:
            await m.ack()


async def _adapter(pipe: _Pipe, sub: JetStreamContext.PullSubscription, stop: asyncio.Event,
                   http: aiohttp.ClientSession, probe: Probe,
                   after_post: AfterPost | None = None) -> None:
    """Fetch, one bulk POST within the ERP budget, ``after_post`` (b2wl: the ledger), ack."""
    url = pipe.cfg.sim_url + BULK_PATH
    budget = ErpBudget(pipe.cfg.erp_rate, pipe.cfg.erp_burst)
    while not stop.is_set():
        msgs = await _fetch(sub, pipe.cfg.adapter_batch)
        if not msgs:
            continue
        entries = [_jnl_dec.decode(m.data) for m in msgs]
        await budget.take()
        status, raw = await _post_json(http, url, bulk_body(entries))
        if status != 200:
            probe.errors += 1
            for m in msgs:
                await m.nak(delay=0.5)
            continue
        now = time.time()
        results = BulkResponseDecoder.decode(raw).results
        if after_post is not None:
            try:
                await after_post(entries, [(r.status, str(r.id or "")) for r in results])
            except Exception:  # the batch is redelivered; the ERP's idempotency absorbs it
                log.exception("recording the batch failed; naking it")
                probe.errors += 1
                for m in msgs:
                    await m.nak(delay=0.5)
                continue
        for e, r in zip(entries, results, strict=True):
            if r.status != "rejected":
                probe.complete(e.external_id, now)
            else:
                probe.errors += 1
        for m in msgs:
            await m.ack()


async def _revenue(pipe: _Pipe, sub: JetStreamContext.PullSubscription, stop: asyncio.Event,
                   http: aiohttp.ClientSession, probe: Probe, stats: RevenueStats,
                   book: UploadBook | None = None) -> None:
    """The revenue lane, the gateway revenue poster's platform work: a second consumer on
    the IN stream; per fetched batch, one line per invoice line, packed into uploads of at
    most ``revenue_max_lines``; per upload a token of the revenue budget, then (b2wl,
    ``book``) the lines ``pending`` in one fsync'd transaction, the POST (201 expected), the
    lines ``uploaded`` in another; then the batch's invoices are acked. A non-201 answer
    counts an error, stops the batch's later uploads, and naks (delay 0.5 s) every invoice
    with a line not uploaded (b2wl records its lines ``released``). With ``book``, a line is
    sent only when its ledger has no row for it or holds it ``released`` (an ``uploaded`` or
    ``pending`` line counts as at the platform, as the gateway presumes). A failure of the
    ledger naks the whole batch."""
    cfg = pipe.cfg
    budget = ErpBudget(cfg.revenue_rate, cfg.revenue_burst)
    while not stop.is_set():
        msgs = await _fetch(sub, cfg.revenue_batch)
        if not msgs:
            continue
        invoices = [_inv_dec.decode(m.data) for m in msgs]
        try:
            left = await _upload_batch(cfg, invoices, budget, http, probe, stats, book)
        except Exception:
            log.exception("revenue lane: recording the uploads failed; naking the batch")
            probe.errors += 1
            stats.errors += 1
            left = Counter(inv.id for inv in invoices)
        for m, inv in zip(msgs, invoices, strict=True):
            if left[inv.id] > 0:
                await m.nak(delay=0.5)
            else:
                await m.ack()
                stats.invoices_acked += 1


async def _upload_batch(cfg: BaselineConfig, invoices: list[Invoice], budget: ErpBudget,
                        http: aiohttp.ClientSession, probe: Probe, stats: RevenueStats,
                        book: UploadBook | None) -> Counter[str]:
    """Upload the lines of one fetched batch (see ``_revenue``); per invoice id, how many of
    its lines were not uploaded."""
    url = cfg.sim_url + REVENUE_PATH
    # one invoice delivered twice in a batch (a redelivery) has its lines once
    groups = [revenue_lines(inv, cfg.run_id)
              for inv in {inv.id: inv for inv in invoices}.values()]
    if book is not None:
        states = await book.upload_states([ln.line_id for g in groups for ln in g])
        planned = sum(len(g) for g in groups)
        groups = [[ln for ln in g if states.get(ln.line_id, "released") == "released"]
                  for g in groups]
        stats.skipped_lines += planned - sum(len(g) for g in groups)
    left = Counter(ln.invoice_id for g in groups for ln in g)
    for part in pack(groups, cfg.revenue_max_lines):
        await budget.take()
        if book is not None:
            await book.claim_uploads(part)
        status, raw = await _post_json(http, url, revenue_body(part))
        if status != 201:
            probe.errors += 1
            stats.errors += 1
            if book is not None:
                await book.record_uploads(part, "released", None)
            break
        if book is not None:
            await book.record_uploads(part, "uploaded",
                                      RevenueResultDecoder.decode(raw).batch_id)
        stats.uploads += 1
        stats.lines_uploaded += len(part)
        left.subtract(ln.invoice_id for ln in part)
    return left


async def run_raw_path(cfg: BaselineConfig, variant: str) -> dict[str, Any]:
    """Run baseline (b1) or (b2) once; the figures dict (see ``Probe.figures``)."""
    if variant not in ("b1", "b2"):
        raise ValueError(f"raw path variant must be b1 or b2, got {variant!r}")
    pipe = _Pipe(cfg, atomic=variant == "b2")
    invoices = {inv.id: inv for inv in _inputs(cfg)}
    probe = Probe(cfg.events, cfg.box_pids)
    stop = asyncio.Event()
    try:
        await pipe.open(streams=2)
        r_sub = await pipe.consumer(pipe.in_stream, "router")
        a_sub = await pipe.consumer(pipe.out_stream, "adapter")
        conn = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=conn,
                                         timeout=aiohttp.ClientTimeout(total=10)) as http:
            arrivals = Arrivals(list(invoices), cfg.rate, cfg.window, probe)
            probe.start()
            tasks = [asyncio.ensure_future(c) for c in (
                _router(pipe, r_sub, stop, probe), _adapter(pipe, a_sub, stop, http, probe),
                probe.sample())]
            try:
                await _ingress(pipe, arrivals, invoices)
                complete = await probe.wait(cfg.stall_timeout)
            finally:
                stop.set()
                tasks[-1].cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await pipe.close()
    out = probe.figures(variant, cfg.rate, complete)
    out["atomic_fallbacks"] = pipe.atomic_fallbacks
    out["variant"] = ("per-message publish_async" if variant == "b1" else
                      "atomic batch publishes (group commit at the ingress)")
    return out


async def run_raw_hop(cfg: BaselineConfig) -> dict[str, Any]:
    """Run baseline (a) once: one stored hop, fetch, decode, ack."""
    pipe = _Pipe(cfg, atomic=False)
    invoices = {inv.id: inv for inv in _inputs(cfg)}
    probe = Probe(cfg.events)
    stop = asyncio.Event()

    async def consume(sub: JetStreamContext.PullSubscription) -> None:
        while not stop.is_set():
            msgs = await _fetch(sub, cfg.router_batch)
            for m in msgs:
                inv = _inv_dec.decode(m.data)
                await m.ack()
                probe.complete(inv.id, time.time())

    try:
        await pipe.open(streams=1)
        sub = await pipe.consumer(pipe.in_stream, "hop")
        arrivals = Arrivals(list(invoices), cfg.rate, cfg.window, probe)
        probe.start()
        tasks = [asyncio.ensure_future(consume(sub)), asyncio.ensure_future(probe.sample())]
        try:
            await _ingress(pipe, arrivals, invoices)
            complete = await probe.wait(cfg.stall_timeout)
        finally:
            stop.set()
            tasks[-1].cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await pipe.close()
    out = probe.figures("raw_hop", cfg.rate, complete)
    out["latency_source"] = "per-event (admission at the publisher to ack sent)"
    return out
