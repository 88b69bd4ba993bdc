"""The webhook baselines: the raw paths with the gateway's ingress work in front of them.

* ``b1w``: (b1) behind an ``aiohttp`` webhook ingress: each ``POST /webhooks/billing`` is
  read, its ``Billing-Signature`` checked exactly as the gateway checks it
  (``contracts.platforms.signing.verify``: timestamp tolerance, HMAC-SHA256, constant-time
  compare), the event decoded and validated (``BillingEvent``), the invoice published with
  ``Nats-Msg-Id`` and answered 200 once its PubAck is back (durable), as the gateway answers.
* ``b2w``: (b2) behind the same ingress; the ingress commits whatever arrived while its
  previous commit was in flight as one atomic batch, and answers each webhook when its batch
  committed.
* ``b2wl``: (b2w) plus, per adapter batch, after the ERP answered and before the ack, one
  fsync'd SQLite transaction (WAL, ``synchronous=FULL``, the gateway ledger's settings)
  recording the batch's postings and one audit row each: the durable write the gateway's
  ledger does per batch.

All three run the gateway's revenue lane beside the ERP lane (``bench._raw._revenue``): a
second durable consumer (``revenue``) on the IN stream fetching 200 invoices, one line per
invoice line, uploads of at most 500 lines to the simulated revenue platform
(``POST /revenue/v1/batches``, 201), each within the revenue account's budget (10/s, burst
5), then ack. In b2wl each upload is bracketed as the gateway's revenue poster brackets it:
its lines ``pending`` (one row and one audit row per line) in one fsync'd transaction before
the POST, ``uploaded`` (row update and one audit row per line) in another after the 201; a
line the ledger holds ``uploaded`` or ``pending`` is not sent again. The ledger's audit rows
are one SHA-256 chain, as the gateway's (each row's hash over the previous hash and the row's
fields). The lane is stopped when the leg ends (its progress is the figures' ``revenue``
section), as the gateway's revenue lane is not waited on either.

The load comes from ``bench._loadgen`` in a process of its own (webhooks built and signed
before the clock, one keep-alive client, 64 in flight), the same generator for every
webhook system. A bad signature or body is answered 400 with ``{"code","message","path"}``;
a failed commit 503 (the generator retries it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import msgspec
from aiohttp import web

from contracts._errors import SignatureError
from contracts.platforms.billing import BillingEvent
from contracts.platforms.revenue import RevenueLineIn
from contracts.platforms.signing import SIGNATURE_HEADER, verify

from ._probe import Probe
from ._raw import (
    MAX_ATOMIC,
    BaselineConfig,
    RevenueStats,
    _adapter,
    _inv_enc,
    _Pipe,
    _revenue,
    _router,
)
from ._wire import Journal, invoice_from_billing

__all__ = ["GENESIS", "WEBHOOK_KINDS", "Ledger", "chain_hash", "run_webhook_path"]

log = logging.getLogger("bench.webhook")

WEBHOOK_KINDS = ("b1w", "b2w", "b2wl")
WEBHOOK_PATH = "/webhooks/billing"

_event_dec = msgspec.json.Decoder(BillingEvent)


class _GroupCommit:
    """The b2 ingress's group commit, answering each webhook when its batch committed."""

    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe
        self.pending: list[tuple[bytes, str, asyncio.Future[None]]] = []
        self.wake = asyncio.Event()

    async def add(self, data: bytes, msg_id: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((data, msg_id, fut))
        self.wake.set()
        await fut

    async def run(self) -> None:
        while True:
            if not self.pending:
                self.wake.clear()
                await self.wake.wait()
                continue
            take = self.pending[:MAX_ATOMIC]
            del self.pending[:MAX_ATOMIC]
            try:
                await self.pipe.publish_outputs(self.pipe.in_subject,
                                                [(d, m) for d, m, _f in take])
            except Exception as exc:  # each webhook of the batch is answered 503
                for _d, _m, f in take:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for _d, _m, f in take:
                if not f.done():
                    f.set_result(None)


def _problem(status: int, code: str, message: str, path: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "path": path}, status=status)


