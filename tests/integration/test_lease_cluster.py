"""The lease on a real 3-node cluster (an R3 ``leases`` bucket): two holders on two
connections, the bucket's leader node SIGKILLed while one holds it. Sampled every 20 ms, the
two never both count themselves the holder; after the new leader is elected one of them holds
it again and renews it."""

from __future__ import annotations

import anyio
import nats
import pytest

from actors.infra import NatsBus
from actors.infra.bus import server_list
from actors.infra.kv import KvBucket, bucket_stream
from actors.infra.lease import KvLease, leases_bucket
from actors.infra.state import provision_state
from contracts import Subjects
from gateway.broker import EmbeddedCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TTL = 3.0
SUBJECTS = Subjects()


async def test_two_holders_never_overlap_through_the_loss_of_the_buckets_leader(
        cluster: EmbeddedCluster) -> None:
    admin = await NatsBus.connect(cluster.url, auth=cluster.auth("admin"))
    try:
        await provision_state(admin, SUBJECTS, replicas=3, lease_ttl_s=TTL)
    finally:
        await admin.close()
    stream = bucket_stream(leases_bucket(SUBJECTS))
    buses = [await NatsBus.connect(cluster.url, auth=cluster.auth("reconciler"))
             for _ in range(2)]
    leases = [KvLease(KvBucket.on(bus, leases_bucket(SUBJECTS)), "reconciler", holder=me,
                      ttl_s=TTL) for bus, me in zip(buses, ("gw-a", "gw-b"), strict=True)]
    overlaps = 0
    samples = 0
    try:
        async with anyio.create_task_group() as tg:
            for lease in leases:
                await tg.start(lease.keep)

            async def sample() -> None:
                nonlocal overlaps, samples
                while True:
                    samples += 1
                    overlaps += all(lease.held() for lease in leases)
                    await anyio.sleep(0.02)

            tg.start_soon(sample)
            with anyio.fail_after(60):  # a guard against a hang, not a speed target
                while not any(lease.held() for lease in leases):
                    await anyio.sleep(0.05)
            nc = await nats.connect(server_list(cluster.url), **cluster.nats_options("admin"))
            try:
                info = await nc.jetstream().stream_info(stream)
            finally:
                await nc.close()
            assert info.config.num_replicas == 3 and info.cluster is not None
            cluster.node(str(info.cluster.leader)).kill()
            renewed = sum(lease.renewals + lease.acquired for lease in leases)
            with anyio.fail_after(90):
                # Held again, and renewed three times since the kill (on the new leader).
                while not (any(lease.held() for lease in leases) and sum(
                        lease.renewals + lease.acquired for lease in leases) >= renewed + 3):
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    finally:
        for bus in buses:
            await bus.close()
    assert samples > 100 and overlaps == 0
