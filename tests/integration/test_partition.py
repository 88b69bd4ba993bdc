"""Fault matrix F10: a silent partition between a gateway and its broker. A TCP proxy between
them (``gateway.rrproxy.BlackholeProxy``) holds every byte both ways and never closes: the
client's pings (``nats.ping_interval_s`` lowered to 0.5 s here) count the link dead and it
reconnects (the proxy sees it close the held connection; its new attempts are refused until
the partition heals); webhooks meanwhile are
answered 503 with a JSON ``broker.*`` code and the sender retries them; the consumers' fetches
fail and are retried, and what was delivered into the dead link is redelivered after
``ack_wait`` (5 s here). Once the partition heals every event is stored once (the same message
ids) and posted to the ERP once."""

from __future__ import annotations

import random
from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest

from gateway.broker import EmbeddedBroker
from gateway.rrproxy import BlackholeProxy

from .conftest import LiveGateway, billing_event, running_gateway, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BEFORE = range(1, 6)  # accepted before the partition
DURING = range(6, 16)  # sent while it lasts


async def _deliver(gw: LiveGateway, n: int, statuses: list[tuple[int, str]],
                   refused: anyio.Event, rng: random.Random) -> None:
    """A webhook sender: POST until a 2xx, backing off; each answer is recorded."""
    body = msgspec.json.encode(billing_event(n))
    timeout = aiohttp.ClientTimeout(total=60)  # a guard against a hang, not a speed target
    async with aiohttp.ClientSession(timeout=timeout) as s:
        while True:
            async with s.post(gw.url, data=body, headers=signed(body)) as r:
                doc = msgspec.json.decode(await r.read())
            statuses.append((r.status, str(doc.get("code", ""))))
            if 200 <= r.status < 300:
                return
            if r.status == 503:
                refused.set()
            await anyio.sleep(0.2 + 0.3 * rng.random())


async def test_a_silent_partition_is_detected_and_heals_losing_and_doubling_nothing(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    proxy = BlackholeProxy(broker.host, broker.port)
    await proxy.start()
    rng = random.Random(10)
    statuses: list[tuple[int, str]] = []
    refused = anyio.Event()
    try:
        async with running_gateway(broker, tmp_path, sim_url, nats={
                "url": proxy.url, "ping_interval_s": 0.5, "election_retry_s": 1.0},
                consumers={"ack_wait_s": 5.0}) as gw:
            for n in BEFORE:
                await _deliver(gw, n, statuses, refused, rng)
            assert {s for s, _ in statuses} == {200}
            connected = proxy.connections
            proxy.hold()
            with anyio.fail_after(120):  # guards against a hang, not speed targets
                async with anyio.create_task_group() as tg:
                    for n in DURING:
                        tg.start_soon(_deliver, gw, n, statuses, refused, rng)
                    await refused.wait()  # a webhook answered 503 during the partition
                    await proxy.link_dropped.wait()  # the client counted the link dead
                    await proxy.release()
            with anyio.fail_after(60):
                while not all([await gw.erp_postings(f"in_{n:06d}") for n in DURING]):
                    await anyio.sleep(0.1)
            await gw.wait_idle()  # a second posting, if there were one, has arrived now
            postings = {n: len(await gw.erp_postings(f"in_{n:06d}"))
                        for n in (*BEFORE, *DURING)}
            stored = await gw.billing_messages()
    finally:
        await proxy.stop()
    codes = {code for status, code in statuses if status == 503}
    assert codes and all(c.startswith("broker.") for c in codes), statuses
    assert all(s in (200, 503) for s, _ in statuses), statuses
    assert proxy.connections > connected  # the gateway reconnected through the proxy
    assert postings == dict.fromkeys((*BEFORE, *DURING), 1)
    assert stored == len(BEFORE) + len(DURING)  # retried with the same ids: stored once each