class _Ingress:
    def __init__(self, pipe: _Pipe, probe: Probe, secret: str) -> None:
        self.pipe = pipe
        self.probe = probe
        self.secrets = [secret]
        self.group = _GroupCommit(pipe) if pipe.atomic else None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(request.headers.get(SIGNATURE_HEADER), body, self.secrets, now=time.time())
        except SignatureError as exc:
            return _problem(400, exc.code, str(exc), f"headers.{SIGNATURE_HEADER}")
        try:
            event = _event_dec.decode(body)
        except msgspec.ValidationError as exc:
            return _problem(400, "body.invalid", str(exc), "$")
        except msgspec.DecodeError as exc:
            return _problem(400, "body.malformed", str(exc), "$")
        inv = invoice_from_billing(event.data.object)
        self.probe.arrive(inv.id)  # receipt (backlog samples); the generator's clock wins
        data, msg_id = _inv_enc.encode(inv), f"{self.pipe.cfg.run_id}:{inv.id}"
        try:
            if self.group is not None:
                await self.group.add(data, msg_id)
            else:
                assert self.pipe.js is not None
                await self.pipe.js.publish(self.pipe.in_subject, data,
                                           headers={"Nats-Msg-Id": msg_id})
        except Exception as exc:  # not durable: the sender retries
            log.warning("ingress publish failed: %r", exc)
            return _problem(503, "ingress.unavailable", "the event is not stored; retry", "$")
        return web.json_response({"received": True})


GENESIS = "0" * 64  # the previous hash of the first audit row


def chain_hash(prev: str, at: float, event: str, key: str, detail: str) -> str:
    """The hash of one audit row: SHA-256 over the previous row's hash and this row's fields,
    as the gateway's ledger chains its audit rows (before its chain is keyed)."""
    return hashlib.sha256(f"{prev}|{at!r}|{event}|{key}|{detail}".encode()).hexdigest()


_AUDIT_INSERT = ("INSERT INTO audit (at, event, key, detail, prev_hash, hash) "
                 "VALUES (?, ?, ?, ?, ?, ?)")


