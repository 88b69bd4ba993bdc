"""The sync-lane probe is a process of its own (``bench._sync_probe``): its latencies are a
caller's round trips, not the bench process's event loop. Real broker, real responder."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator

import anyio
import nats
import pytest

from bench._sync_probe import SyncProbe
from contracts import Subjects
from gateway.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration

SUBJECT = Subjects().sync_pricing_validate


@pytest.fixture
async def lane(broker: EmbeddedBroker) -> AsyncIterator[dict[str, int]]:
    """A stand-in sync lane: answers ``accepted`` to every second request and ``rejected``
    to the others, and records which process asked."""
    seen = {"requests": 0}
    nc = await nats.connect(broker.url, **broker.nats_options("admin"))

    async def answer(msg: nats.aio.msg.Msg) -> None:
        seen["requests"] += 1
        status = "accepted" if seen["requests"] % 2 else "rejected"
        await msg.respond(b'{"status": "%s"}' % status.encode())

    await nc.subscribe(SUBJECT, cb=answer)
    await nc.flush()
    try:
        yield seen
    finally:
        await nc.close()


async def test_the_probe_times_requests_from_its_own_process(
        broker: EmbeddedBroker, lane: dict[str, int]) -> None:
    probe = SyncProbe(broker.url, SUBJECT, "prod_x", interval=0.0,
                      options=broker.nats_options("sync-client"))
    await probe.start()
    try:
        assert probe._proc is not None and probe._proc.pid != os.getpid()
        idle = await probe.run(count=6)
        assert lane["requests"] == 6
        assert len(idle) == 3 and probe.errors == 3  # a non-accepted answer is an error
        assert all(x > 0 for x in idle)

        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            async def under_load() -> None:
                under.extend(await probe.run(until=stop))
            under: list[float] = []
            tg.start_soon(under_load)
            with anyio.fail_after(30):
                while lane["requests"] < 12:
                    await anyio.sleep(0.01)
            stop.set()
        assert len(under) + probe.errors - 3 == lane["requests"] - 6
        assert probe.latencies_ms == idle + under
    finally:
        await probe.close()
    assert probe._proc is None


async def test_a_probe_that_cannot_connect_says_why() -> None:
    probe = SyncProbe(f"nats://127.0.0.1:{free_port()}", SUBJECT, "prod_x")  # nothing there
    with pytest.raises(RuntimeError, match="cannot start"):
        await probe.start()
    await probe.close()


def test_tls_options_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="tls"):
        SyncProbe("nats://127.0.0.1:4222", SUBJECT, "prod_x",
                  options={"tls": ssl.create_default_context()})
