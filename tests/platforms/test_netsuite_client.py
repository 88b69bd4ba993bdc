"""The netsuite journal client against the NetSuite-speaking simulator, over real HTTP:
TBA signatures, exactly the configured concurrency in flight, throttling adapted to and never
a rejection, created vs replayed, business rejections, SuiteQL paging."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import date

import pytest

from actors.infra.http import HttpClient
from actors.platforms import PlatformGuard
from actors.platforms.auth import AuthSettings, load_auth
from actors.platforms.erp import NetSuiteJournalClient, NetSuiteQuery
from actors.resilience import BreakerConfig, CircuitBreaker, LimiterConfig, RateLimiter
from contracts import JournalLine, PostJournalEntry, Retryable, from_decimal
from sim import SimConfig
from sim._netsuite_tba import DEMO_TBA
from tests.sim.conftest import HOST, Http, free_port, running_sim

pytestmark = pytest.mark.integration

TBA = AuthSettings(type="oauth1_tba", account=DEMO_TBA.account,
                   consumer_key=DEMO_TBA.consumer_key, consumer_secret=DEMO_TBA.consumer_secret,
                   token_id=DEMO_TBA.token_id, token_secret=DEMO_TBA.token_secret)


def entries(n: int, seed: int = 3) -> list[PostJournalEntry]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cur = ["USD", "JPY", "KWD", "BHD", "EUR"][i % 5]
        tax = rng.randint(0, 5_000)
        net = rng.randint(1, 10**7)
        lines = [JournalLine("1100", debit=net + tax), JournalLine("4000", credit=net)]
        if tax:
            lines.append(JournalLine("2200", credit=tax, memo="tax"))
        out.append(PostJournalEntry(idempotency_key=f"key-{i:08d}", external_id=f"in_{i:06d}",
                                    posting_date=date(2026, 11, 30), currency=cur,
                                    memo=f"Invoice in_{i:06d}", lines=lines))
    return out


@pytest.fixture
async def netsuite_sim() -> AsyncIterator[tuple[Http, str]]:
    cfg = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/nowhere",
                    seed=5, erp_dialect="netsuite", netsuite_concurrency_limit=4,
                    netsuite_latency_ms=20)
    async with running_sim(cfg) as http:
        yield http, http.base


async def _postings(http: Http) -> list[dict[str, object]]:
    reply = await http.get("/erp/v1/journal-entries?limit=1000")
    assert reply.status == 200
    items: list[dict[str, object]] = reply.body["items"]
    return items


def _client(erp: HttpClient, *, concurrency: int, auth: AuthSettings = TBA,
            limiter: RateLimiter | None = None) -> NetSuiteJournalClient:
    guard = PlatformGuard("ERP", erp, open_code="erp.breaker_open",
                          breaker=CircuitBreaker("erp.journal", BreakerConfig()),
                          limiter=limiter)
    return NetSuiteJournalClient(guard, auth=load_auth(auth, environ={}),
                                 concurrency=concurrency, subsidiary="1")


async def test_posts_each_entry_once_with_the_limit_in_flight(
        netsuite_sim: tuple[Http, str]) -> None:
    http, base = netsuite_sim
    batch = entries(40)
    async with HttpClient(base, platform="erp", max_connections=8) as erp:
        client = _client(erp, concurrency=4)
        results = await client.post_journal_entries(batch)
        assert [r.status for r in results] == ["created"] * 40
        assert [r.idempotency_key for r in results] == [e.idempotency_key for e in batch]
        stats = client.statistics()
        assert stats["max_in_flight"] == 4 and stats["throttled"] == 0
        # A redelivery: looked up first, answered replayed, nothing posted again.
        again = await client.post_journal_entries(
            batch[:10], redelivered={e.idempotency_key for e in batch[:10]})
        assert [r.status for r in again] == ["replayed"] * 10
        # SuiteQL over the journals, paged: the decimal amounts are the minor units sent.
        query = NetSuiteQuery(client.guard, auth=load_auth(TBA, environ={}), page_size=7)
        seen = await query.journal_entries()
        assert seen == {e.external_id: (e.currency, e.amount) for e in batch}
        some = await query.journal_entries([batch[3].external_id, "in_missing"])
        assert some == {batch[3].external_id: (batch[3].currency, batch[3].amount)}
    posted = await _postings(http)
    assert sorted(p["externalId"] for p in posted) == sorted(e.external_id for e in batch)
    assert {p["externalId"]: p["amount"] for p in posted} == {
        e.external_id: e.amount for e in batch}


async def test_over_the_limit_is_throttled_adapted_and_never_rejected(
        netsuite_sim: tuple[Http, str]) -> None:
    http, base = netsuite_sim
    batch = entries(30, seed=9)
    limiter = RateLimiter("erp", LimiterConfig(rate=200.0, burst=20, throttle_hold=0.05))
    async with HttpClient(base, platform="erp", max_connections=16) as erp:
        client = _client(erp, concurrency=8, limiter=limiter)  # the account allows 4
        results = await client.post_journal_entries(batch)
    assert [r.status for r in results] == ["created"] * 30
    assert client.statistics()["throttled"] > 0  # the sim did answer 429s
    posted = await _postings(http)
    assert len(posted) == 30  # each once
    gov = (await http.get("/erp/v1/governance")).body
    assert gov["limitedRequests"] > 0


async def test_without_credentials_nothing_posts_and_the_error_says_why(
        netsuite_sim: tuple[Http, str]) -> None:
    http, base = netsuite_sim
    async with HttpClient(base, platform="erp") as erp:
        client = _client(erp, concurrency=2, auth=AuthSettings())
        with pytest.raises(Retryable) as err:
            await client.post_journal_entries(entries(3))
    assert err.value.code == "erp.unauthorized"
    assert "erp.auth" in err.value.message
    assert await _postings(http) == []


async def test_business_errors_are_rejections_with_netsuite_codes(
        netsuite_sim: tuple[Http, str]) -> None:
    http, base = netsuite_sim
    first = entries(2)
    async with HttpClient(base, platform="erp") as erp:
        client = _client(erp, concurrency=2)
        await client.post_journal_entries(first)
        # the same external id with other amounts: refused, not overwritten
        import msgspec
        other = msgspec.structs.replace(first[0], idempotency_key="key-other-1", lines=[
            JournalLine("1100", debit=7), JournalLine("4000", credit=7)])
        (res,) = await client.post_journal_entries([other])
        assert res.status == "rejected" and res.error is not None
        assert res.error.code == "USER_ERROR"
        # a redelivered one found with other amounts is refused without a request
        (dup,) = await client.post_journal_entries([other], redelivered={"key-other-1"})
        assert dup.status == "rejected" and dup.error is not None
        assert dup.error.code == "DUPLICATE_EXTERNAL_ID"
    assert len(await _postings(http)) == 2


async def test_an_erp_outage_fails_the_batch_retryably(netsuite_sim: tuple[Http, str]) -> None:
    http, base = netsuite_sim
    assert (await http.put("/sim/v1/faults", json={"erp": {"outage": True}})).status == 200
    async with HttpClient(base, platform="erp") as erp:
        client = _client(erp, concurrency=3)
        with pytest.raises(Retryable) as err:
            await client.post_journal_entries(entries(5))
        assert err.value.code == "http.server_error"
        await http.delete("/sim/v1/faults")
        client.guard.breaker = None  # the breaker opened; a fresh attempt without it
        results = await client.post_journal_entries(entries(5))
    assert {r.status for r in results} == {"created"}
    assert len(await _postings(http)) == 5


def test_amounts_on_the_wire_are_exact_decimals() -> None:
    from actors.platforms.erp.netsuite import entry_record
    from contracts.platforms import netsuite as ns

    e = entries(5)[2]  # KWD
    body = ns.decimal_encoder().encode(entry_record(e, subsidiary="1"))
    import msgspec
    rec = msgspec.json.decode(body, type=ns.JournalEntryRecord)
    assert rec.currency.ref_name == "KWD" and rec.subsidiary == ns.Ref(id="1")
    assert sum(from_decimal(ln.debit, "KWD") for ln in rec.line.items if ln.debit) == e.amount


async def test_a_half_open_breaker_lets_the_batch_wait_for_its_probe(
        netsuite_sim: tuple[Http, str]) -> None:
    """Five requests at once meet a half-open breaker: one is the probe, the others wait for
    its verdict instead of failing the batch with no known retry time."""
    import time

    from actors.infra.http import PlatformUnavailable
    from actors.resilience import BreakerState

    http, base = netsuite_sim
    async with HttpClient(base, platform="erp", max_connections=8) as erp:
        client = _client(erp, concurrency=5)
        breaker = client.guard.breaker
        assert breaker is not None
        past = time.monotonic() - 600  # tripped long ago: the next call is the probe
        for _ in range(10):
            breaker.record_error(PlatformUnavailable("down", code="http.server_error"), past)
        assert breaker.state is BreakerState.OPEN
        results = await client.post_journal_entries(entries(20, seed=4))
        assert [r.status for r in results] == ["created"] * 20
        assert breaker.state is BreakerState.CLOSED
    assert len(await _postings(http)) == 20


async def test_asynchronous_requests_poll_the_job_and_know_a_replay(
        netsuite_sim: tuple[Http, str]) -> None:
    http, base = netsuite_sim
    batch = entries(12, seed=6)
    async with HttpClient(base, platform="erp", max_connections=8) as erp:
        client = _client(erp, concurrency=4)
        client.async_requests = True
        first = await client.post_journal_entries(batch)
        assert [r.status for r in first] == ["created"] * 12
        assert client.statistics()["async_jobs"] == 12
        # the same postings again: NetSuite names the earlier jobs (IDEMPOTENCY_ERROR)
        again = await client.post_journal_entries(batch)
        assert [r.status for r in again] == ["replayed"] * 12
        # another posting for a taken external id: the job fails, a business rejection
        import msgspec
        other = msgspec.structs.replace(batch[0], idempotency_key="key-async-other", lines=[
            JournalLine("1100", debit=9), JournalLine("4000", credit=9)])
        (res,) = await client.post_journal_entries([other])
        assert res.status == "rejected" and res.error is not None
        assert res.error.code == "USER_ERROR"
    assert len(await _postings(http)) == 12
