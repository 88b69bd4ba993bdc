"""The monitor reads the actors' statistics through typed structs (``actors/stats.py``): a
counter misspelt in the monitor is a type error. This test holds the actors' side: in a
running gateway that took an invoice, every actor the monitor reads reports every field of
its struct, with the right types, so a counter renamed in an actor fails here instead of
turning a KPI into a silent 0."""

from __future__ import annotations

import msgspec
import pytest

from actors.stats import (
    Counters,
    IngressCounters,
    PosterCounters,
    RevenueCounters,
    WorkerStats,
    absent,
)
from gateway.app import CONSUMERS, REVENUE_CONSUMER

from .conftest import LiveGateway, actor_stats, billing_event, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_every_actor_reports_what_the_monitor_reads(live_gateway: LiveGateway) -> None:
    gw = live_gateway
    body = msgspec.json.encode(billing_event(8801))
    assert (await gw.post(body, signed(body)))[0] == 200
    await gw.wait_idle()
    readers: dict[str, type[Counters]] = {durable: WorkerStats for _, durable, _ in CONSUMERS}
    readers |= {"billing-ingress": IngressCounters, "erp-journal": PosterCounters,
                REVENUE_CONSUMER: RevenueCounters}
    read: dict[str, Counters] = {}
    for name, reader in readers.items():
        stats = await actor_stats(gw.admin_url, name)
        assert absent(reader, stats) == [], name
        read[name] = msgspec.convert(stats, reader)  # the types too (no fallback to zeros)
    ingress = read["billing-ingress"]
    assert isinstance(ingress, IngressCounters) and ingress.accepted == 1
    poster = read["erp-journal"]
    assert isinstance(poster, PosterCounters) and poster.posted == 1 and poster.processed >= 1
    assert poster.latency_ms["p99"] > 0
    revenue = read[REVENUE_CONSUMER]
    assert isinstance(revenue, RevenueCounters) and revenue.uploaded_lines == 1
    # The lanes' intake counters (gateway/app.py, LaneWatch.intake): billing-ingress and
    # usage-intake report "accepted".
    assert isinstance((await actor_stats(gw.admin_url, "usage-intake"))["accepted"], int)


def test_a_renamed_counter_is_named() -> None:
    renamed = {"name": "billing-ingress", "accepted_total": 3, "duplicate": 0, "ignored": 0,
               "rejected": {}}
    assert absent(IngressCounters, renamed) == ["accepted"]
    # What the monitor falls back to (and logs once) when a counter has the wrong type.
    assert IngressCounters.of({"accepted": "three"}) == IngressCounters()
