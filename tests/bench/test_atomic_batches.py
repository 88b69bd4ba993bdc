"""What nats-server does with atomic batch publishes, which baseline (b2) and any router that
commits its outputs as one batch rely on: all or nothing, at most 1,000 messages, and a
``Nats-Msg-Id`` the stream has seen (or one repeated inside the batch) refuses the whole batch
instead of being deduplicated, so a redelivered batch must fall back to per-message publishes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js import api

from bench._raw import DUPLICATE_IN_BATCH, AtomicRefused, atomic_publish
from gateway.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(broker: EmbeddedBroker) -> AsyncIterator[Client]:
    client = await nats.connect(broker.url, **broker.nats_options())
    js = client.jetstream()
    await js.add_stream(api.StreamConfig(name="T", subjects=["t.>"], allow_atomic=True,
                                         storage=api.StorageType.FILE, duplicate_window=600))
    try:
        yield client
    finally:
        await client.close()


async def stored(nc: Client) -> int:
    return int((await nc.jetstream().stream_info("T")).state.messages)


async def test_a_batch_is_stored_whole_with_one_ack(nc: Client) -> None:
    ack = await atomic_publish(nc, "t.a", [(b"x", "m1"), (b"y", "m2"), (b"z", "m3")], "b-1")
    assert ack["count"] == 3 and ack["seq"] == 3
    assert await stored(nc) == 3


@pytest.mark.parametrize("ids", [
    ["m1", "m2"],          # every id already stored (a redelivered batch)
    ["m1", "new-1"],       # one id already stored
    ["new-2", "new-2"],    # the same id twice in one batch
    ["m2"],                # a one-message batch with a stored id
])
async def test_a_known_msg_id_refuses_the_whole_batch(nc: Client, ids: list[str]) -> None:
    await atomic_publish(nc, "t.a", [(b"x", "m1"), (b"y", "m2")], "b-seed")
    with pytest.raises(AtomicRefused) as err:
        await atomic_publish(nc, "t.a", [(b"d", i) for i in ids], f"b-{'-'.join(ids)}")
    assert err.value.err_code == DUPLICATE_IN_BATCH
    assert await stored(nc) == 2  # nothing of the refused batch was stored


async def test_the_same_ids_published_one_by_one_are_deduplicated(nc: Client) -> None:
    await atomic_publish(nc, "t.a", [(b"x", "m1"), (b"y", "m2")], "b-seed")
    ack = await nc.jetstream().publish("t.a", b"x", headers={"Nats-Msg-Id": "m1"})
    assert ack.duplicate
    assert await stored(nc) == 2


async def test_batches_are_limited_to_a_thousand(nc: Client) -> None:
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        await atomic_publish(nc, "t.a", [(b"x", f"n{i}") for i in range(1001)], "b-big")
