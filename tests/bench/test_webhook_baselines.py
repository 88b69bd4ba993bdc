"""The webhook baselines (b1w, b2w, b2wl) and the FastStream peers run for real, small and
bounded: every invoice the generator sends is posted to the simulated ERP exactly once, every
line of every invoice is uploaded to the simulated revenue platform exactly once (b2wl's
ledger holds each upload and a valid audit chain), and the ingress refuses what the gateway's
ingress refuses. Nothing here asserts a speed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bench._probe import Probe
from bench._raw import BaselineConfig, _Pipe
from bench._webhook import WEBHOOK_PATH, _Ingress
from contracts.platforms.signing import SIGNATURE_HEADER, sign
from gateway.broker import EmbeddedBroker, free_port
from gateway.stack import Stack
from sim import generate_invoices

EVENTS = 40


@pytest.fixture
async def sim_stack(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[Stack]:
    """The simulator alone (it plays the ERP), beside the test's broker."""
    stack = Stack(tmp_path / "stack", nats_url=broker.url)
    stack.workdir.mkdir(parents=True, exist_ok=True)
    stack.sim_port, stack.gateway_port = free_port(), free_port()
    await stack.start_sim()
    try:
        yield stack
    finally:
        await stack.close()


async def _postings(base: str, ids: list[str]) -> dict[str, int]:
    async with aiohttp.ClientSession() as http:
        async def one(inv: str) -> tuple[str, int]:
            url = f"{base}/erp/v1/journal-entries?externalId={inv}"
            async with http.get(url) as resp:
                return inv, len((await resp.json())["items"])
        return dict(await asyncio.gather(*(one(i) for i in ids)))


async def _assert_revenue_uploaded_once(base: str, doc: dict[str, Any]) -> int:
    """Every line of every invoice at the simulated revenue platform exactly once, with its
    amount, and nothing else; the run's ``revenue`` figures say the same. The line count."""
    want = {b.id: (b.currency.upper(), b.subtotal, len(b.lines.data))
            for b in generate_invoices(EVENTS, 7, 1)}  # the generator's invoices (seed 7)
    rows: dict[str, tuple[str, int, int, int]] = {}
    after = ""
    async with aiohttp.ClientSession() as http:
        while True:
            url = f"{base}/revenue/v1/reports/billings?limit=1000&after={after}"
            async with http.get(url) as resp:
                page = await resp.json()
            rows.update((r["invoiceId"], (r["currency"], r["amount"], r["lines"],
                                          r["distinctLines"])) for r in page["items"])
            if not page["hasMore"]:
                break
            after = page["nextAfter"]
        async with http.get(f"{base}/sim/v1/audit") as resp:
            audit = (await resp.json())["revenue"]
    assert rows == {k: (cur, amount, n, n) for k, (cur, amount, n) in want.items()}
    total = sum(n for _c, _a, n in want.values())
    assert audit["lines"] == total and audit["duplicate_lines"] == 0
    assert doc["revenue"]["lines_uploaded"] == total and doc["revenue"]["errors"] == 0
    assert doc["revenue"]["invoices_acked"] == EVENTS
    assert 1 <= doc["revenue"]["uploads"] == audit["batches"]
    return total


