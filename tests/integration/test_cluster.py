"""A real 3-node nats-server cluster on loopback (gateway.broker.EmbeddedCluster): seed lists,
R3 streams, per-consumer ``max_ack_pending``, and a publish loop through the loss of the billing
stream's leader that stores every message exactly once (order across a retried batch is not
promised: a message sent again lands after those of its batch that were stored)."""

from __future__ import annotations

import random

import anyio
import nats
import pytest

from actors.infra import NatsBus
from actors.infra.bus import BrokerRejected, BrokerUnavailable, OutMsg, StoredMsg, server_list
from contracts import Subjects
from gateway.app import CONSUMERS, provision
from gateway.broker import EmbeddedCluster
from gateway.config import load_config

pytestmark = pytest.mark.integration


async def _leader(c: EmbeddedCluster, stream: str) -> str:
    nc = await nats.connect(server_list(c.url), **c.nats_options("admin"))
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None
        return str(info.cluster.leader or "")
    finally:
        await nc.close()


async def _scan_when_ready(bus: NatsBus, stream: str) -> list[StoredMsg]:
    """Every message of ``stream``, read once the cluster answers again after the kill (it may
    say "JetStream temporarily unavailable" while the killed node's roles move)."""
    with anyio.fail_after(60):  # a guard against a hang, not a speed target
        while True:
            try:
                return await bus.scan(stream, limit=10_000)
            except BrokerUnavailable:
                await anyio.sleep(0.2)


async def test_a_comma_separated_seed_list_reaches_the_cluster_even_with_a_seed_down(
        cluster: EmbeddedCluster) -> None:
    cfg = load_config(None, env={}, overrides={
        "nats": {"url": cluster.url}, "streams": {"replicas": 3},
        "consumers": {"max_ack_pending_by": {CONSUMERS[0][1]: 1024}}})
    assert cfg.nats.url == cluster.url and cfg.nats.url.count("nats://") == 3
    admin = await NatsBus.connect(cfg.nats.url, auth=cluster.auth("admin"))
    try:
        subjects = await provision(admin, cfg)
    finally:
        await admin.close()

    nc = await nats.connect(server_list(cluster.url), **cluster.nats_options("admin"))
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.stream("billing"))
        assert info.config.num_replicas == 3
        assert info.cluster is not None and info.cluster.leader
        assert len(info.cluster.replicas or []) == 2  # the two followers
        lane, durable, _ = CONSUMERS[0]
        assert (await js.consumer_info(subjects.stream(lane), durable)
                ).config.max_ack_pending == 1024
        other_lane, other, _ = CONSUMERS[1]
        assert (await js.consumer_info(subjects.stream(other_lane), other)
                ).config.max_ack_pending == cfg.consumers.max_ack_pending
    finally:
        await nc.close()

    # The first seed dead: the client goes on to the next one (a list works as well).
    cluster.nodes[0].kill()
    bus = await NatsBus.connect([n.url for n in cluster.nodes], auth=cluster.auth("admin"),
                                wait_for_server=10)
    try:
        assert bus.connected
        # The dead node may have led the stream: JetStream answers once the others elected a
        # new leader (the bound guards a hang, it is no speed target).
        with anyio.fail_after(60):
            while True:
                try:
                    assert await bus.stream_messages(subjects.stream("billing")) == 0
                    break
                except BrokerUnavailable:
                    await anyio.sleep(0.2)
    finally:
        await bus.close()


async def test_a_seed_that_is_not_a_server_url_is_refused_by_name() -> None:
    with pytest.raises(BrokerRejected) as err:
        await NatsBus.connect("nats://127.0.0.1:1,http://u:secret@x:1", wait_for_server=1)
    assert err.value.code == "broker.url" and "secret" not in str(err.value)
    assert "http://u:***@x:1" in str(err.value)


async def test_killing_the_billing_leader_mid_publish_loses_and_doubles_nothing(
        cluster: EmbeddedCluster) -> None:
    cfg = load_config(None, env={}, overrides={"nats": {"url": cluster.url},
                                               "streams": {"replicas": 3}})
    admin = await NatsBus.connect(cluster.url, auth=cluster.auth("admin"))
    try:
        subjects = await provision(admin, cfg)
    finally:
        await admin.close()
    stream = subjects.stream("billing")
    subject = Subjects().invoice_issued
    rng = random.Random(14)
    batches = [[OutMsg(subject, f"inv-{b}-{i}".encode(), msg_id=f"id-{b}-{i}")
                for i in range(rng.randint(1, 40))] for b in range(120)]
    expected = {m.msg_id for batch in batches for m in batch}

    old_leader = await _leader(cluster, stream)
    # Connected to a node that survives: the publishes right after the kill meet the election
    # itself, not a reconnect that outlasts it.
    follower = next(n for n in cluster.nodes if n.server_name != old_leader)
    bus = await NatsBus.connect(follower.url, auth=cluster.auth("admin"), election_retry_s=15)
    killed = anyio.Event()
    half = anyio.Event()
    caller_retries = 0

    async def publish_loop() -> None:
        nonlocal caller_retries
        for n, batch in enumerate(batches):
            if n == len(batches) // 3:
                half.set()
            while True:  # what every caller does: the same messages again, same ids
                results = await bus.publish_atomic(batch)
                if not any(isinstance(r, Exception) for r in results):
                    break
                caller_retries += 1
                await anyio.sleep(0.2)
            if n == len(batches) // 3 + 1:
                await killed.wait()  # the rest of the loop runs after the kill

    async def kill_leader() -> None:
        await half.wait()
        cluster.node(old_leader).kill()
        killed.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_loop)
            tg.start_soon(kill_leader)
        new_leader = await _leader(cluster, stream)
        stored = await _scan_when_ready(bus, stream)
    finally:
        await bus.close()
    ids = [m.headers.get("Nats-Msg-Id") for m in stored]
    assert new_leader and new_leader != old_leader
    # The publishes met the election and were sent again, with the same ids: by the bus while
    # the stream had no leader, or by the caller when the connection itself dropped first
    # (which of the two depends on where the kill lands).
    assert bus.election_retries + caller_retries > 0
    assert len(ids) == len(set(ids)), "a message was stored twice"
    assert set(ids) == expected, f"lost: {sorted(expected - set(ids))[:5]}"
    assert len(stored) == len(expected)
    print(f"election retries {bus.election_retries}, caller retries {caller_retries}, "
          f"atomic fallbacks {bus.atomic_fallbacks}")
