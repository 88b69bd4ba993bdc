"""``--duration``, the targeting options, the RSS verdict and the kill-soak schedule: the pure
parts, without starting anything."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from bench import BenchOptions, build_report, plan_legs, render_human
from bench._gateway import progress_bar
from bench._report import rss_verdict
from bench._rss import rss_change
from bench._soak import SoakOptions, kill_schedule
from bench._target import check_targets, topology

TARGETED: dict[str, Any] = {"nats_url": "nats://127.0.0.1:4222", "gateway_url": "http://127.0.0.1:8080",
                             "sim_url": "http://127.0.0.1:8090"}


def test_duration_sends_rate_times_seconds_in_one_leg() -> None:
    (leg,) = plan_legs(BenchOptions(rate=250.0, duration=12.0))
    assert (leg.name, leg.rate, leg.events) == ("250/s", 250.0, 3000)
    (leg,) = plan_legs(BenchOptions(rate=0.4, duration=1.0))
    assert leg.events == 1  # never an empty leg


@pytest.mark.parametrize(("opts", "names"), [
    (BenchOptions(rate=100.0, duration=5.0, invoices=10), ("--duration", "--invoices")),
    (BenchOptions(max=True, duration=5.0), ("--duration", "--rate")),
    (BenchOptions(duration=5.0), ("--duration", "--rate")),
    (BenchOptions(rate=100.0, duration=0.0), ("--duration",)),
    (BenchOptions(rate=1e6, duration=10.0), ("--rate", "--duration")),
])
def test_conflicting_duration_is_refused_naming_the_options(opts: BenchOptions,
                                                            names: tuple[str, ...]) -> None:
    with pytest.raises(ValueError) as err:
        plan_legs(opts)
    assert all(n in str(err.value) for n in names), str(err.value)


def test_the_cli_refuses_duration_with_invoices_without_a_traceback() -> None:
    r = subprocess.run([sys.executable, "-m", "gateway", "bench", "peak-billing", "--rate",
                        "100", "--duration", "5", "--invoices", "10"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert "--duration and --invoices conflict" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(("extra", "names"), [
    ({"gateway_url": "http://127.0.0.1:1"}, ("--gateway", "--sim")),
    ({"gateway_url": "http://x", "sim_url": "http://y"}, ("--gateway", "--nats-url")),
    ({"sim_url": "http://127.0.0.1:1"}, ("--sim", "--gateway")),
    ({"gateway_pid": 42}, ("--gateway-pid",)),
    ({"nats_url": "nats://h:1", "fsync_given": True}, ("--fsync",)),
    ({**TARGETED, "faults": ("kill-gateway",)}, ("kill-gateway", "--gateway")),
    ({"nats_url": "nats://h:1", "faults": ("broker-restart",)}, ("broker-restart",
                                                                 "--nats-url")),
    ({**TARGETED, "rss_check": True}, ("--rss-check", "--gateway")),
])
def test_targets_that_cannot_work_are_refused(extra: dict[str, Any],
                                              names: tuple[str, ...]) -> None:
    with pytest.raises(ValueError) as err:
        check_targets(BenchOptions(**extra))
    assert all(n in str(err.value) for n in names), str(err.value)


def test_topology_says_what_is_started_and_what_is_targeted() -> None:
    started = topology(BenchOptions())
    assert all(v.startswith("started") for v in started.values())
    broker_only = topology(BenchOptions(nats_url="nats://h:1"))
    assert broker_only["broker"].startswith("targeted: nats://h:1")
    assert broker_only["gateway"].startswith("started")
    full = topology(BenchOptions(**TARGETED, faults=("erp-outage",)))
    check_targets(BenchOptions(**TARGETED, faults=("erp-outage",)))  # a sim fault is fine
    assert all(v.startswith("targeted") for v in full.values())
    assert "CPU and RSS not measured" in full["gateway"]


def _rss(short: float, long_: float) -> dict[str, Any]:
    change = rss_change(short, long_)
    return {"runs": [{"label": "run", "invoices": 100, "peak_rss_mb": short,
                      "rss_mb_after": short, "wall_s": 1.0, "throughput_eps": 100.0,
                      "lost": 0, "duplicates": 0, "drained": True},
                     {"label": "10x run", "invoices": 1000, "peak_rss_mb": long_,
                      "rss_mb_after": long_, "wall_s": 10.0, "throughput_eps": 100.0,
                      "lost": 0, "duplicates": 1, "drained": True}],
            "change": change, "bound": 0.10,
            "met": None if change is None else abs(change) <= 0.10,
            "lost": 0, "duplicates": 1, "drained": True}


def test_rss_verdict_within_and_beyond_ten_percent() -> None:
    assert rss_change(50.0, 54.0) == 0.08 and rss_change(None, 54.0) is None
    met = rss_verdict(_rss(50.0, 54.0))
    assert met["met"] is True and met["figure"] == 0.08 and "+8.0 %" in met["note"]
    failed = rss_verdict(_rss(50.0, 56.0))
    assert failed["met"] is False and failed["figure"] == 0.12
    shrank = rss_verdict(_rss(50.0, 44.0))
    assert shrank["met"] is False  # -12 %: outside +-10 % either way
    absent = rss_verdict(None)
    assert absent["met"] is None and "--rss-check" in absent["note"]


def test_the_rss_runs_count_towards_correctness_and_print_their_lines() -> None:
    report = build_report([], {"rss_check": _rss(50.0, 51.0), "duration_s": 30.0, "topology": {
        "broker": "started: x", "simulator": "started: y", "gateway": "started: z"}})
    assert report["audit"]["duplicates"] == 1 and report["ok"] is False
    text = render_human(report)
    assert "RSS check" in text and "10x run" in text and "broker started: x" in text
    assert "--duration 30 s" in text
    (v,) = [v for v in report["verdicts"] if v["id"] == "rss_stable"]
    assert v["met"] is True


def test_kill_schedule_is_seeded_sorted_and_inside_the_run() -> None:
    times = kill_schedule(30, 600.0, 7)
    assert len(times) == 30 and times == sorted(times)
    assert all(0.0 <= t <= 600.0 for t in times)
    assert times == kill_schedule(30, 600.0, 7) and times != kill_schedule(30, 600.0, 8)


@pytest.mark.parametrize("opts", [SoakOptions(kills=0), SoakOptions(duration=0.0),
                                  SoakOptions(rate=-1.0), SoakOptions(rate=0.1, duration=1.0)])
def test_bad_soak_options_are_refused(opts: SoakOptions) -> None:
    with pytest.raises(ValueError):
        opts.check()


def test_progress_bar() -> None:
    assert progress_bar(0.5, width=10) == "[#####.....]  50%"
    assert progress_bar(2.0, width=4) == "[####] 100%"
    assert progress_bar(-1.0, width=4) == "[....]   0%"
