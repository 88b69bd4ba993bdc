"""Leases for singletons in the ``leases`` bucket, against a real nats-server (with the
broker identities on: the holders connect as the ``reconciler`` role).

Two holders on two connections (two processes, as far as the broker can tell): one wins; a
holder that stops renewing loses the lease to the other once its key expired, never before; a
frozen holder, or one whose renewals fail, stops its pass and cannot renew afterwards; a clean
stop releases at once. And the singleton actors: two revenue-gl actors, and two reconcilers,
with one lease run their passes in one process only; a reconciler that stops hands over.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from actors.close import runner as close_runner
from actors.close.runner import RevenueToGl
from actors.infra import NatsBus
from actors.infra.bus import BrokerUnavailable
from actors.infra.kv import KvBucket, KvEntry
from actors.infra.lease import (
    HOLD_FRACTION,
    KvLease,
    bucket_ttl,
    leases_bucket,
    run_while_held,
)
from actors.infra.state import SharedVersions, provision_state
from actors.reconcile import runner as reconcile_runner
from actors.reconcile.matching import ReconReport
from actors.reconcile.runner import Reconciler, RunResult
from actors.router import AccountMap
from contracts import Subjects
from gateway.broker import EmbeddedBroker

from .conftest import role_buses

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TTL = 3.0
SUBJECTS = Subjects()


@pytest.fixture
async def buses(broker: EmbeddedBroker) -> AsyncIterator[Callable[[str], Any]]:
    """Provisions the buckets (admin), then hands out connections of a role."""
    async with role_buses(broker, SUBJECTS, lease_ttl_s=TTL) as connect:
        yield connect


async def holder(connect: Callable[[str], Any], me: str, name: str = "reconciler"
                 ) -> tuple[KvLease, KvBucket]:
    bucket = KvBucket.on(await connect("reconciler"), leases_bucket(SUBJECTS))
    return KvLease(bucket, name, holder=me, ttl_s=TTL, bucket_ttl_from=bucket), bucket


class FlakyStore:
    """The bucket, with writes that fail (``BrokerUnavailable``) while ``down``."""

    def __init__(self, bucket: KvBucket) -> None:
        self.bucket = bucket
        self.down = False

    async def get(self, key: str) -> KvEntry:
        return await self.bucket.get(key)

    async def put_if(self, key: str, value: bytes, revision: int) -> int:
        if self.down:
            raise BrokerUnavailable("renewal cut off")
        return await self.bucket.put_if(key, value, revision)

    async def delete_if(self, key: str, revision: int) -> None:
        await self.bucket.delete_if(key, revision)

    async def keys(self, key_prefix: str = "") -> list[str]:
        return await self.bucket.keys(key_prefix)


async def test_two_holders_one_wins_and_both_name_the_winner(buses: Any) -> None:
    a, _ = await holder(buses, "gw-a")
    b, _ = await holder(buses, "gw-b")
    won: dict[str, bool] = {}

    async def take(lease: KvLease) -> None:
        won[lease.holder] = await lease.confirm()

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, a)
        tg.start_soon(take, b)
    assert sorted(won.values()) == [False, True]
    winner = "gw-a" if won["gw-a"] else "gw-b"
    for lease in (a, b):  # a second round: the winner renews, the loser still loses
        assert await lease.confirm() is (lease.holder == winner)
        assert lease.statistics()["holder"] == winner
    assert a.held() != b.held()


async def test_a_holder_that_stops_renewing_is_taken_over_after_its_key_expires(
        buses: Any) -> None:
    a, _ = await holder(buses, "gw-a")
    b, _ = await holder(buses, "gw-b")
    assert await a.confirm()
    last_renewal = time.monotonic()
    assert await a.confirm()  # its last renewal: then it "dies" (renews no more)
    last_renewal = time.monotonic()
    async with anyio.create_task_group() as tg:
        await tg.start(b.keep)
        with anyio.fail_after(10 * TTL):  # a guard against a hang, not a speed target
            while not b.held():
                await anyio.sleep(0.05)
        took_over = time.monotonic()
        # Never before the dead holder's key could expire; the measured delay is in the docs.
        assert took_over - last_renewal >= TTL * HOLD_FRACTION
        print(f"takeover {took_over - last_renewal:.2f} s after the last renewal (TTL {TTL})")
        assert b.acquired == 1
        assert b.statistics()["holder"] == "gw-b"
        # The old holder wakes up (a freeze): its renewal is refused, it is not the holder.
        assert await a.confirm() is False
        assert a.lost == 1 and not a.held()
        assert a.statistics()["holder"] == "gw-b"
        tg.cancel_scope.cancel()


async def test_a_frozen_holder_stops_its_pass_and_the_other_takes_over(buses: Any) -> None:
    a, bucket = await holder(buses, "gw-a")
    b, _ = await holder(buses, "gw-b")
    started = anyio.Event()
    never = anyio.Event()

    async def long_pass() -> str:
        started.set()
        await never.wait()  # a pass that would outlive the lease
        return "done"

    # No keeper runs for `a`: it froze right after confirming (no renewal ever comes).
    with anyio.fail_after(10 * TTL):
        ran, result = await run_while_held(a, long_pass)
    assert started.is_set() and (ran, result) == (False, None)
    assert not a.held()
    with anyio.fail_after(10 * TTL):
        while not await b.confirm():
            await anyio.sleep(0.1)
    assert await a.confirm() is False  # awake again: the lease is the other's
    assert (await bucket.get(b.key)).value is not None


async def test_a_holder_whose_renewals_fail_stops_its_pass(buses: Any) -> None:
    bucket = KvBucket.on(await buses("reconciler"), leases_bucket(SUBJECTS))
    store = FlakyStore(bucket)
    a = KvLease(store, "reconciler", holder="gw-a", ttl_s=TTL)
    passes: list[str] = []
    never = anyio.Event()

    async def long_pass() -> None:
        passes.append("started")
        store.down = True  # the broker becomes unreachable for this process mid-pass
        await never.wait()

    async with anyio.create_task_group() as tg:
        await tg.start(a.keep)
        with anyio.fail_after(10 * TTL):
            ran, _ = await run_while_held(a, long_pass)
        assert passes == ["started"] and ran is False
        assert a.failures >= 1 and not a.held()
        # While its renewals fail it never runs a pass.
        assert await run_while_held(a, long_pass) == (False, None)
        assert passes == ["started"]
        tg.cancel_scope.cancel()


async def test_a_clean_stop_releases_the_lease_at_once(buses: Any) -> None:
    a, bucket = await holder(buses, "gw-a")
    b, _ = await holder(buses, "gw-b")
    async with anyio.create_task_group() as tg:
        await tg.start(a.keep)
        with anyio.fail_after(10 * TTL):
            while not a.held():
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert (await bucket.get(a.key)).value is None  # deleted, not left to expire
    assert await b.confirm()


async def test_two_revenue_gl_actors_run_their_passes_in_one_process(
        buses: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []

    async def close_run(revenue: Any, versions: Any, bus: Any, subjects: Any, **kw: Any
                        ) -> list[Any]:
        runs.append(who[id(bus)])
        return []

    monkeypatch.setattr(close_runner, "close_run", close_run)
    who: dict[int, str] = {}
    actors = []
    for me in ("gw-a", "gw-b"):
        bus = await buses("close")
        who[id(bus)] = me
        bucket = KvBucket.on(bus, leases_bucket(SUBJECTS))
        actors.append(RevenueToGl(
            f"revenue-gl-{me}", revenue=None,  # type: ignore[arg-type]
            versions=SharedVersions(KvBucket.on(bus, "unused")), bus=bus, subjects=SUBJECTS,
            accounts=AccountMap(), entity="default", interval_s=0.2,
            lease=KvLease(bucket, "revenue-gl", holder=me, ttl_s=TTL, bucket_ttl_from=bucket)))
    async with anyio.create_task_group() as tg:
        for actor in actors:
            await tg.start(actor.run)
        with anyio.fail_after(10 * TTL):
            while len(runs) < 10:
                await anyio.sleep(0.05)
        for actor in actors:
            actor.request_stop()
    assert len(set(runs)) == 1, runs  # one process ran every pass
    ran, standby = (actors if runs[0] == "gw-a" else actors[::-1])
    assert ran.runs >= 10 and standby.runs == 0 and standby.skipped >= 1
    stats = standby.statistics()["lease"]
    assert isinstance(stats, dict) and stats["holder"] == runs[0] and stats["held"] is False


async def test_two_reconcilers_run_their_passes_in_one_process_and_hand_over(
        buses: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []
    empty = ReconReport(checked=0, matched=0, breaks=[], actions=[], totals={}, by_kind={})

    async def run_once(bus: Any, subjects: Any, billing: Any, erp: Any, **kw: Any
                       ) -> RunResult:
        runs.append(who[id(bus)])
        return RunResult(None, time.time(), 0.0, empty, [], [])

    monkeypatch.setattr(reconcile_runner, "run_once", run_once)
    who: dict[int, str] = {}
    actors: list[Reconciler] = []
    for me in ("gw-a", "gw-b"):
        bus = await buses("reconciler")
        who[id(bus)] = me
        bucket = KvBucket.on(bus, leases_bucket(SUBJECTS))
        actors.append(Reconciler(
            f"reconciler-{me}", bus=bus, subjects=SUBJECTS, billing=None,  # type: ignore[arg-type]
            erp=None,  # type: ignore[arg-type]
            interval_s=0.2, grace_s=0.0, repair=False,
            lease=KvLease(bucket, "reconciler", holder=me, ttl_s=TTL, bucket_ttl_from=bucket)))
    async with anyio.create_task_group() as tg:
        for actor in actors:
            await tg.start(actor.run)
        with anyio.fail_after(10 * TTL):
            while len(runs) < 5:
                await anyio.sleep(0.05)
        first = runs[0]
        assert set(runs) == {first}
        holder_actor, standby = actors if first == "gw-a" else actors[::-1]
        holder_actor.request_stop()  # a clean stop: the lease is released, the other runs on
        with anyio.fail_after(10 * TTL):
            while runs[-1] == first:
                await anyio.sleep(0.05)
        standby.request_stop()
    handed = runs.index(runs[-1])
    assert set(runs[:handed]) == {first} and set(runs[handed:]) == {runs[-1]}
    assert standby.runs == len(runs) - handed and standby.skipped >= 1
    stats = standby.statistics()["lease"]
    assert isinstance(stats, dict) and stats["acquired"] == 1


async def test_provisioning_with_another_ttl_sets_it_and_leases_follow_the_bucket(
        broker: EmbeddedBroker, buses: Any) -> None:
    admin = await NatsBus.connect(broker.url, auth=broker.auth("admin"), name="test-admin-2")
    try:
        await provision_state(admin, SUBJECTS, lease_ttl_s=5.0)
    finally:
        await admin.close()
    a, bucket = await holder(buses, "gw-a")  # configured with TTL 3 s
    assert await bucket_ttl(bucket) == 5.0
    async with anyio.create_task_group() as tg:
        await tg.start(a.keep)
        assert a.ttl_s == 5.0  # the bucket's max_age is the TTL in force
        tg.cancel_scope.cancel()