def _ledger_holds_every_upload(path: Path, lines: int) -> None:
    """b2wl's ledger: every line ``uploaded`` in a batch, one ``pending`` and one ``uploaded``
    audit row per line, one ``posted`` row per posting, and the chain verifies."""
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT status, count(*), count(batch_id) FROM uploads "
                          "GROUP BY status").fetchall() == [("uploaded", lines, lines)]
        events = dict(db.execute("SELECT event, count(*) FROM audit GROUP BY event").fetchall())
        assert events == {"posted": EVENTS, "upload.pending": lines, "upload.uploaded": lines}
        per_line = db.execute("SELECT count(*) FROM (SELECT key FROM audit WHERE event LIKE "
                              "'upload.%' GROUP BY key HAVING count(*) = 2)").fetchone()
        assert per_line == (lines,)
        prev = "0" * 64
        for at, event, key, detail, prev_hash, h in db.execute(
                "SELECT at, event, key, detail, prev_hash, hash FROM audit ORDER BY seq"):
            assert prev_hash == prev
            assert h == hashlib.sha256(f"{prev}|{at!r}|{event}|{key}|{detail}".encode()
                                       ).hexdigest()
            prev = h


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind,rate", [("b1w", None), ("b2w", None), ("b2wl", 200.0)])
async def test_each_webhook_baseline_posts_every_invoice_once(
        sim_stack: Stack, broker: EmbeddedBroker, tmp_path: Path, kind: str,
        rate: float | None) -> None:
    admin = broker.auth("admin")
    cfg = {"nats_url": broker.url, "nats_seed": admin.seed_file if admin else "",
           "sim_url": sim_stack.sim_url, "events": EVENTS, "rate": rate,
           "run_id": f"{kind}-smoke", "stall_timeout": 30.0, "ledger_dir": str(tmp_path),
           "box_pids": [broker.pid], "revenue_drain_s": 60.0}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.baseline", kind, json.dumps(cfg),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-2000:]
    doc: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert doc["completed"] == EVENTS and doc["duplicates"] == 0 and doc["errors"] == 0
    gen = doc["generator"]
    assert gen["errors"] == 0 and gen["statuses"] == {"200": EVENTS} and gen["cpu_s"] > 0
    assert doc["cpu_us_per_event_box"] > doc["cpu_us_per_event"] > 0
    assert doc["latency_ms"]["n"] == EVENTS
    if rate:
        assert doc["offered_rate"] == rate and doc["keeps_up"] in (True, False)
    ids = [f"in_{i:06d}" for i in range(1, EVENTS + 1)]
    assert await _postings(sim_stack.sim_url, ids) == dict.fromkeys(ids, 1)
    lines = await _assert_revenue_uploaded_once(sim_stack.sim_url, doc)
    if kind == "b2wl":
        led = doc["ledger"]
        assert led["postings"] == EVENTS and led["transactions"] >= 1
        assert led["uploads"] == {"uploaded": lines} and led["chain_ok"] is True
        assert led["upload_transactions"] == 2 * doc["revenue"]["uploads"]
        assert led["audit_rows"] == EVENTS + 2 * lines
        _ledger_holds_every_upload(tmp_path / f"{kind}-smoke.sqlite3", lines)
    else:
        assert "ledger" not in doc


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["peer", "peerw"])
async def test_the_faststream_peers_post_every_invoice_once(
        sim_stack: Stack, broker: EmbeddedBroker, kind: str) -> None:
    for module in ("faststream",) if kind == "peer" else ("fastapi", "uvicorn", "faststream"):
        pytest.importorskip(module)
    admin = broker.auth("admin")
    cfg = {"nats_url": broker.url, "nats_seed": admin.seed_file if admin else "",
           "sim_url": sim_stack.sim_url, "events": EVENTS, "run_id": f"{kind}-smoke",
           "stall_timeout": 30.0, "box_pids": [broker.pid], "revenue_drain_s": 60.0}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.baseline", kind, json.dumps(cfg),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-2000:]
    doc: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert doc["completed"] == EVENTS and doc["duplicates"] == 0 and doc["errors"] == 0
    if kind == "peerw":
        assert doc["generator"]["statuses"] == {"200": EVENTS}
    ids = [f"in_{i:06d}" for i in range(1, EVENTS + 1)]
    assert await _postings(sim_stack.sim_url, ids) == dict.fromkeys(ids, 1)
    await _assert_revenue_uploaded_once(sim_stack.sim_url, doc)


async def test_the_ingress_refuses_a_bad_signature_and_a_bad_body() -> None:
    pipe = _Pipe(BaselineConfig(nats_url="", sim_url="", events=1), atomic=False)
    ingress = _Ingress(pipe, Probe(1), "whsec_t")
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, ingress.handle)
    async with TestClient(TestServer(app)) as client:
        body = b'{"id": "evt_1"}'
        resp = await client.post(WEBHOOK_PATH, data=body,
                                 headers={SIGNATURE_HEADER: sign("other", body, 1_900_000_000)})
        doc = await resp.json()
        assert resp.status == 400 and doc["code"] == "signature.stale"
        assert doc["path"] == f"headers.{SIGNATURE_HEADER}"
        now = int(time.time())
        resp = await client.post(WEBHOOK_PATH, data=body,
                                 headers={SIGNATURE_HEADER: sign("other", body, now)})
        assert resp.status == 400 and (await resp.json())["code"] == "signature.mismatch"
        resp = await client.post(WEBHOOK_PATH, data=body,
                                 headers={SIGNATURE_HEADER: sign("whsec_t", body, now)})
        doc = await resp.json()
        assert resp.status == 400 and doc["code"] == "body.invalid" and doc["message"]
        assert ingress.probe.arrived == {}  # nothing refused was admitted
