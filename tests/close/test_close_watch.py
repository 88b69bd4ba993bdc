"""The close-watch actor over a fake status reader: each pass feeds the monitor's KPI document
(``close.blocking``), a pass that cannot read keeps the last figures, and ``erpgw monitor``
shows the count per month."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

import anyio
from prometheus_client.parser import text_string_to_metric_families

from actors.close import CloseStatus, CloseWatch, close_blockers
from actors.infra.bus import BrokerUnavailable
from actors.monitor import LaneWatch, Monitor
from actors.monitor.prometheus import prometheus_text
from actors.reconcile import Break
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
