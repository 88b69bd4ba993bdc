"""Batched conditional writes to the shared buckets, against a real nats-server (broker
identities on: the writers connect as the ERP poster's ``erp`` role).

A batch of keys (``ATOMIC_FROM`` or more) is one atomic batch with a per-key expected revision:
all of it is stored or none of it, while a smaller one is written key by key; a refused batch
is then written key by key, which stores what still applies and answers ``KvConflict`` for
what moved. Two processes claiming overlapping aggregates from the same read never both win
one; a bucket whose stream takes no atomic batches is still guarded.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from actors.infra.bus import ATOMIC_FROM
from actors.infra.kv import KvBucket, KvConflict, bucket_config
from actors.infra.ledger import VersionMark
from actors.infra.state import ReadVersion, SharedVersions, bucket_name
from contracts import Subjects
from gateway.broker import EmbeddedBroker

from .conftest import role_buses

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SUBJECTS = Subjects()
VERSIONS = bucket_name(SUBJECTS, "versions")


@pytest.fixture
async def buses(broker: EmbeddedBroker) -> AsyncIterator[Callable[[str], Any]]:
    """Provisions the shared buckets (admin), then hands out connections of a role."""
    async with role_buses(broker, SUBJECTS) as connect:
        yield connect


async def test_a_batch_of_keys_is_one_commit_and_its_revisions_are_the_stored_ones(
        buses: Any) -> None:
    bucket = KvBucket.on(await buses("erp"), VERSIONS)
    keys = [f"billing.in_{n}" for n in range(ATOMIC_FROM)]
    first = await bucket.put_many((k, f"v1-{k}".encode(), 0) for k in keys)
    assert bucket.batches == 1 and bucket.batches_refused == 0
    for k in keys:
        got = await bucket.get(k)
        assert (got.value, got.revision) == (f"v1-{k}".encode(), first[k])
    second = await bucket.put_many((k, b"v2", rev) for k, rev in first.items()
                                   if isinstance(rev, int))
    assert bucket.batches == 2
    assert {k: (await bucket.get(k)).revision for k in keys} == second
    assert all(isinstance(r, int) and r > first[k]  # type: ignore[operator]
               for k, r in second.items())
    # A smaller batch is faster key by key: no atomic batch, the same per-key outcomes.
    small = await bucket.put_many([(keys[0], b"v3", second[keys[0]]), ("billing.new", b"v1", 0),
                                   (keys[1], b"v3", first[keys[1]])])  # type: ignore[list-item]
    assert bucket.batches == 2
    assert isinstance(small[keys[0]], int) and isinstance(small["billing.new"], int)
    assert isinstance(small[keys[1]], KvConflict)  # its revision moved: refused, as before
    assert (await bucket.get(keys[1])).value == b"v2"


async def test_a_refused_batch_stores_nothing_and_the_key_by_key_retry_names_the_loser(
        buses: Any) -> None:
    bucket = KvBucket.on(await buses("erp"), VERSIONS)
    pad = [f"p{n}" for n in range(ATOMIC_FROM)]  # large enough for an atomic batch
    revs = await bucket.put_many([(k, b"1", 0) for k in ["a", "b", "c", *pad]])
    other = KvBucket.on(await buses("erp"), VERSIONS)
    moved = await other.put_if("b", b"other", int(revs["b"]))  # type: ignore[arg-type]
    stale = [("a", b"2", revs["a"]), ("b", b"2", revs["b"]), ("new", b"2", 0),
             *((k, b"2", revs[k]) for k in pad)]
    with pytest.raises(KvConflict):
        await bucket.put_all(stale)  # type: ignore[arg-type]
    # All or nothing: not even the keys whose condition held were written.
    assert (await bucket.get("a")).revision == revs["a"]
    assert (await bucket.get("new")).value is None
    assert (await bucket.get("b")).revision == moved
    out = await bucket.put_many(stale)  # type: ignore[arg-type]
    assert isinstance(out["b"], KvConflict)
    assert isinstance(out["a"], int) and isinstance(out["new"], int)
    assert (await bucket.get("b")).value == b"other"
    assert (await bucket.get("a")).value == b"2" and (await bucket.get("new")).value == b"2"
    assert bucket.batches_refused == 2  # put_all, then put_many's own try


def _mark(agg: tuple[str, str], who: str) -> VersionMark:
    return VersionMark(agg[0], agg[1], 1, who.encode(), 0.0)


async def _claim(guard: SharedVersions, who: str, claims: list[tuple[VersionMark, ReadVersion]],
                 outcome: dict[str, Any]) -> None:
    outcome[who] = await guard.claim(claims)


async def test_two_processes_claiming_from_the_same_read_never_both_win_an_aggregate(
        buses: Any) -> None:
    rng = random.Random(15)
    a = SharedVersions(KvBucket.on(await buses("erp"), VERSIONS))
    b = SharedVersions(KvBucket.on(await buses("erp"), VERSIONS))
    for rnd in range(6):
        pool = [("billing", f"in_{rnd}_{n}") for n in range(40)]
        if rnd % 2:  # half the rounds: the aggregates exist already (updates, not creates)
            seen0 = await a.read(pool)
            lost0, _ = await a.claim([(_mark(agg, "seed"), seen0[agg]) for agg in pool])
            assert not lost0
        mine = {"a": rng.sample(pool, 25), "b": rng.sample(pool, 25)}
        seen: dict[str, dict[tuple[str, str], ReadVersion]] = {
            who: await guard.read(mine[who]) for who, guard in (("a", a), ("b", b))}
        outcome: dict[str, tuple[set[tuple[str, str]], dict[tuple[str, str], int]]] = {}
        async with anyio.create_task_group() as tg:
            for who, guard in (("a", a), ("b", b)):
                tg.start_soon(_claim, guard, who, [(_mark(agg, who), seen[who][agg])
                                                   for agg in mine[who]], outcome)
        both = set(mine["a"]) & set(mine["b"])
        final = await a.read(pool)
        for agg in set(mine["a"]) | set(mine["b"]):
            winners = [who for who in ("a", "b") if agg in outcome[who][1]]
            assert len(winners) == 1, (agg, winners)
            (winner,) = winners
            if agg not in both:
                assert agg not in outcome[winner][0]
            else:
                assert agg in outcome["b" if winner == "a" else "a"][0]  # the other lost it
            row = final[agg].row
            assert row is not None and row.claimed_entry == winner.encode()
            assert final[agg].revision == outcome[winner][1][agg]


async def test_a_bucket_without_atomic_batches_is_written_key_by_key_and_still_guarded(
        buses: Any) -> None:
    admin = await buses("admin")
    await admin.ensure_kv(bucket_config("plain", replicas=1))  # no allow_atomic
    bucket = KvBucket.on(admin, "plain")
    keys = [f"k{n}" for n in range(ATOMIC_FROM)]
    revs = await bucket.put_many([(k, b"1", 0) for k in ["x", "y", *keys]])
    assert all(isinstance(r, int) for r in revs.values())
    assert bucket.batches == 0 and bucket.batches_refused == 1  # then key by key only
    out = await bucket.put_many([("x", b"2", revs["x"]), ("y", b"2", 0),  # type: ignore[list-item]
                                 *((k, b"2", revs[k]) for k in keys)])
    assert isinstance(out["x"], int) and isinstance(out["y"], KvConflict)
    assert bucket.batches_refused == 1
    assert (await bucket.get("y")).value == b"1"


async def test_a_batch_of_keys_is_read_in_one_round_trip_at_the_revisions_writes_go_against(
        buses: Any) -> None:
    bucket = KvBucket.on(await buses("erp"), VERSIONS)  # the poster's role may batch reads
    revs = await bucket.put_many((f"billing.in_r{n}", f"v{n}".encode(), 0) for n in range(6))
    assert all(isinstance(r, int) for r in revs.values())
    moved = await bucket.put_if("billing.in_r1", b"v1b", revs["billing.in_r1"])  # type: ignore[arg-type]
    await bucket.delete_if("billing.in_r2", revs["billing.in_r2"])  # type: ignore[arg-type]
    await bucket.forget("billing.in_r3")
    keys = [f"billing.in_r{n}" for n in range(8)]  # r6, r7: never written
    before = bucket.read_batches
    got = await bucket.get_many(keys)
    assert bucket.read_batches == before + 1  # one batched direct get for the 8 keys
    one_by_one = {k: await bucket.get(k) for k in keys}
    assert got == one_by_one
    assert (got["billing.in_r1"].value, got["billing.in_r1"].revision) == (b"v1b", moved)
    assert [got[k].value for k in keys[2:4] + keys[6:]] == [None] * 4
    # The revision read is the one a conditional write is made against: it applies, and a
    # write from the same read again loses.
    assert await bucket.put_if("billing.in_r4", b"next", got["billing.in_r4"].revision) > 0
    with pytest.raises(KvConflict):
        await bucket.put_if("billing.in_r4", b"again", got["billing.in_r4"].revision)
    assert await bucket.put_if("billing.in_r2", b"anew", got["billing.in_r2"].revision) > 0