class Ledger:
    """b2wl's ledger: one fsync'd SQLite transaction per adapter batch (the gateway ledger's
    pragmas: WAL, ``synchronous=FULL``) and two per revenue upload (``pending`` before it,
    ``uploaded`` after it), each with one hash-chained audit row per row written. The ERP
    adapter and the revenue lane share the connection; a lock keeps their transactions, and
    the chain's head, one after the other."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: aiosqlite.Connection | None = None
        self.transactions = 0  # ERP batches recorded
        self.upload_transactions = 0
        self.head = GENESIS
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.path)
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA synchronous=FULL")
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS postings (idempotency_key TEXT PRIMARY KEY, "
            "external_id TEXT NOT NULL, amount INTEGER NOT NULL, status TEXT NOT NULL, "
            "erp_id TEXT NOT NULL, posted_at REAL NOT NULL)")
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS uploads (line_id TEXT PRIMARY KEY, "
            "invoice_id TEXT NOT NULL, status TEXT NOT NULL, batch_id TEXT, "
            "amount INTEGER NOT NULL, currency TEXT NOT NULL, recorded_at REAL NOT NULL)")
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "at REAL NOT NULL, event TEXT NOT NULL, key TEXT NOT NULL, detail TEXT NOT NULL, "
            "prev_hash TEXT NOT NULL, hash TEXT NOT NULL)")
        await self.db.commit()
        async with self.db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1") as cur:
            row = await cur.fetchone()
        self.head = str(row[0]) if row else GENESIS

    async def _write(self, sql: str, rows: list[tuple[Any, ...]],
                     audit: list[tuple[float, str, str, str]]) -> None:
        """``sql`` over ``rows`` and the chained ``audit`` rows, in one transaction."""
        assert self.db is not None
        async with self._lock:
            prev, chained = self.head, []
            for at, event, key, detail in audit:
                h = chain_hash(prev, at, event, key, detail)
                chained.append((at, event, key, detail, prev, h))
                prev = h
            await self.db.execute("BEGIN")
            try:
                await self.db.executemany(sql, rows)
                await self.db.executemany(_AUDIT_INSERT, chained)
                await self.db.commit()
            except BaseException:
                await self.db.rollback()
                raise
            self.head = prev

    async def record(self, entries: list[Journal], results: list[tuple[str, str]]) -> None:
        now = time.time()
        rows = [(e.idempotency_key, e.external_id, e.lines[0].debit, status, erp_id, now)
                for e, (status, erp_id) in zip(entries, results, strict=True)]
        await self._write(
            "INSERT INTO postings VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(idempotency_key) DO "
            "UPDATE SET status = excluded.status, erp_id = excluded.erp_id", rows,
            [(now, "posted", key, f"{status} {erp_id}") for key, _x, _a, status, erp_id, _t
             in rows])
        self.transactions += 1

    async def upload_states(self, line_ids: list[str]) -> dict[str, str]:
        """The status of every line of ``line_ids`` that has an upload row."""
        assert self.db is not None
        found: dict[str, str] = {}
        for i in range(0, len(line_ids), 500):
            chunk = line_ids[i:i + 500]
            sql = ("SELECT line_id, status FROM uploads WHERE line_id IN "
                   f"({','.join('?' * len(chunk))})")
            async with self.db.execute(sql, chunk) as cur:
                found.update((str(r[0]), str(r[1])) for r in await cur.fetchall())
        return found

    async def claim_uploads(self, lines: list[RevenueLineIn]) -> None:
        """``lines`` ``pending``, one row and one audit row each, before their upload."""
        now = time.time()
        await self._write(
            "INSERT INTO uploads VALUES (?, ?, 'pending', NULL, ?, ?, ?) ON CONFLICT(line_id) "
            "DO UPDATE SET status = 'pending', recorded_at = excluded.recorded_at",
            [(ln.line_id, ln.invoice_id, ln.amount, ln.currency, now) for ln in lines],
            [(now, "upload.pending", f"revenue:{ln.line_id}", "") for ln in lines])
        self.upload_transactions += 1

    async def record_uploads(self, lines: list[RevenueLineIn], status: str,
                             batch_id: str | None) -> None:
        """The answer for ``lines`` (``uploaded`` in ``batch_id``, or ``released``): their rows
        updated and one audit row each."""
        now = time.time()
        detail = f"batch {batch_id}" if batch_id else ""
        await self._write(
            "UPDATE uploads SET status = ?, batch_id = COALESCE(?, batch_id), recorded_at = ? "
            "WHERE line_id = ?",
            [(status, batch_id, now, ln.line_id) for ln in lines],
            [(now, f"upload.{status}", f"revenue:{ln.line_id}", detail) for ln in lines])
        self.upload_transactions += 1

    async def _scalar(self, sql: str) -> int:
        assert self.db is not None
        async with self.db.execute(sql) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def count(self) -> int:
        return await self._scalar("SELECT count(*) FROM postings")

    async def summary(self) -> dict[str, Any]:
        """What the ledger holds: postings, uploads per status, audit rows, and whether the
        audit chain verifies from the first row to the last."""
        assert self.db is not None
        async with self.db.execute("SELECT status, count(*) FROM uploads GROUP BY status") as cur:
            uploads = {str(r[0]): int(r[1]) for r in await cur.fetchall()}
        prev, ok, rows = GENESIS, True, 0
        async with self.db.execute(
                "SELECT at, event, key, detail, prev_hash, hash FROM audit ORDER BY seq") as cur:
            async for at, event, key, detail, prev_hash, h in cur:
                rows += 1
                ok = ok and prev_hash == prev and h == chain_hash(prev, at, event, key, detail)
                prev = h
        return {"transactions": self.transactions, "postings": await self.count(),
                "upload_transactions": self.upload_transactions, "uploads": uploads,
                "audit_rows": rows, "chain_ok": ok}

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()


async def _generate(url: str, cfg: BaselineConfig) -> dict[str, Any]:
    """Run ``bench._loadgen`` against ``url``; its figures dict (or one saying why not)."""
    gen_cfg = {"url": url, "events": cfg.events, "secret": cfg.webhook_secret,
               "rate": cfg.rate, "window": cfg.window, "seed": cfg.seed}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench._loadgen", json.dumps(gen_cfg),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(),
                                        cfg.stall_timeout + 60.0 + cfg.events / 100.0)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"errors": cfg.events, "reason": "the load generator did not finish"}
    try:
        doc: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"errors": cfg.events, "reason": f"the load generator exited {proc.returncode}"}
    return doc


async def run_webhook_path(cfg: BaselineConfig, variant: str) -> dict[str, Any]:
    """Run baseline ``b1w``, ``b2w`` or ``b2wl`` once; the figures dict (``Probe.figures``
    plus ``generator``, ``revenue`` (``RevenueStats.figures``: what the revenue lane did by
    the leg's end) and, for b2wl, ``ledger`` (``Ledger.summary``))."""
    if variant not in WEBHOOK_KINDS:
        raise ValueError(f"webhook variant must be one of {', '.join(WEBHOOK_KINDS)}, "
                         f"got {variant!r}")
    pipe = _Pipe(cfg, atomic=variant != "b1w")
    probe = Probe(cfg.events, cfg.box_pids)
    stop = asyncio.Event()
    revenue = RevenueStats()
    ledger: Ledger | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if variant == "b2wl":
        if not cfg.ledger_dir:
            tmp = tempfile.TemporaryDirectory(prefix="erpgw-bench-ledger-")
        ledger = Ledger(Path(cfg.ledger_dir or (tmp.name if tmp else "."))
                        / f"{cfg.run_id}.sqlite3")
    ingress = _Ingress(pipe, probe, cfg.webhook_secret)
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, ingress.handle)
    runner = web.AppRunner(app, access_log=None)
    gen: dict[str, Any] = {}
    complete = False
    try:
        await pipe.open(streams=2)
        if ledger is not None:
            await ledger.open()
        r_sub = await pipe.consumer(pipe.in_stream, "router")
        a_sub = await pipe.consumer(pipe.out_stream, "adapter")
        v_sub = await pipe.consumer(pipe.in_stream, "revenue")
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        conn = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=conn,
                                         timeout=aiohttp.ClientTimeout(total=10)) as http:
            probe.start()
            tasks = [asyncio.ensure_future(c) for c in (
                _router(pipe, r_sub, stop, probe),
                _adapter(pipe, a_sub, stop, http, probe,
                         ledger.record if ledger is not None else None),
                _revenue(pipe, v_sub, stop, http, probe, revenue, ledger),
                probe.sample())]
            if ingress.group is not None:
                tasks.append(asyncio.ensure_future(ingress.group.run()))
            try:
                gen_task = asyncio.ensure_future(
                    _generate(f"http://127.0.0.1:{port}{WEBHOOK_PATH}", cfg))
                waiter = asyncio.ensure_future(probe.wait(cfg.stall_timeout))
                await asyncio.wait([gen_task, waiter], return_when=asyncio.FIRST_COMPLETED)
                if gen_task.done() and gen_task.result().get("errors"):
                    waiter.cancel()  # some events never got in: nothing more will complete
                    complete = False
                else:
                    complete = await waiter
                gen = await gen_task
                if complete and cfg.revenue_drain_s > 0:
                    await revenue.drain(cfg.events, cfg.revenue_drain_s)
                revenue.end()
            finally:
                stop.set()
                for t in tasks[3:]:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await runner.cleanup()
        await pipe.close()
    sent_at: dict[str, float] = gen.pop("sent_at", {}) or {}
    if sent_at:  # an event's clock starts at the generator's first POST of it
        probe.arrived = dict(sent_at)
    gen_cpu = float(gen.get("cpu_s") or 0.0)
    out = probe.figures(variant, cfg.rate, complete, generator_cpu_s=gen_cpu)
    out["generator"] = gen
    out["atomic_fallbacks"] = pipe.atomic_fallbacks
    out["latency_source"] = ("per-event (the generator's first POST of the webhook to the ERP "
                             "bulk answer at the adapter)")
    out["cpu_scope"] = ("the baseline process (webhook ingress, router, adapter, revenue lane"
                        + (", ledger)" if ledger is not None else ")")
                        + "; the load generator is a process of its own")
    out["variant"] = {"b1w": "b1 behind a signed-webhook ingress, + revenue lane",
                      "b2w": "b2 behind a signed-webhook ingress (group commit), + revenue lane",
                      "b2wl": "b2w + one fsync'd SQLite transaction per adapter batch and two "
                              "per revenue upload, audit rows hash-chained"}[variant]
    out["revenue"] = revenue.figures()
    if ledger is not None:
        try:
            out["ledger"] = await ledger.summary()
        finally:
            await ledger.close()
            if tmp is not None:
                tmp.cleanup()
    return out
