"""The baselines' revenue lane does the gateway revenue poster's platform work: the same lines,
the same packing, the same budget defaults, b2wl's ledger brackets and chains each upload, and
a refused upload naks what it did not upload. Nothing here asserts a speed."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from actors.platforms.billing.erpgw import invoice_from_event
from actors.revenue import plan
from bench._probe import Probe
from bench._raw import REVENUE_PATH, BaselineConfig, ErpBudget, RevenueStats, _upload_batch
from bench._webhook import Ledger
from bench._wire import invoice_from_billing, journal_for, revenue_lines
from contracts.platforms.billing import BillingEvent, EventData
from contracts.platforms.revenue import RevenueBatch
from gateway.config import Config
from sim import generate_invoices

RUN = "r1"


def test_the_revenue_defaults_are_the_gateways() -> None:
    gw, cfg = Config(), BaselineConfig(nats_url="", sim_url="", events=1)
    assert (cfg.revenue_batch, cfg.revenue_max_lines) == (gw.revenue.batch,
                                                          gw.revenue.max_batch_lines)
    assert (cfg.revenue_rate, cfg.revenue_burst) == (gw.revenue_limiter.rate,
                                                     gw.revenue_limiter.burst)


def test_the_lines_are_the_gateways_with_a_run_unique_id() -> None:
    for b in generate_invoices(50, 7, 1):
        gateway = plan.revenue_lines(invoice_from_event(BillingEvent(
            id=f"evt_{b.id}", type="invoice.finalized", created=b.created,
            data=EventData(object=b))))
        ours = revenue_lines(invoice_from_billing(b), RUN)
        assert [ln.line_id for ln in ours] == [f"{RUN}:{ln.line_id}" for ln in gateway]
        assert ([(ln.invoice_id, ln.product, ln.currency, ln.amount, ln.period_start,
                  ln.period_end) for ln in ours]
                == [(ln.invoice_id, ln.product, ln.currency, ln.amount, ln.period_start,
                     ln.period_end) for ln in gateway])


def _chain_ok(path: Path) -> bool:
    """The audit chain verified here, independently of the code under test."""
    prev = "0" * 64
    with sqlite3.connect(path) as db:
        for at, event, key, detail, prev_hash, h in db.execute(
                "SELECT at, event, key, detail, prev_hash, hash FROM audit ORDER BY seq"):
            row = f"{prev}|{at!r}|{event}|{key}|{detail}".encode()
            if prev_hash != prev or h != hashlib.sha256(row).hexdigest():
                return False
            prev = h
    return True


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    led = Ledger(tmp_path / "b2wl.sqlite3")
    await led.open()
    try:
        yield led
    finally:
        await led.close()


async def test_the_ledger_audits_every_row_in_one_chain(ledger: Ledger) -> None:
    invoices = [invoice_from_billing(b) for b in generate_invoices(3, 7, 1)]
    entries = [journal_for(inv, RUN) for inv in invoices]
    await ledger.record(entries, [("created", f"je_{i}") for i in range(len(entries))])
    lines = [ln for inv in invoices for ln in revenue_lines(inv, RUN)]
    await ledger.claim_uploads(lines)
    assert set((await ledger.upload_states([ln.line_id for ln in lines])).values()) == {
        "pending"}
    await ledger.record_uploads(lines, "uploaded", "RB-1")
    summary = await ledger.summary()
    assert summary["uploads"] == {"uploaded": len(lines)} and summary["postings"] == 3
    assert summary["audit_rows"] == 3 + 2 * len(lines) and summary["chain_ok"] is True
    assert summary["transactions"] == 1 and summary["upload_transactions"] == 2
    assert _chain_ok(ledger.path)
    assert ledger.db is not None
    await ledger.db.execute("UPDATE audit SET detail = 'forged' WHERE seq = 2")
    await ledger.db.commit()
    assert (await ledger.summary())["chain_ok"] is False and not _chain_ok(ledger.path)


async def test_a_refused_upload_naks_what_it_did_not_upload_and_is_sent_again_alone(
        ledger: Ledger) -> None:
    received: list[list[str]] = []
    answers = [201, 503]

    async def upload(request: web.Request) -> web.Response:
        batch = msgspec.json.decode(await request.read(), type=RevenueBatch)
        received.append([ln.line_id for ln in batch.lines])
        status = answers.pop(0) if answers else 201
        return web.json_response({"batchId": f"RB-{len(received)}", "status": "accepted",
                                  "lines": len(batch.lines)}, status=status)

    app = web.Application()
    app.router.add_post(REVENUE_PATH, upload)
    invoices = [invoice_from_billing(b) for b in generate_invoices(6, 7, 1)]
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        cfg = BaselineConfig(nats_url="", sim_url=str(server.make_url("")).rstrip("/"),
                             events=6, run_id=RUN, revenue_max_lines=6, revenue_rate=0)
        probe, stats = Probe(6), RevenueStats()
        left = await _upload_batch(cfg, invoices, ErpBudget(0, 1), http, probe, stats, ledger)
        first = {i.split(":")[1] for i in received[0]}
        assert all(left[inv.id] == 0 for inv in invoices if inv.id in first)
        unfinished = [inv for inv in invoices if left[inv.id] > 0]
        assert unfinished and stats.errors == 1 and probe.errors == 1 and stats.uploads == 1
        states = await ledger.upload_states([i for part in received for i in part])
        assert {states[i] for i in received[0]} == {"uploaded"}
        assert {states[i] for i in received[1]} == {"released"}
        # The batch is redelivered whole: what was uploaded is not sent again; the refused
        # upload's lines and those never tried are.
        left = await _upload_batch(cfg, invoices, ErpBudget(0, 1), http, probe, stats, ledger)
        assert sum(left.values()) == 0 and stats.skipped_lines == len(received[0])
        every = [ln.line_id for inv in invoices for ln in revenue_lines(inv, RUN)]
        assert sorted(i for part in received[2:] for i in part) == sorted(
            set(every) - set(received[0]))
        assert set(received[1]) <= {i for part in received[2:] for i in part}
    summary = await ledger.summary()
    assert summary["uploads"] == {"uploaded": sum(len(inv.lines) for inv in invoices)}
    assert summary["chain_ok"] is True
