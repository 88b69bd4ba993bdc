"""F12: the billing stream fills up (max_bytes, discard=new). The gateway refuses new webhooks
with 503 + Retry-After instead of dropping anything; accepted work waits in the stream; once an
operator raises the limit (config, restart) everything drains: lost 0, duplicates 0. And on the
bus: a small batch to a full stream is answered "full" at once, message by message."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from actors.infra.bus import ATOMIC_FROM, NatsBus, OutMsg, StreamSettings
from gateway.broker import EmbeddedBroker
from gateway.stack import Stack

from .test_end_to_end import assert_clean

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_full_stream_refuses_then_drains_after_the_limit_is_raised(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=71,
                  gateway_toml="[streams]\nmax_bytes = 60000\n")
    await stack.start()
    try:
        await stack.bill_run(200)
        last, stable = None, 0
        with anyio.fail_after(60):
            while stable < 12:  # ~3 s without change: the stream is full, senders retry
                audit = await stack.audit()
                sig = (audit["accepted"], audit["posted"])
                stable = stable + 1 if sig == last else 0
                last = sig
                await anyio.sleep(0.25)
        assert 0 < audit["accepted"] < 200  # the rest were refused, not dropped
        log = stack.tail("gateway.log", 5000)
        assert "webhook rejected 503 broker.storage_full" in log
        assert (await stack.dead_letters()) == []  # waiting work is not dead-lettered

        # The operator raises the limit; the gateway updates its streams at start.
        await stack.stop_gateway()
        stack.gateway_toml = "[streams]\nmax_bytes = 50000000\n"
        await stack.start_gateway()
        result = await stack.wait_drained(200, stall_timeout=60)
        assert_clean(result, 200)
    finally:
        await stack.close()


async def test_a_small_batch_to_a_full_stream_is_answered_full_at_once(
        broker: EmbeddedBroker) -> None:
    """A batch too small for an atomic commit is published message by message; each message
    refused by a full stream comes back as ``broker.storage_full`` (the server's answer), not
    as a lost PubAck sent again until the election window ends."""
    bus = await NatsBus.connect(broker.url, auth=broker.auth("admin"), election_retry_s=15)
    try:
        await bus.ensure_stream("FULL", ["full.>"], StreamSettings(max_bytes=20_000))
        n = 0
        while True:  # fill it
            out = await bus.publish_atomic([OutMsg("full.x", b"x" * 300, msg_id=f"m{n}-{i}")
                                            for i in range(3)])
            n += 1
            if any(isinstance(r, Exception) for r in out):
                break
        small = [OutMsg("full.x", b"y" * 300, msg_id=f"s{i}") for i in range(3)]
        assert len(small) < ATOMIC_FROM
        results = await bus.publish_atomic(small)
        assert [getattr(r, "code", r) for r in results] == ["broker.storage_full"] * 3
        assert bus.election_retries == 0  # refused is not lost: nothing was sent again
    finally:
        await bus.close()
