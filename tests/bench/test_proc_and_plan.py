"""Reading CPU and memory of a process from /proc, and choosing the legs of a run."""

from __future__ import annotations

import os

import pytest

from bench import BenchOptions, plan_legs
from bench._proc import cpu_seconds, parse_stat_cpu, peak_rss_mb


def test_stat_line_with_spaces_and_parentheses_in_the_name() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30
    line = "4242 (python -m (gw)) " + " ".join(fields)
    assert parse_stat_cpu(line, ticks=100) == 3.0


def test_own_process_is_readable_and_a_missing_one_is_none() -> None:
    assert (cpu_seconds(os.getpid()) or 0) > 0
    assert (peak_rss_mb(os.getpid()) or 0) > 1
    assert cpu_seconds(None) is None and peak_rss_mb(None) is None
    assert cpu_seconds(2**22 + 12345) is None


def test_profile_legs() -> None:
    legs = plan_legs(BenchOptions())
    assert [(leg.name, leg.rate) for leg in legs] == [
        ("max", None), ("100/s", 100.0), ("1000/s", 1000.0), ("5000/s", 5000.0)]
    assert [leg.events for leg in legs] == [2000, 200, 2000, 2000]  # the light leg is short
    assert [leg.events for leg in plan_legs(BenchOptions(profile="month-end"))] == [
        10_000, 200, 10_000, 10_000]
    assert [leg.events for leg in plan_legs(BenchOptions(invoices=50))] == [50] * 4
    one = plan_legs(BenchOptions(rate=100.0))  # asked for alone, the rate gets every invoice
    assert [(leg.name, leg.events) for leg in one] == [("100/s", 2000)]


def test_rate_or_max_make_a_single_leg() -> None:
    assert [(leg.name, leg.rate, leg.events) for leg in
            plan_legs(BenchOptions(rate=250.0, invoices=10))] == [("250/s", 250.0, 10)]
    assert [leg.name for leg in plan_legs(BenchOptions(max=True))] == ["max"]


@pytest.mark.parametrize("opts", [BenchOptions(profile="nope"), BenchOptions(invoices=0),
                                  BenchOptions(rate=-1.0), BenchOptions(repeat=0)])
def test_bad_options_are_refused(opts: BenchOptions) -> None:
    with pytest.raises(ValueError):
        plan_legs(opts)


def test_quick_runs_the_peers_at_its_maximum_load_leg_only() -> None:
    from bench._run import runs_at

    quick = BenchOptions()
    legs = plan_legs(quick)
    ran = {leg.name: [k for k in ("b2wl", "peer", "peerw") if runs_at(k, leg, legs, quick)]
           for leg in legs}
    assert ran == {"max": ["b2wl", "peer", "peerw"], "100/s": ["b2wl"], "1000/s": ["b2wl"],
                   "5000/s": ["b2wl"]}
    light = legs[1]  # the light leg: the two baselines its verdict and table need
    assert [k for k in ("raw_hop", "b1", "b2", "b1w", "b2w", "b2wl")
            if runs_at(k, light, legs, quick)] == ["b1w", "b2wl"]
    month_end = BenchOptions(profile="month-end")
    legs = plan_legs(month_end)
    assert all(runs_at("peerw", leg, legs, month_end) for leg in legs)
    one_rate = BenchOptions(rate=1000.0)  # a single fixed-rate leg asked for: the peers run
    assert runs_at("peerw", plan_legs(one_rate)[0], plan_legs(one_rate), one_rate)


def test_a_baseline_process_does_not_load_the_stack_driver() -> None:
    # Each baseline and load-generator run is a fresh process: it must import only what it
    # runs, not the bench driver (gateway stack, drills, simulator app), which cost ~1 s each.
    import subprocess
    import sys

    code = ("import sys, bench.baseline, bench._loadgen; "
            "print(sorted(m for m in ('bench._run', 'gateway.stack', 'gateway.drills') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
    import bench

    assert bench.BenchOptions is BenchOptions  # the lazy names still resolve
    with pytest.raises(AttributeError):
        _ = bench.no_such_name


async def test_a_flame_graph_that_cannot_be_taken_says_why(tmp_path, monkeypatch) -> None:
    from bench import _flame
    from bench._report import render_human

    flame = _flame.Flame(tmp_path / "g.svg")
    await flame.start(None)  # a targeted gateway: not the bench's own process
    assert await flame.stop() == {"file": str(tmp_path / "g.svg"), "written": False,
                                  "reason": "no gateway process of the bench's own to sample"}
    monkeypatch.setattr(_flame, "py_spy", lambda: None)
    missing = _flame.Flame(tmp_path / "h.svg")
    await missing.start(os.getpid())
    result = await missing.stop()
    assert not result["written"] and "py-spy is not installed" in result["reason"]
    text = render_human({"legs": [], "verdicts": [], "audit": {}, "ok": True, "flame": result})
    assert text.splitlines()[-1] == f"flame graph not written: {result['reason']}"
