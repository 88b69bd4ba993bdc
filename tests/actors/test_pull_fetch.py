"""The pull fetch that takes a batch from the subscription's queue in one go
(``actors.infra.pull``), against a real nats-server: every message once and in order, the
waits and timeouts of nats-py's own ``fetch``, statuses left by an earlier request dropped, a
connection drain that still completes, and no task per message.

The nats-py internals it reads are checked here (``supported``): a nats-py upgrade that moves
them fails this file instead of silently falling back to the slower fetch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from actors.infra import pull
from actors.infra.bus import NatsBus, PullConsumer, delivery_of
from gateway.broker import EmbeddedBroker

STREAM, SUBJECT = "PULLTEST", "pulltest.in"


@pytest.fixture
async def nc(broker: EmbeddedBroker) -> AsyncIterator[Client]:
    conn = await nats.connect(broker.url, max_reconnect_attempts=0, **broker.nats_options())
    js = conn.jetstream()
    await js.add_stream(name=STREAM, subjects=[SUBJECT], storage=api.StorageType.FILE)
    await js.add_consumer(STREAM, api.ConsumerConfig(
        durable_name="c", ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=1000))
    try:
        yield conn
    finally:
        if not conn.is_closed:
            await conn.close()


async def _psub(nc: Client) -> Any:
    return await nc.jetstream().pull_subscribe_bind(durable="c", stream=STREAM)


async def _store(nc: Client, n: int, start: int = 0) -> None:
    js = nc.jetstream()
    for i in range(start, start + n):
        await js.publish(SUBJECT, str(i).encode())


async def test_the_pinned_nats_py_has_what_the_fetch_reads(nc: Client) -> None:
    assert pull.supported(await _psub(nc))

    class _Missing:
        _sub = None

    assert not pull.supported(_Missing())  # then the bus uses nats-py's own fetch


async def test_stored_messages_come_in_batches_each_once_in_order(nc: Client) -> None:
    psub = await _psub(nc)
    assert pull.supported(psub)
    await _store(nc, 250)
    got: list[int] = []
    sizes = []
    while len(got) < 250:
        msgs = await pull.fetch(psub, 100, 2.0)
        sizes.append(len(msgs))
        got += [int(m.data) for m in msgs]
        for m in msgs:
            await m.ack()
    assert sizes == [100, 100, 50]
    assert got == list(range(250))
    with pytest.raises(nats.errors.TimeoutError):
        await pull.fetch(psub, 100, 0.3)
    info = await nc.jetstream().consumer_info(STREAM, "c")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_fetch_waits_for_a_first_message_then_returns_what_is_there(
        nc: Client) -> None:
    psub = await _psub(nc)

    async def later() -> None:
        await asyncio.sleep(0.2)
        await _store(nc, 3)

    task = asyncio.ensure_future(later())
    with anyio.fail_after(5):  # a bound, not a speed: nats-py's fetch returns early too
        msgs = await pull.fetch(psub, 100, 3.0)
    await task
    assert 1 <= len(msgs) <= 3
    rest = [] if len(msgs) == 3 else await pull.fetch(psub, 100, 1.0)
    assert [int(m.data) for m in [*msgs, *rest]] == [0, 1, 2]


async def test_a_status_left_by_an_earlier_request_is_dropped(nc: Client) -> None:
    psub = await _psub(nc)
    await _store(nc, 2)
    stale = Msg(nc, subject=psub._deliver, data=b"",
                headers={api.Header.STATUS: api.StatusCode.REQUEST_TIMEOUT})
    psub._sub._pending_queue.put_nowait(stale)
    msgs = await pull.fetch(psub, 10, 2.0)
    assert [int(m.data) for m in msgs] == [0, 1]
    assert psub._sub._pending_queue.empty()


async def test_an_error_status_is_an_api_error(nc: Client) -> None:
    psub = await _psub(nc)
    bad = Msg(nc, subject=psub._deliver, data=b"",
              headers={api.Header.STATUS: "400", api.Header.DESCRIPTION: "Bad Request"})

    async def answer() -> None:
        await asyncio.sleep(0.05)
        psub._sub._pending_queue.put_nowait(bad)

    task = asyncio.ensure_future(answer())
    with pytest.raises(nats.js.errors.APIError):
        await pull.fetch(psub, 10, 2.0)
    await task


async def test_a_batch_already_delivered_takes_no_task_per_message(nc: Client) -> None:
    """nats-py's fetch makes two tasks per message (``next_msg``, ``wait_for``); this one
    waits once per arrival of messages."""
    psub = await _psub(nc)
    await _store(nc, 200)
    loop = asyncio.get_running_loop()
    made = [0]
    default = loop.get_task_factory()

    def counting(lp: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Future[Any]:
        made[0] += 1
        if default is not None:
            return default(lp, coro, **kw)
        return asyncio.Task(coro, loop=lp, **kw)

    loop.set_task_factory(counting)
    try:
        got = 0
        while got < 200:
            msgs = await pull.fetch(psub, 100, 2.0)
            got += len(msgs)
            for m in msgs:
                await m.ack()
    finally:
        loop.set_task_factory(default)
    assert got == 200
    assert made[0] < 40, f"{made[0]} tasks for 200 messages"


async def test_the_connection_still_drains_after_fetches(nc: Client) -> None:
    psub = await _psub(nc)
    await _store(nc, 30)
    msgs = await pull.fetch(psub, 10, 2.0)
    assert len(msgs) == 10
    for m in msgs:
        await m.ack()
    with anyio.fail_after(10):  # a drain joins the subscription's queue
        await nc.drain()
    assert nc.is_closed


async def test_the_bus_consumer_fetches_through_it(broker: EmbeddedBroker, nc: Client) -> None:
    psub = await _psub(nc)
    consumer = PullConsumer(NatsBus.__new__(NatsBus), psub, STREAM, "c")
    assert consumer._drained
    await _store(nc, 5)
    batch = await consumer.fetch(10, 2.0)
    assert [int(d.data) for d in batch] == [0, 1, 2, 3, 4]
    assert await consumer.fetch(10, 0.2) == []
    await nc.close()
    with pytest.raises(Exception) as raised:
        await consumer.fetch(10, 0.5)
    assert getattr(raised.value, "code", "") == "broker.unavailable"


async def test_a_delivery_reads_its_count_and_sequence_as_nats_py_does(nc: Client) -> None:
    psub = await _psub(nc)
    await _store(nc, 3)
    first = await pull.fetch(psub, 10, 2.0)
    await first[1].nak()  # delivered again: count 2
    for m in (first[0], first[2]):
        await m.ack()
    again = await pull.fetch(psub, 10, 2.0)
    for m in [*first, *again]:
        md = m.metadata
        assert delivery_of(m) == (md.num_delivered, md.sequence.stream)
    assert delivery_of(again[0]) == (2, 2)
    # The ack subject's newer form: domain and account hash first, a token more at the end.
    newer = Msg(nc, subject="x", reply="$JS.ACK.hub.ACCHASH.S.c.3.41.40.1700000000000000000.0.r")
    assert delivery_of(newer) == (3, 41) == (newer.metadata.num_delivered,
                                             newer.metadata.sequence.stream)
    with pytest.raises(nats.errors.Error):  # not a JetStream message: as nats-py says
        delivery_of(Msg(nc, subject="x", reply="_INBOX.abc"))
