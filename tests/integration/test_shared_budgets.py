"""Platform budgets shared by the processes of a deployment, against a real nats-server (the
broker identities on: each "process" connects as the ``limits`` role).

Two rate-limiter actors (two connections, two membership keys) on one account each take half
of its budget, and the survivor takes all of it again once the other stops; a 429 seen by one
holds the other's budget too; one process alone keeps the configured budget exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from actors.infra.kv import KvBucket
from actors.infra.lease import Members, leases_bucket
from actors.limits import LimiterHub, RateLimiterActor, SharedBudgets
from actors.resilience import LimiterConfig
from contracts import Subjects
from gateway.broker import EmbeddedBroker

from .conftest import role_buses

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TTL = 3.0
SUBJECTS = Subjects()
ACCOUNT = LimiterConfig(rate=40.0, burst=20, concurrency=8)


@pytest.fixture
async def connect(broker: EmbeddedBroker) -> AsyncIterator[Callable[[str], Any]]:
    async with role_buses(broker, SUBJECTS, lease_ttl_s=TTL) as open_bus:
        yield open_bus


async def process(connect: Callable[[str], Any], me: str) -> RateLimiterActor:
    """One gateway process's rate limiter, with its link to the others."""
    bus = await connect("limits")
    hub = LimiterHub({"erp": ACCOUNT})
    bucket = KvBucket.on(bus, leases_bucket(SUBJECTS))
    members = Members(bucket, holder=me, ttl_s=TTL, bucket_ttl_from=bucket)
    return RateLimiterActor(f"rate-limiter-{me}", hub, interval=0.05,
                            shared=SharedBudgets(hub, bus, members, prefix=SUBJECTS.prefix))


def burst_granted(actor: RateLimiterActor) -> int:
    """Permits granted at once by a full bucket (long after now: it has filled up), releasing
    each at once so the concurrency cap is not what stops it."""
    erp = actor.hub.account("erp")
    later = time.monotonic() + 1000.0
    granted = 0
    while erp.acquire(1, later) <= 0:
        erp.release(1)
        granted += 1
    return granted


async def wait_members(actor: RateLimiterActor, n: int) -> None:
    with anyio.fail_after(10 * TTL):  # a guard against a hang, not a speed target
        while actor.hub.account("erp").members != n:
            await anyio.sleep(0.05)


async def test_two_processes_each_take_half_and_the_survivor_takes_it_all(
        connect: Any) -> None:
    a = await process(connect, "gw-a")
    b = await process(connect, "gw-b")
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)
        for actor in (a, b):
            await wait_members(actor, 2)
        for actor in (a, b):
            stats = actor.hub.account("erp").statistics()
            assert (stats["configured_rate"], stats["burst"], stats["concurrency"]) == (20.0, 10, 4)
            assert burst_granted(actor) == 10  # half of the account's burst of 20
        b.request_stop()  # a clean stop removes its membership key
        await wait_members(a, 1)
        stats = a.hub.account("erp").statistics()
        assert (stats["configured_rate"], stats["burst"], stats["concurrency"]) == (40.0, 20, 8)
        assert burst_granted(a) == 20
        a.request_stop()


async def test_a_429_seen_by_one_process_holds_the_other_too(connect: Any) -> None:
    a = await process(connect, "gw-a")
    b = await process(connect, "gw-b")
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)
        erp_a, erp_b = a.hub.account("erp"), b.hub.account("erp")
        now = time.monotonic()
        assert erp_b.hold_until == -math.inf
        erp_a.on_throttled(30.0, now)  # the platform answered a 429, Retry-After: 30
        erp_a.on_throttled(10.0, now)  # an echo of the same overload: not told again
        with anyio.fail_after(10 * TTL):
            while erp_b.statistics()["remote_throttles"] == 0:
                await anyio.sleep(0.02)
        now_b = time.monotonic()
        assert erp_b.hold_until >= now + 30.0  # held from when it heard, for the 30 s
        assert erp_b.acquire(1, now_b + 29.0) > 0  # nothing granted during the hold
        stats_b = erp_b.statistics()
        assert stats_b["throttles"] == 1 and stats_b["decreases"] == 1
        assert erp_a.statistics()["remote_throttles"] == 0  # its own broadcast is not echoed
        shared_a = a.statistics()["shared"]
        assert isinstance(shared_a, dict) and shared_a["throttles_sent"] == 1
        a.request_stop()
        b.request_stop()


async def test_one_process_alone_keeps_the_configured_budget(connect: Any) -> None:
    a = await process(connect, "gw-a")
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        shared = a.shared
        assert shared is not None and shared.members.count == 1
        erp = a.hub.account("erp")
        assert erp.members == 1
        stats = erp.statistics()
        assert (stats["configured_rate"], stats["burst"], stats["concurrency"]) == (40.0, 20, 8)
        assert burst_granted(a) == 20
        a.request_stop()
