"""The close-watch actor over a fake status reader: each pass feeds the monitor's KPI document
(``close.blocking``), a pass that cannot read keeps the last figures, and ``erpgw monitor``
shows the count per month."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import anyio
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from actors.close import CloseStatus, CloseWatch, close_blockers, open_letters
from actors.infra.bus import BrokerUnavailable, StoredMsg
from actors.monitor import LaneWatch, Monitor
from actors.monitor.prometheus import prometheus_text
from actors.reconcile import Break
from contracts import (
    BusinessKey,
    DeadLetter,
    Envelope,
    JournalLine,
    MsgpackCodec,
    PostJournalEntry,
    Subjects,
    make_envelope,
)
from gateway.commands.monitor import MonitorView


def blocked(period: str, n: int) -> CloseStatus:
    return close_blockers("default", period, letters=[], documents=[], revenue=[],
                          breaks=[Break("missing", f"in_{i}", "x") for i in range(n)])


def a_monitor() -> Monitor:
    return Monitor(lanes=[LaneWatch("billing", intake=None, consumers=())],
                   posting_child="erp-journal", instance="host:1")


async def test_each_pass_publishes_close_blocking_in_the_kpi_document() -> None:
    mon = a_monitor()
    assert mon.kpis()[0]["close"] is None  # before the first pass
    counts = {"2026-11": 2, "2026-12": 1}
    fail = False

    async def status(period: str) -> CloseStatus:
        if fail:
            raise BrokerUnavailable("no broker")
        return blocked(period, counts[period])

    seen: list[Mapping[str, Any]] = []

    def report(doc: Mapping[str, Any]) -> None:
        seen.append(doc)
        mon.note_close(doc)

    watch = CloseWatch("close-watch", status=status, report=report, interval_s=60.0)
    await watch._pass(date(2026, 12, 7))
    close = mon.kpis()[0]["close"]
    assert close["blocking"] == 3 and close["entity"] == "default"
    assert close["periods"] == {"2026-11": {"blocking": 2, "by_kind": {"unposted": 2}},
                                "2026-12": {"blocking": 1, "by_kind": {"unposted": 1}}}
    text = prometheus_text(mon.last_metrics or {}, mon.kpis()[0])
    (family,) = [f for f in text_string_to_metric_families(text)
                 if f.name == "erpgw_close_blocking"]
    assert {s.labels["period"]: s.value for s in family.samples} == {"2026-11": 2.0,
                                                                     "2026-12": 1.0}
    fail = True
    await watch._pass(date(2026, 12, 7))
    assert mon.kpis()[0]["close"]["blocking"] == 3  # kept
    assert watch.statistics()["failures"] == 1 and "broker" in str(watch.last_error)
    assert len(seen) == 1

    view = MonitorView("erpgw")
    view.feed("erpgw.mon.kpi", {"instance": "host:1", **mon.kpis()[0]}, now=1.0)
    from rich.table import Table

    table = Table()
    table.add_column("")
    table.add_column("")
    view._close_row(table)
    cells = [list(c.cells) for c in table.columns]
    assert cells == [["close blocking"], ["[red]3[/] (2026-11 2, 2026-12 1)"]]


async def test_passes_repeat_each_interval_until_a_stop() -> None:
    calls: list[str] = []

    async def status(period: str) -> CloseStatus:
        calls.append(period)
        return blocked(period, 0)

    watch = CloseWatch("close-watch", status=status, report=lambda doc: None, interval_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with anyio.fail_after(10):  # a guard against a hang
            while watch.passes < 2:
                await anyio.sleep(0.01)
        watch.request_stop()
    assert watch.blocking == 0 and len(calls) >= 4


class FakeDlq:
    """A DLQ stream as ``NatsBus.scan`` reads it: letters and resolution markers."""

    def __init__(self, subjects: Subjects) -> None:
        self.subjects = subjects
        self.msgs: list[StoredMsg] = []

    def add(self, subject: str, data: bytes) -> int:
        seq = len(self.msgs) + 1
        self.msgs.append(StoredMsg(seq, subject, data, {}, 0.0))
        return seq

    async def scan(self, stream: str, *, subject: str | None = None) -> list[StoredMsg]:
        assert stream == self.subjects.dlq_stream
        want = "resolved" if subject == self.subjects.dlq_resolutions else "letters"
        return [m for m in self.msgs if ("resolved" in m.subject) == (want == "resolved")]


async def test_open_letters_leave_out_the_resolved_and_date_what_they_can() -> None:
    subjects = Subjects()
    dlq = FakeDlq(subjects)

    def add_letter(key: str | None, data: bytes, code: str = "erp.period_closed") -> int:
        dl = DeadLetter(id=f"dl-{key}", failed_at=datetime(2026, 12, 7, tzinfo=UTC),
                        lane="billing", subject="s", stream_seq=1, code=code, reason="r",
                        attempts=1, business_key=key, correlation_id=None, data=data)
        return dlq.add(subjects.dlq("billing", code), msgspec.json.encode(dl))

    entry = PostJournalEntry(idempotency_key="key-0001", external_id="in_1",
                             posting_date=date(2026, 11, 30), currency="USD", memo="m", lines=[
                                 JournalLine(account="1200", debit=5, credit=0, memo=""),
                                 JournalLine(account="4000", debit=0, credit=5, memo="")])
    env = make_envelope(entry, source="gateway",
                        key=BusinessKey(source="billing", object_id="in_1", version=1))
    dated = add_letter("billing:in_1:v1", MsgpackCodec(Envelope).encode(env))
    replayed = add_letter("billing:in_2:v1", b"\xc1")
    add_letter(None, b"\xc1poison", code="contract.invalid")
    dlq.add(f"{subjects.prefix}.dlq.resolved.replayed.{replayed}",
            msgspec.json.encode({"seq": replayed, "action": "replayed",
                                 "at": "2026-12-07T00:00:00Z", "by": "ops"}))
    bus: Any = dlq
    letters, named = await open_letters(bus, subjects)
    assert named == {"in_1", "in_2"}  # resolved ones too: they explain a reconciliation
    assert [(lt.seq, lt.document, lt.period, lt.failed_period) for lt in letters] == [
        (dated, "in_1", "2026-11", "2026-12"), (3, "", None, "2026-12")]
