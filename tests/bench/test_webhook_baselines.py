"""The webhook baselines (b1w, b2w, b2wl) run for real, small and bounded: every invoice the
generator sends is posted to the simulated ERP exactly once, and the ingress refuses what the
gateway's ingress refuses. Nothing here asserts a speed."""

from __future__ import annotations

import asyncio
import json
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
           "box_pids": [broker.pid]}
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
    if kind == "b2wl":
        assert doc["ledger"]["postings"] == EVENTS and doc["ledger"]["transactions"] >= 1
    else:
        assert "ledger" not in doc
    ids = [f"in_{i:06d}" for i in range(1, EVENTS + 1)]
    assert await _postings(sim_stack.sim_url, ids) == dict.fromkeys(ids, 1)


@pytest.mark.integration
@pytest.mark.timeout(300)
async def test_the_fastapi_faststream_peer_posts_every_invoice_once(
        sim_stack: Stack, broker: EmbeddedBroker) -> None:
    for module in ("fastapi", "uvicorn", "faststream"):
        pytest.importorskip(module)
    admin = broker.auth("admin")
    cfg = {"nats_url": broker.url, "nats_seed": admin.seed_file if admin else "",
           "sim_url": sim_stack.sim_url, "events": EVENTS, "run_id": "peerw-smoke",
           "stall_timeout": 30.0, "box_pids": [broker.pid]}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.baseline", "peerw", json.dumps(cfg),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-2000:]
    doc: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert doc["completed"] == EVENTS and doc["duplicates"] == 0 and doc["errors"] == 0
    assert doc["generator"]["statuses"] == {"200": EVENTS}
    ids = [f"in_{i:06d}" for i in range(1, EVENTS + 1)]
    assert await _postings(sim_stack.sim_url, ids) == dict.fromkeys(ids, 1)


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
