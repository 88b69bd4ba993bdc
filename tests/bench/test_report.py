"""Ratios, the better raw path, one verdict per target, the report's JSON shape and table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench import TARGETS, build_report, render_human, write_outputs
from bench._report import better_raw_path, keeps_up, merge_repeats, ratio, verdicts


def fig(tput: float, p99: float, cpu: float = 100.0, *, kept: bool | None = None,
        lag: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"available": True, "complete": True, "throughput_eps": tput,
            "latency_ms": {"n": 100, "p50": p99 / 2, "p95": p99 * 0.9, "p99": p99,
                           "p99_9": None, "max": p99 * 1.1, "mean": p99 / 2},
            "cpu_us_per_event": cpu, "peak_rss_mb": 50.0, "keeps_up": kept,
            "schedule_lag_s": lag, "series": {"throughput_eps": [(0.0, tput)]},
            "cdf": [(1.0, 0.5), (p99, 1.0)], **extra}


def gw(tput: float, p99: float, cpu: float = 300.0, *, lost: int = 0, dup: int = 0,
       kept: bool | None = None, lag: float | None = None) -> dict[str, Any]:
    return fig(tput, p99, cpu, kept=kept, lag=lag, arrival_rate_eps=tput,
               audit={"issued": 100, "posted": 100 - lost, "lost": lost, "duplicates": dup,
                      "unexpected": 0, "sum_ok": lost == 0, "dead_lettered": 0,
                      "drained": True})


PEER_MISSING = {"kind": "peer", "available": False, "reason": "FastStream is not installed"}


def legs(*, lost: int = 0, peer: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [
        {"name": "max", "rate": None, "events": 100,
         "gateway": gw(900.0, 40.0, 150.0, lost=lost),
         "baselines": {"raw_hop": fig(4000.0, 20.0), "b1": fig(2500.0, 300.0, 140.0),
                       "b2": fig(1000.0, 80.0, 100.0), "peer": peer or fig(300.0, 900.0)}},
        {"name": "1000/s", "rate": 1000.0, "events": 100,
         "gateway": gw(990.0, 12.0, kept=True, lag=0.0),
         "baselines": {"b1": fig(999.0, 5.0, kept=True, lag=0.0),
                       "b2": fig(998.0, 25.0, kept=True, lag=0.0)}},
        {"name": "5000/s", "rate": 5000.0, "events": 100,
         "gateway": gw(1200.0, 50.0, kept=False, lag=3.2),
         "baselines": {"b1": fig(2400.0, 400.0, kept=False, lag=1.0),
                       "b2": fig(4000.0, 30.0, kept=True, lag=0.1)}},
    ]


def by_id(vs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in vs}


def test_ratio_and_missing_figures() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None and ratio(1.0, None) is None and ratio(1.0, 0) is None


def test_keeps_up_reads_lateness_of_the_last_arrival() -> None:
    assert keeps_up(None, 100, 0.0, 10.0) == (None, None)
    assert keeps_up(1000.0, 1001, 0.0, 1.1) == (True, 0.1)
    assert keeps_up(1000.0, 1001, 0.0, 3.0) == (False, 2.0)
    # long schedules tolerate 5 %
    assert keeps_up(100.0, 10_001, 0.0, 104.0)[0] is True


def test_better_raw_path_is_the_faster_at_max_and_the_tighter_that_kept_up_at_a_rate() -> None:
    b1, b2 = fig(2500.0, 300.0), fig(1000.0, 80.0)
    assert better_raw_path(b1, b2, None)[0] == "b1"
    kept1, kept2 = fig(999.0, 5.0, kept=True), fig(998.0, 25.0, kept=True)
    assert better_raw_path(kept1, kept2, 1000.0)[0] == "b1"
    behind = fig(2400.0, 4.0, kept=False)
    assert better_raw_path(behind, fig(4000.0, 30.0, kept=True), 5000.0)[0] == "b2"
    assert better_raw_path(None, None, None) == (None, None)
    assert better_raw_path({"available": False}, b2, None)[0] == "b2"


def test_one_verdict_per_target_with_figure_bound_and_outcome() -> None:
    vs = by_id(verdicts(legs()))
    assert set(vs) == set(TARGETS)
    assert vs["correctness"]["met"] is True
    t = vs["throughput_vs_raw"]
    assert t["figure"] == 0.36 and t["bound"] == 0.70 and t["met"] is False  # 900 / 2500
    assert vs["throughput_vs_peer"]["figure"] == 3.0 and vs["throughput_vs_peer"]["met"] is True
    assert vs["p99_at_1k"]["figure"] == 2.4 and vs["p99_at_1k"]["met"] is True  # 12 / 5 (b1)
    assert vs["backlog_at_5k"]["met"] is False and vs["backlog_at_5k"]["figure"] == 3.2
    # b1 fell behind at 5k/s, so the better raw path there is b2 (p99 30 ms)
    # ... and the ratio alone (50 / 30) would pass, but the gateway fell behind 5,000/s
    assert vs["p99_at_5k"]["figure"] == round(50 / 30, 3) and vs["p99_at_5k"]["met"] is False
    assert vs["cpu_per_event"]["figure"] == round(150 / 140, 3)  # b1 is better at max
    assert vs["sync_p99"]["met"] is None and vs["rss_stable"]["met"] is None


def test_lost_or_doubled_fails_the_run_whatever_its_speed() -> None:
    report = build_report(legs(lost=1), {"profile": "test"})
    assert report["ok"] is False
    assert by_id(report["verdicts"])["correctness"]["met"] is False
    assert "FAILED" in render_human(report)


def test_missing_peer_is_unavailable_never_a_number() -> None:
    report = build_report(legs(peer=PEER_MISSING), {"profile": "test"})
    assert report["baselines"]["peer"]["available"] is False
    assert report["baselines"]["peer"]["throughput_eps"] is None  # same keys, no number
    assert report["ratios"]["vs_peer"]["throughput"] is None
    v = by_id(report["verdicts"])["throughput_vs_peer"]
    assert v["met"] is None and "not installed" in v["note"]


def test_report_shape_has_every_key_the_issue_asks_for() -> None:
    report = build_report(legs(), {"profile": "test", "fsync": "always"})
    doc = msgspec.json.decode(msgspec.json.encode(report))  # JSON-serialisable
    assert doc["gateway"]["billing"]["throughput_eps"] == 900.0
    assert doc["gateway"]["billing"]["latency_ms"]["p99"] == 40.0
    for key in ("raw_hop", "raw_path", "peer"):
        assert "throughput_eps" in doc["baselines"][key]
        assert "latency_ms" in doc["baselines"][key]
    assert doc["baselines"]["raw_path"]["best"] == "b1"
    assert {"throughput", "p99", "cpu_per_event"} <= set(doc["ratios"]["vs_raw_path"])
    assert doc["ratios"]["vs_raw_path"]["throughput"] == 0.36
    assert doc["ratios"]["vs_peer"]["throughput"] == 3.0
    assert doc["audit"]["lost"] == 0 and doc["audit"]["duplicates"] == 0
    assert doc["audit"]["sum_ok"] is True
    assert all({"figure", "bound", "met"} <= set(v) for v in doc["verdicts"])
    assert "series" not in doc["gateway"]["billing"]  # series stay in the legs
    assert doc["legs"][0]["gateway"]["series"]


def test_human_table_prints_every_verdict() -> None:
    text = render_human(build_report(legs(peer=PEER_MISSING), {"profile": "test"}))
    for target in TARGETS.values():
        assert target in text
    assert "unavailable: FastStream is not installed" in text
    assert "RESULT: OK" in text


def test_a_single_rate_leg_leaves_the_other_verdicts_unmeasured() -> None:
    only = [legs()[1]]
    vs = by_id(verdicts(only))
    assert vs["throughput_vs_raw"]["met"] is None
    assert vs["p99_at_1k"]["met"] is True
    assert vs["backlog_at_5k"]["met"] is None


def test_a_latency_target_at_a_rate_fails_when_the_gateway_fell_behind() -> None:
    run = legs()
    run[1]["gateway"] = gw(700.0, 12.0, kept=False, lag=4.0)  # p99 ratio alone would pass
    v = by_id(verdicts(run))["p99_at_1k"]
    assert v["figure"] == 2.4 and v["met"] is False and "did not sustain 1000/s" in v["note"]


def test_outputs_without_matplotlib_skip_the_plots_and_say_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "bench._plots", None)
    report = build_report(legs(), {"profile": "test"})
    assert write_outputs(report, tmp_path) == []
    assert "matplotlib is not available" in report["plots_skipped"]
    assert (tmp_path / "report.json").exists()
    assert "plots skipped: matplotlib" in (tmp_path / "report.txt").read_text()


def test_repeats_report_the_median_run_and_never_a_median_of_correctness() -> None:
    a, b, c = legs(), legs(), legs(lost=2)
    a[0]["gateway"] = gw(800.0, 50.0)
    b[0]["gateway"] = gw(1000.0, 30.0)
    c[0]["gateway"] = gw(900.0, 40.0, lost=2)
    c[0]["baselines"]["b2"] = {"kind": "b2", "available": False, "reason": "timed out"}
    merged = merge_repeats([a, b, c])
    g = merged[0]["gateway"]
    assert g["throughput_eps"] == 900.0 and g["latency_ms"]["p99"] == 40.0  # the median run
    assert g["repeats"]["throughput_eps"] == [800.0, 1000.0, 900.0]
    assert g["audit"]["lost"] == 2 and g["audit"]["repetitions"] == 3  # summed, not a median
    assert merged[0]["baselines"]["b2"]["repeats"]["throughput_eps"] == [1000.0, 1000.0]
    report = build_report(merged, {"profile": "test", "repeat": 3})
    assert report["ok"] is False
    assert "runs: 800/1,000/900 ev/s" in render_human(report)
    assert merge_repeats([a]) == a


def like_legs() -> list[dict[str, Any]]:
    """A max leg and a 1,000/s leg with the webhook baselines, then a flood leg."""
    out = legs()
    out[0]["gateway"]["cpu_us_per_event_box"] = 600.0
    out[0]["baselines"].update({
        "b1w": fig(800.0, 50.0, 120.0), "b2w": fig(1500.0, 30.0, 90.0),
        "b2wl": fig(1200.0, 32.0, 100.0, cpu_us_per_event_box=400.0)})
    out[1]["baselines"]["b2wl"] = fig(999.0, 8.0, kept=True, lag=0.0)
    flood = gw(100.0, 9000.0)
    flood["sync_lane"] = {"idle_ms": {"p99": 2.0, "n": 50},
                          "under_load_ms": {"p99": 4.0, "n": 50}, "errors": 0}
    out.append({"name": "max+usage", "rate": None, "events": 100, "gateway": flood,
                "baselines": {}, "flood_leg": True})
    return out


def test_ratios_against_the_webhook_baselines_come_from_the_same_leg() -> None:
    report = build_report(like_legs(), {"bench": "peak-billing"})
    r = report["ratios"]  # the max leg's (never the flood leg's)
    assert r["vs_b2wl"]["throughput"] == 0.75  # 900 / 1200
    assert r["vs_b2wl"]["p99"] == 1.25  # 40 / 32
    assert r["vs_b2wl"]["cpu_per_event"] == 1.5  # 150 / 100
    assert r["vs_b2wl"]["cpu_box_per_event"] == 1.5  # 600 / 400
    assert r["vs_b1w"]["throughput"] == 1.125 and r["vs_b2w"]["throughput"] == 0.6
    assert report["legs"][1]["ratios"]["vs_b2wl"]["p99"] == 1.5  # 12 / 8 at 1,000/s
    assert report["legs"][1]["ratios"]["vs_b1w"]["available"] is False  # not run there
    assert report["baselines"]["b2wl"]["throughput_eps"] == 1200.0
    assert report["cpu_us_per_event"]["gateway"] == {"process": 150.0, "box": 600.0}
    assert report["cpu_us_per_event"]["b2wl"] == {"process": 100.0, "box": 400.0}
    v = by_id(report["verdicts"])
    assert v["throughput_vs_b2wl"]["figure"] == 0.75 and v["throughput_vs_b2wl"]["met"] is False
    assert v["cpu_vs_b2wl"]["figure"] == 1.5 and v["cpu_vs_b2wl"]["met"] is True
    assert v["p99_at_1k_vs_b2wl"]["figure"] == 1.5 and v["p99_at_1k_vs_b2wl"]["met"] is True
    # The sync verdict is read from the flood leg; the billing verdicts never are.
    assert v["sync_p99"]["figure"] == 4.0 and v["throughput_vs_raw"]["figure"] == 0.36
    text = render_human(report)
    assert "gateway / b2wl: throughput 0.75x" in text and "flood leg" in text


def test_like_for_like_verdicts_without_b2wl_are_not_measured() -> None:
    v = by_id(verdicts(legs()))
    for vid in ("throughput_vs_b2wl", "cpu_vs_b2wl", "p99_at_1k_vs_b2wl"):
        assert v[vid]["met"] is None and "b2wl" in v[vid]["note"]
    assert v["p99_at_100_vs_b1w"]["met"] is None
    assert "100/s leg with baseline b1w" in v["p99_at_100_vs_b1w"]["note"]


def test_light_load_p99_is_held_to_b1w_at_the_same_rate() -> None:
    def light(gw_p99: float, b1w_p99: float, *, kept: bool = True) -> dict[str, Any]:
        return {"name": "100/s", "rate": 100.0, "events": 200,
                "gateway": gw(100.0, gw_p99, kept=kept, lag=0.0 if kept else 2.0),
                "baselines": {"b1w": fig(100.0, b1w_p99, kept=True, lag=0.0),
                              "b1": fig(100.0, 1.0, kept=True, lag=0.0)}}

    v = by_id(verdicts([*legs(), light(30.0, 20.0)]))["p99_at_100_vs_b1w"]
    assert v["figure"] == 1.5 and v["met"] is True and "b1w p99 20.00 ms" in v["note"]
    v = by_id(verdicts([*legs(), light(50.0, 20.0)]))["p99_at_100_vs_b1w"]
    assert v["figure"] == 2.5 and v["met"] is False
    # A ratio inside the bound at a rate the gateway did not keep is not met.
    v = by_id(verdicts([*legs(), light(30.0, 20.0, kept=False)]))["p99_at_100_vs_b1w"]
    assert v["met"] is False and "did not sustain 100/s" in v["note"]


def test_the_peer_is_the_webhook_peer_when_it_ran_and_the_bare_one_stays_beside_it() -> None:
    runs = legs()
    runs[0]["baselines"]["peerw"] = fig(450.0, 700.0, 400.0)
    report = build_report(runs, {"profile": "test"})
    assert report["ratios"]["vs_peer"]["against"] == "peerw"
    assert report["ratios"]["vs_peer"]["throughput"] == 2.0  # 900 / 450
    assert report["ratios"]["vs_peer"] == {"against": "peerw", **{
        k: v for k, v in report["ratios"]["vs_peerw"].items()}}
    assert report["ratios"]["vs_peer_bare"]["throughput"] == 3.0  # 900 / 300 (FastStream)
    v = by_id(report["verdicts"])["throughput_vs_peer"]
    assert v["figure"] == 2.0 and v["met"] is True and "peerw" in v["note"]
    assert "gateway / peer (peerw): throughput 2.00x" in render_human(report)
    # Without the webhook peer, the bare one is the peer, and the report says so.
    bare = build_report(legs(), {"profile": "test"})
    assert bare["ratios"]["vs_peer"]["against"] == "peer"
    assert by_id(bare["verdicts"])["throughput_vs_peer"]["figure"] == 3.0


def test_the_table_says_how_far_each_revenue_lane_got() -> None:
    leg = legs()[0]
    leg["gateway"]["revenue"] = {"lines_uploaded": 9012, "uploads": 21}
    leg["baselines"]["b2wl"] = fig(1000.0, 80.0, revenue={"lines_uploaded": 8500, "uploads": 18})
    text = render_human(build_report([leg], {"profile": "test"}))
    assert "revenue lines uploaded by the leg's end" in text
    assert "gateway 9012 in 21" in text and "b2wl 8500 in 18" in text
    assert "revenue lines" not in render_human(build_report(legs(), {"profile": "test"}))
