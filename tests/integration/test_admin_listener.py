"""S26 with a real gateway: the webhook port serves webhooks and the usage intake only; the
probes, the status tree, the metrics and the synchronous lane answer on the admin listener,
and ``/readyz`` tells the truth while the broker is missing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from gateway.app import run_gateway
from gateway.broker import EmbeddedBroker, free_port
from gateway.config import load_config

from .conftest import LiveGateway, _stop, billing_event, find_child, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def _get(s: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with s.get(url) as r:
        raw = await r.read()
        ctype = r.headers.get("Content-Type", "")
        return r.status, msgspec.json.decode(raw) if "json" in ctype else raw.decode()


async def test_the_webhook_port_serves_no_admin_route(live_gateway: LiveGateway) -> None:
    gw = live_gateway
    webhooks = gw.url.removesuffix("/webhooks/billing")
    async with aiohttp.ClientSession() as s:
        for path in ("/metrics", "/healthz", "/status", "/livez", "/readyz"):
            assert (await _get(s, f"{webhooks}{path}"))[0] == 404, path
        async with s.post(f"{webhooks}/sync/v1/pricing/validate", json={}) as r:
            assert r.status == 404
        # The admin listener serves them.
        assert await _get(s, f"{gw.admin_url}/livez") == (200, {"ok": True})
        status, ready = await _get(s, f"{gw.admin_url}/readyz")
        assert status == 200 and ready["checks"] == {"broker": True, "ledger": True,
                                                      "consumers": True}
        body = msgspec.json.encode(billing_event(71))
        assert (await gw.post(body, signed(body)))[0] == 200  # webhooks still on their port
        status, tree = await _get(s, f"{gw.admin_url}/status")
        assert status == 200 and tree["ready"] is True
        ingress = find_child(tree["actors"], "billing-ingress")
        assert ingress is not None and ingress["accepted"] == 1
        status, text = await _get(s, f"{gw.admin_url}/metrics")
        assert status == 200 and "erpgw_build_info" in text
        async with s.post(f"{gw.admin_url}/sync/v1/pricing/validate", json={}) as r:
            assert r.status != 404  # the lane answers (a 4xx naming the bad request)
        # The usage intake stays on the webhook port (its token checked there).
        async with s.post(f"{webhooks}/usage/v1/records", json={}) as r:
            assert r.status == 401


async def test_readyz_is_503_until_the_broker_is_there(tmp_path: Path, sim_url: str) -> None:
    nats_port = free_port()
    cfg = load_config(env={}, overrides={
        "data_dir": str(tmp_path / "gw"), "nats": {"url": f"nats://127.0.0.1:{nats_port}"},
        "http": {"port": free_port()}, "admin": {"port": free_port()},
        "erp": {"base_url": sim_url}, "revenue": {"base_url": sim_url},
        "cpq": {"base_url": sim_url}, "partner": {"base_url": sim_url},
        "reconcile": {"billing_url": sim_url}})
    admin = f"http://127.0.0.1:{cfg.admin.port}"
    ready = anyio.Event()
    gateway = anyio.Event()

    async def run() -> None:
        try:
            await run_gateway(cfg, ready=ready, handle_signals=False)
        finally:
            gateway.set()

    def embedded() -> EmbeddedBroker:
        return EmbeddedBroker(tmp_path / "nats", port=nats_port,
                              identities_dir=tmp_path / "gw" / "identities")

    # Once up and down: the role seeds exist where the gateway looks, the port is free.
    first = embedded()
    await first.start()
    await first.stop()
    task = asyncio.create_task(run())
    broker: EmbeddedBroker | None = None
    try:
        async with aiohttp.ClientSession() as s:
            # The admin listener answers before the broker does: not ready, and why.
            with anyio.fail_after(20):
                while True:
                    try:
                        status, doc = await _get(s, f"{admin}/readyz")
                        break
                    except aiohttp.ClientConnectionError:
                        assert not gateway.is_set(), task.exception()
                        await anyio.sleep(0.05)
            assert status == 503 and doc["code"] == "admin.not_ready"
            assert doc["not_ready"] == ["broker", "ledger", "consumers"]
            assert (await _get(s, f"{admin}/livez"))[0] == 200
            # The broker comes up (the seeds where the gateway looks): ready.
            broker = embedded()
            await broker.start()
            with anyio.fail_after(40):
                await ready.wait()
            status, doc = await _get(s, f"{admin}/readyz")
            assert (status, doc["ready"]) == (200, True)
    finally:
        await _stop(task)
        if broker is not None:
            await broker.stop()
