"""S28: a warning before unresolved dead letters reach the DLQ stream's ``max_age``.

The pure count (``expiring``), then the watch against a real broker whose DLQ stream keeps
letters 4 s: of two letters, the one resolved (a purge marker) is never counted; the other is
warned of (one warning log line with ``code=dlq.expiring``, ``dlq.expiring`` 1 in the metrics
and KPI documents, ``erpgw_dlq_expiring 1`` in /metrics) once it is older than half of
``max_age`` and before the broker drops it, which it then does."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from actors.dlq_expiry import DlqExpiryWatch, Expiring, expiring
from actors.infra import NatsBus, OutMsg
from actors.infra.bus import StreamSettings
from actors.monitor import LaneWatch, Monitor
from actors.monitor.prometheus import prometheus_text
from contracts import Subjects
from gateway.broker import EmbeddedBroker
from tests.integration.conftest import LiveGateway, actor_stats

DAY = 86_400.0


def test_only_unresolved_letters_past_the_fraction_count() -> None:
    letters = [(1, 0.0), (2, 5 * DAY), (3, 9 * DAY), (4, 13 * DAY)]
    now = 14 * DAY
    # Older than 0.5 x 14 days = 7 days: letters 1 (14 d) and 2 (9 d); 1 is resolved.
    assert expiring(letters, [1], now=now, max_age_s=14 * DAY, fraction=0.5) == Expiring(
        1, 2, 9 * DAY)
    assert expiring(letters, [], now=now, max_age_s=14 * DAY, fraction=0.5) == Expiring(
        2, 1, 14 * DAY)
    assert expiring(letters, [1, 2], now=now, max_age_s=14 * DAY, fraction=0.5).count == 0
    # Exactly at the horizon counts; just before it does not.
    assert expiring([(7, 0.0)], [], now=7 * DAY, max_age_s=14 * DAY, fraction=0.5).count == 1
    assert expiring([(7, 1.0)], [], now=7 * DAY, max_age_s=14 * DAY, fraction=0.5).count == 0
    # A stream kept for good (max_age 0) never expires a letter.
    assert expiring(letters, [], now=now, max_age_s=0.0, fraction=0.5).count == 0


@pytest.mark.integration
async def test_a_letter_is_warned_of_before_the_broker_drops_it(
        broker: EmbeddedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    subjects = Subjects(prefix="expiry")
    max_age = 4.0
    bus = await NatsBus.connect(broker.url, auth=broker.auth())
    try:
        await bus.ensure_stream(subjects.dlq_stream, [subjects.dlq_wildcard],
                                StreamSettings(max_age_s=max_age, duplicate_window_s=1.0))
        for n in (1, 2):
            await bus.publish(OutMsg(subjects.dlq("billing", "contract.invalid"),
                                     b'{"letter": %d}' % n, msg_id=f"letter-{n}"))
        first = (await bus.scan(subjects.dlq_stream, subject=subjects.dlq_letters))[0]
        await bus.publish(OutMsg(subjects.dlq_resolved("purged", first.seq), b"{}",
                                 msg_id="resolved-1"))
        mon = Monitor(lanes=[LaneWatch("billing", intake=None, consumers=())],
                      posting_child="erp-journal")
        watch = DlqExpiryWatch("dlq-expiry", bus=bus, subjects=subjects, max_age_s=max_age,
                               fraction=0.5, interval_s=3600.0,
                               report=lambda found: mon.note_dlq_expiry(found.count))

        caplog.set_level(logging.WARNING, logger="erpgw.dlq")
        found = await watch.check()
        assert found is not None and found.count == 0  # both letters younger than 2 s
        assert not [r for r in caplog.records if "unresolved dead letter" in r.getMessage()]
        with anyio.fail_after(30):  # a guard against a hang, not a speed target
            while True:
                found = await watch.check()
                assert found is not None
                if found.count:
                    break
                await anyio.sleep(0.1)
        # Warned of: the unresolved letter only, while the broker still holds it.
        assert found.count == 1 and found.oldest_seq == first.seq + 1
        assert found.oldest_age_s is not None and found.oldest_age_s < max_age
        assert await bus.stream_messages(subjects.dlq_stream, subjects.dlq_letters) >= 1
        warnings = [r for r in caplog.records if "unresolved dead letter" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert getattr(warnings[0], "code", None) == "dlq.expiring"
        assert f"seq {first.seq + 1}" in warnings[0].getMessage()

        metrics = mon.observe({"children": []}, {}, None)
        assert metrics["dlq"]["expiring"] == 1
        kpi, _ = mon.kpis()
        assert kpi["dlq"]["expiring"] == 1
        assert "erpgw_dlq_expiring 1.0" in prometheus_text(metrics, kpi).splitlines()
        assert watch.statistics()["expiring"] == 1

        # Then the broker drops both letters at max_age, as the warning said it would.
        with anyio.fail_after(30):
            while await bus.stream_messages(subjects.dlq_stream, subjects.dlq_letters):
                await anyio.sleep(0.2)
        found = await watch.check()
        assert found is not None and found.count == 0
    finally:
        await bus.close()


@pytest.mark.integration
async def test_the_gateway_runs_the_watch_on_its_reconciler_identity(
        live_gateway: LiveGateway) -> None:
    """Wired in: the gateway's ``dlq-expiry`` actor reads the DLQ stream on the connection of
    the ``reconciler`` identity (the broker's permissions allow it), at start."""
    with anyio.fail_after(30):  # a guard against a hang, not a speed target
        while not (stats := await actor_stats(live_gateway.admin_url, "dlq-expiry"))["passes"]:
            await anyio.sleep(0.1)
    assert (stats["failures"], stats["expiring"], stats["last_error"]) == (0, 0, None)
