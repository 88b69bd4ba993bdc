"""S5: a webhook replayed after the gateway restarted, once the broker's duplicate window has
passed (so the stream stores it again), still makes no second posting: what was posted is
known from the ledger on disk, not from the process's memory."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import msgspec
import pytest

from gateway.broker import EmbeddedBroker
from tests.integration.conftest import actor_stats, billing_event, running_gateway, signed

pytestmark = pytest.mark.integration

WINDOW_S = 1.0  # the streams' duplicate window, short so that it is over after the restart


async def test_a_replay_after_a_restart_posts_nothing(broker: EmbeddedBroker, tmp_path: Path,
                                                      sim_url: str) -> None:
    body = msgspec.json.encode(billing_event(93))
    streams = {"duplicate_window_s": WINDOW_S}
    async with running_gateway(broker, tmp_path, sim_url, streams=streams) as gw:
        status, doc = await gw.post(body, signed(body))
        assert (status, doc["status"]) == (200, "accepted")
        stored_at = time.monotonic()
        with anyio.fail_after(30):  # a guard against a hang, not a speed target
            while not await gw.erp_postings("in_000093"):
                await anyio.sleep(0.05)
        await gw.wait_idle()
        assert (await actor_stats(gw.admin_url, "erp-journal"))["posted"] == 1
    # A new process on the same data directory. The broker forgets the message id after the
    # window: the replay is stored again, and only the ledger can recognise it.
    await anyio.sleep(max(0.0, stored_at + 2 * WINDOW_S - time.monotonic()))
    async with running_gateway(broker, tmp_path, sim_url, streams=streams) as gw:
        status, doc = await gw.post(body, signed(body))
        assert (status, doc["status"]) == (200, "accepted")  # not deduplicated by the stream
        assert await gw.billing_messages() == 2
        await gw.wait_idle()
        stats = await actor_stats(gw.admin_url, "erp-journal")
        assert stats["posted"] == 0 and stats["skipped_known"] + stats["stale"] == 1, stats
        assert len(await gw.erp_postings("in_000093")) == 1
