"""Revenue event accuracy on ``erpgw.mon.kpi``: lines uploaded exactly once ÷ lines that should
have been, from the revenue poster's counters (totals that survive its restarts), checked
against ``sla.revenue_event_accuracy`` as a lower bound, and exported to Prometheus."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.monitor import SlaConfig, prometheus_text
from gateway.config import ConfigError, load_config

from .test_monitoring_core import IDLE, Clock, monitor, tree

REVENUE = "revenue-billing"


def with_revenue(uploaded: int = 0, in_doubt: int = 0, rejected: int = 0, dead: int = 0,
                 restarts: int = 0) -> dict[str, Any]:
    t = tree(posted=1)
    t["children"].append({
        "name": REVENUE, "state": "running", "restarts": restarts, "last_error": None,
        "actor": {"uploaded_lines": uploaded, "in_doubt_lines": in_doubt,
                  "rejected_lines": rejected, "dead_lettered_lines": dead}})
    return t


def kpis(mon: Any, clock: Clock, t: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    clock.t += 1
    mon.observe(t, IDLE, (0, 0))
    doc, events = mon.kpis()
    return doc, events


@pytest.mark.parametrize(
    ("uploaded", "in_doubt", "rejected", "dead", "accuracy"),
    [
        (0, 0, 0, 0, None),  # nothing due yet: no data, not 1.0
        (100, 0, 0, 0, 1.0),
        (97, 2, 1, 0, 0.97),  # in doubt and rejected lines count against it
        (90, 0, 0, 10, 0.9),  # so do lines of invoices dead-lettered after retries
        (1, 1, 1, 0, 0.333333),
    ],
)
def test_accuracy_from_the_revenue_posters_line_counters(
        uploaded: int, in_doubt: int, rejected: int, dead: int, accuracy: float | None) -> None:
    clock = Clock()
    mon = monitor(clock, revenue_child=REVENUE)
    doc, _ = kpis(mon, clock, with_revenue(uploaded, in_doubt, rejected, dead))
    assert doc["revenue_event_accuracy"] == accuracy
    assert doc["revenue_lines"] == {"uploaded": uploaded, "in_doubt": in_doubt,
                                    "rejected": rejected, "dead_lettered": dead}


def test_without_a_revenue_poster_the_kpi_is_null() -> None:
    clock = Clock()
    doc, _ = kpis(monitor(clock), clock, with_revenue(10, 1))
    assert doc["revenue_event_accuracy"] is None and doc["revenue_lines"] is None


def test_totals_survive_a_restart_of_the_poster() -> None:
    clock = Clock()
    mon = monitor(clock, revenue_child=REVENUE)
    kpis(mon, clock, with_revenue(uploaded=50, in_doubt=1))
    doc, _ = kpis(mon, clock, with_revenue(uploaded=49, restarts=1))  # a fresh instance
    assert doc["revenue_lines"]["uploaded"] == 99 and doc["revenue_lines"]["in_doubt"] == 1
    assert doc["revenue_event_accuracy"] == 0.99


def test_sla_is_a_lower_bound_breached_below_the_target_and_ended_above() -> None:
    clock = Clock()
    mon = monitor(clock, SlaConfig(revenue_event_accuracy=0.99), revenue_child=REVENUE)
    doc, events = kpis(mon, clock, with_revenue(uploaded=100))
    check = doc["sla"]["checks"]["revenue_event_accuracy"]
    assert (check["target"], check["value"], check["breached"]) == (0.99, 1.0, False)
    assert events == []
    doc, events = kpis(mon, clock, with_revenue(uploaded=100, in_doubt=5))
    assert doc["sla"]["checks"]["revenue_event_accuracy"]["breached"] is True
    assert doc["sla"]["breached"] == ["revenue_event_accuracy"]
    assert [(e["event"], e["sla"], e["value"]) for e in events] == [
        ("started", "revenue_event_accuracy", 0.952381)]
    doc, events = kpis(mon, clock, with_revenue(uploaded=1000, in_doubt=5))
    assert doc["sla"]["ok"] is True
    assert [e["event"] for e in events] == ["ended"]


def test_no_target_by_default_and_the_setting_is_validated(tmp_path: Any) -> None:
    assert "revenue_event_accuracy" not in SlaConfig().targets()
    assert SlaConfig(revenue_event_accuracy=0.999).targets()["revenue_event_accuracy"] == 0.999
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="revenue_event_accuracy"):
            SlaConfig(revenue_event_accuracy=bad)
    path = tmp_path / "gw.toml"
    path.write_text("[sla]\nrevenue_event_accuracy = 0.995\n")
    assert load_config(path).sla.revenue_event_accuracy == 0.995
    path.write_text("[sla]\nrevenue_event_accuracy = 2\n")
    with pytest.raises((ConfigError, msgspec.ValidationError)):
        load_config(path)


def test_prometheus_exports_the_accuracy() -> None:
    clock = Clock()
    mon = monitor(clock, revenue_child=REVENUE)
    doc, _ = kpis(mon, clock, with_revenue(uploaded=3, rejected=1))
    text = prometheus_text(mon.last_metrics, doc)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = families["erpgw_revenue_event_accuracy"].samples
    assert sample.value == 0.75
