"""The shared ``uploads`` bucket (``SharedUploads``): a process finds the claims an earlier
incarnation of it left, whatever the line ids look like, and only its own; giving them back is
conditional, so a line another process took meanwhile stays that process's. The first test
runs against the in-memory bucket, the second against a real nats-server."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.infra.bus import NatsBus
from actors.infra.state import SharedUploads, bucket_name, provision_state
from contracts import Subjects
from gateway.broker import EmbeddedBroker

from ..actors.memory_kv import MemoryBucket

SUBJECTS = Subjects()
line_ids = st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=8, unique=True)


@settings(max_examples=30)
@given(mine=line_ids, theirs=line_ids)
def test_own_claims_are_exactly_this_owners_pending_lines(
        mine: list[str], theirs: list[str]) -> None:
    asyncio.run(own_claims_case(mine, theirs))


async def own_claims_case(mine: list[str], theirs: list[str]) -> None:
    bucket = MemoryBucket()
    a, b = SharedUploads(bucket, "gw-a"), SharedUploads(bucket, "gw-b")  # type: ignore[arg-type]
    theirs = [i for i in theirs if i not in mine]
    await a.read("revenue", mine)
    assert await a.claim("revenue", mine, "a1", time.time()) == set()
    await b.read("revenue", theirs)
    assert await b.claim("revenue", theirs, "b1", time.time()) == set()
    await a.read("usage.revenue", mine)  # another platform's keys are not this one's
    assert await a.claim("usage.revenue", mine, "a2", time.time()) == set()
    done = mine[: len(mine) // 2]  # an outcome recorded: no longer a claim
    await a.mark("revenue", done, "uploaded", "a1", time.time())
    restarted = SharedUploads(bucket, "gw-a")  # type: ignore[arg-type]
    claims = await restarted.own_claims("revenue")
    assert set(claims) == set(mine) - set(done)
    assert {c.attempt for c in claims.values()} <= {"a1"}


async def test_amounts_and_line_counts_survive_every_outcome_and_older_values_decode() -> None:
    bucket = MemoryBucket()
    a = SharedUploads(bucket, "gw-a")  # type: ignore[arg-type]
    ids = ["in_1:a", "in_1:b", "cn_1:c"]
    await a.read("revenue", ids)
    assert await a.claim("revenue", ids, "a1", 1.0, amounts={"in_1:a": 100, "in_1:b": -5,
                                                             "cn_1:c": -7},
                         counts={"in_1:a": 2, "in_1:b": 2}) == set()
    await a.mark("revenue", ids[:1], "uploaded", "a1", 2.0)  # carried from the claim
    restarted = SharedUploads(bucket, "gw-a")  # type: ignore[arg-type]
    await restarted.mark("revenue", ids[1:2], "in_doubt", "a2", 3.0)  # carried from a read
    await restarted.mark("revenue", ids[2:], "uploaded", "a2", 3.0, amounts={"cn_1:c": -8})
    got = await SharedUploads(bucket, "gw-b").read("revenue", ids)  # type: ignore[arg-type]
    assert {i: (line.status, line.amount, line.lines) for i, line in got.items()} == {
        "in_1:a": ("uploaded", 100, 2), "in_1:b": ("in_doubt", -5, 2),
        "cn_1:c": ("uploaded", -8, None)}
    old = msgspec.msgpack.encode({"status": "uploaded", "owner": "gw-0", "attempt": "x",
                                  "at": 0.5})
    bucket.data[SharedUploads._key("revenue", "in_0:a")] = (old, 99)
    (line,) = (await a.read("revenue", ["in_0:a"])).values()
    assert (line.status, line.owner, line.amount, line.lines) == ("uploaded", "gw-0", None, None)


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_claims_left_behind_are_given_back_conditionally_on_a_real_bucket(
        broker: EmbeddedBroker) -> None:
    admin = await NatsBus.connect(broker.url, auth=broker.auth("admin"), name="test-admin")
    bus = await NatsBus.connect(broker.url, auth=broker.auth("revenue"), name="test-revenue")
    try:
        await provision_state(admin, SUBJECTS)
        from actors.infra.kv import KvBucket

        bucket = KvBucket.on(bus, bucket_name(SUBJECTS, "uploads"))
        a, b = SharedUploads(bucket, "gw-a"), SharedUploads(bucket, "gw-b")
        ids = ["in_1:il_1", "in 2/é:il.2", "in_3:il_3"]
        frozen = SharedUploads(bucket, "gw-c")
        await frozen.read("revenue", ids)  # read free, then stopped before claiming
        await a.read("revenue", ids)
        assert await a.claim("revenue", ids, "a1", time.time()) == set()
        # A dies between its shared claim and its ledger claim; B waits on the lines.
        await b.read("revenue", ids)
        restarted = SharedUploads(bucket, "gw-a")
        claims = await restarted.own_claims("revenue")
        assert set(claims) == set(ids) and {c.owner for c in claims.values()} == {"gw-a"}
        await restarted.mark("revenue", ids[:2], "released", "a-start", time.time())
        # B read the claims before they were given back: its claim at that revision loses.
        assert await b.claim("revenue", ids[:1], "b1", time.time()) == {ids[0]}
        await b.read("revenue", ids[:2])
        assert await b.claim("revenue", ids[:2], "b1", time.time()) == set()
        # The process that read the lines free before anyone claimed them wakes up: it loses.
        assert await frozen.claim("revenue", ids, "c1", time.time()) == set(ids)
        # Giving back again (a second start) leaves B's claims alone.
        await restarted.mark("revenue", ids[:2], "released", "a-again", time.time())
        now = await SharedUploads(bucket, "gw-x").read("revenue", ids)
        assert [(now[i].status, now[i].owner) for i in ids] == [
            ("pending", "gw-b"), ("pending", "gw-b"), ("pending", "gw-a")]
        assert set(await restarted.own_claims("revenue")) == {ids[2]}
    finally:
        await bus.close()
        await admin.close()
