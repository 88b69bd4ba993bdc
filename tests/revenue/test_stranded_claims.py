"""Claims a broker outage kept a process from giving back are given back once the broker
answers again, not only when that process restarts: another process waiting for those lines
(``revenue.claimed_elsewhere``) would otherwise wait out its deliveries and dead-letter the
invoice (seen with ``erpgw demo --cluster 3 --gateways 2 --faults lose-quorum,...``: "37 shared
claim(s) ... not given back", then two invoices ``retry.exhausted`` at the other process)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from actors.infra.bus import BrokerUnavailable
from actors.infra.kv import KvEntry
from actors.infra.state import SharedUploads

from ..actors.memory_kv import MemoryBucket

LINES = ["in_1:a", "in_1:b", "in_2:a"]


class _FlakyBucket(MemoryBucket):
    """The in-memory bucket, unanswered while ``down``."""

    down = False

    async def get_many(self, keys: Iterable[str]) -> dict[str, KvEntry]:
        if self.down:
            raise BrokerUnavailable("no quorum")
        return await super().get_many(keys)

    async def put_many(self, writes: Iterable[tuple[str, bytes, int]]
                       ) -> dict[str, int | Exception]:
        if self.down:
            return {k: BrokerUnavailable("no quorum") for k, _, _ in writes}
        return await super().put_many(writes)


async def test_claims_not_given_back_in_an_outage_are_given_back_when_it_ends() -> None:
    bucket = _FlakyBucket()
    a = SharedUploads(bucket, "gw-a")  # type: ignore[arg-type]
    b = SharedUploads(bucket, "gw-b")  # type: ignore[arg-type]
    await a.read("revenue", LINES)
    assert await a.claim("revenue", LINES, "a1", time.time()) == set()
    bucket.down = True  # the attempt stops before anything is sent; the give-back fails too
    await a.give_back("revenue", LINES, "a1", BrokerUnavailable("no quorum"))
    assert await a.give_back_stranded() == 0  # still down: kept for later, nothing raised
    bucket.down = False
    seen = await b.read("revenue", LINES)
    assert {line.status for line in seen.values()} == {"pending"}  # b would have to wait
    # Meanwhile a newer attempt of this process took one line again: not given back.
    await a.read("revenue", ["in_2:a"])
    await a.mark("revenue", ["in_2:a"], "pending", "a2", time.time())

    assert await a.give_back_stranded() == 2
    after = await b.read("revenue", LINES)
    assert after["in_1:a"].status == after["in_1:b"].status == "released"
    assert (after["in_2:a"].status, after["in_2:a"].attempt) == ("pending", "a2")
    assert await b.claim("revenue", ["in_1:a", "in_1:b"], "b1", time.time()) == set()
    assert await a.give_back_stranded() == 0  # done: nothing left to give back
