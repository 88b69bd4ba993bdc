"""The bench report: ratios, verdicts against the issue's targets, JSON shape, human table.

Theory of operation: the runner produces one ``Figures`` dict per measured system per leg (a
leg is one load: ``max`` or a fixed rate, a fixed count of events). Everything here is pure and
works on those dicts, so the verdict arithmetic is tested without starting anything.

"Better raw path" is decided per leg: at maximum load the raw path (b1 or b2) with the higher
throughput; at a fixed rate the one with the lower p99 among those that kept up with the offered
rate (a path that fell behind shows a flattering latency, because arrivals are throttled by the
same bounded admission the simulator applies), or the faster one if neither kept up.

A verdict's ``met`` is ``True``/``False``, or ``None`` when the run could not measure it (a leg
not run, a peer not installed, a lane the gateway does not have yet); ``note`` says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "TARGETS",
    "WEBHOOK_BASELINES",
    "better_raw_path",
    "build_report",
    "keeps_up",
    "like_for_like_verdicts",
    "merge_repeats",
    "ratio",
    "render_human",
    "the_peer",
    "verdicts",
]

Figures = dict[str, Any]

# id -> (text of the target as the issue states it)
TARGETS: dict[str, str] = {
    "correctness": "LOST = 0 and DUP = 0 in every leg (a run with either is failed)",
    "throughput_vs_raw": "billing throughput >= 70 % of the better raw path (b1/b2)",
    "throughput_vs_peer": "billing throughput >= 2x the peer: FastAPI + FastStream with the "
                          "same signed-webhook ingress (cw; FastStream alone, c, when cw was "
                          "not run)",
    "p99_at_1k": "invoice posting p99 at 1,000 events/s <= 3x the raw path b1's p99 at 1,000/s",
    "backlog_at_5k": "at 5,000 events/s no growing backlog",
    "p99_at_5k": "at 5,000 events/s p99 <= 2x the better raw path's p99",
    "sync_p99": "sync-lane p99 during a usage flood <= 25 ms and <= 1.5x its idle p99",
    "usage_throughput": "usage lane: every record of the flood rated and recorded once "
                        "(LOST 0, DUP 0); its throughput is reported",
    "cpu_per_event": "CPU per event <= 1.5x the better raw path",
    "rss_stable": "RSS within +-10 % between a run and a 10x longer one",
    # Like for like (issue 15): against the raw paths that do the gateway's ingress work
    # (b1w/b2w: signed-webhook ingress) and its durable ledger write (b2wl).
    "throughput_vs_b2wl": "billing throughput at max >= 0.8x b2wl (same ingress work, same "
                          "ledger fsync, same ERP budget)",
    "p99_at_1k_vs_b2wl": "p99 at 1,000/s <= 2x b2wl's p99 at the same rate",
    "p99_at_100_vs_b1w": "p99 at 100/s <= 2x b1w's p99 at the same rate (nothing waits for "
                         "company at light load)",
    "cpu_vs_b2wl": "gateway process CPU per event <= 1.5x b2wl's",
}

# The like-for-like baselines the ratios name (``ratios.vs_<kind>``).
WEBHOOK_BASELINES = ("b1w", "b2w", "b2wl", "peerw")


def the_peer(baselines: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    """The peer the gateway is held to (``ratios.vs_peer``, the ``throughput_vs_peer``
    verdict): ``peerw`` (FastAPI + FastStream, loaded by the same signed webhooks as the
    gateway, so doing the same ingress work) when it was run, else ``peer`` (FastStream alone,
    fed from the broker: less work than the gateway does)."""
    key = "peerw" if "peerw" in baselines else "peer"
    return key, baselines.get(key)


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den`` rounded to 3 places; ``None`` when either is missing or ``den`` is 0."""
    if num is None or den is None or den == 0:
        return None
    return round(num / den, 3)


def keeps_up(offered_rate: float | None, events: int, first_arrival: float,
             last_arrival: float) -> tuple[bool | None, float | None]:
    """Whether arrivals kept to the offered schedule, and how late the last one was (s).

    Event ``k`` is due ``k / rate`` after the first. Admission is bounded (the simulator lets at
    most 64 events be outstanding; the baselines use the same window), so a system that cannot
    keep up delays arrivals instead of queueing them: lateness of the last arrival is the
    backlog that grew. Tolerance: 0.25 s or 5 % of the schedule, whichever is larger.
    ``(None, None)`` at maximum load (no schedule).
    """
    if not offered_rate or events < 2:
        return None, None
    scheduled = (events - 1) / offered_rate
    lag = max(0.0, (last_arrival - first_arrival) - scheduled)
    return lag <= max(0.25, 0.05 * scheduled), round(lag, 3)


def _p99(f: Mapping[str, Any] | None) -> float | None:
    if not f or not f.get("available", True):
        return None
    value = f.get("latency_ms", {}).get("p99")
    return float(value) if value is not None else None


def _tput(f: Mapping[str, Any] | None) -> float | None:
    if not f or not f.get("available", True):
        return None
    value = f.get("throughput_eps")
    return float(value) if value is not None else None


def better_raw_path(b1: Figures | None, b2: Figures | None,
                    rate: float | None) -> tuple[str | None, Figures | None]:
    """``("b1"|"b2", figures)`` of the better raw path for a leg (see module docstring)."""
    cands = [(k, f) for k, f in (("b1", b1), ("b2", b2)) if f and f.get("available", True)]
    if not cands:
        return None, None
    if rate:
        kept = [(k, f) for k, f in cands if f.get("keeps_up")]
        if kept:
            return min(kept, key=lambda kf: _p99(kf[1]) or float("inf"))
    return max(cands, key=lambda kf: _tput(kf[1]) or 0.0)


def _median_run(runs: list[Figures]) -> Figures:
    """The run with the median throughput (the lower median for an even count), annotated
    with every run's throughput and p99 so the spread stays visible."""
    ok = [f for f in runs if f.get("available", True)]
    if not ok:
        return runs[0]
    ranked = sorted(ok, key=lambda f: _tput(f) or 0.0)
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["repeats"] = {"throughput_eps": [_tput(f) for f in ok],
                         "p99_ms": [_p99(f) for f in ok],
                         "cpu_us_per_event": [f.get("cpu_us_per_event") for f in ok]}
    return chosen


def merge_repeats(reps: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One list of legs from several repetitions of the same legs.

    Each system's figures are those of its median-throughput repetition (every repetition's
    throughput, p99 and CPU are kept under ``repeats``). Correctness is never a median: the
    gateway's audit counts LOST, DUP and UNEXPECTED over all repetitions, and a leg drained only
    if it drained every time. A single repetition is returned unchanged.
    """
    if len(reps) == 1:
        return [dict(leg) for leg in reps[0]]
    merged: list[dict[str, Any]] = []
    for i, first in enumerate(reps[0]):
        same = [rep[i] for rep in reps]
        gw = _median_run([dict(leg["gateway"]) for leg in same])
        audits = [leg["gateway"].get("audit", {}) for leg in same]
        gw["audit"] = {**gw.get("audit", {}),
                       "lost": sum(int(a.get("lost", 0)) for a in audits),
                       "duplicates": sum(int(a.get("duplicates", 0)) for a in audits),
                       "unexpected": sum(int(a.get("unexpected", 0)) for a in audits),
                       "dead_lettered": sum(int(a.get("dead_lettered", 0)) for a in audits),
                       "sum_ok": all(bool(a.get("sum_ok")) for a in audits),
                       "dlq_exact": all(bool(a.get("dlq_exact", True)) for a in audits),
                       "drained": all(bool(a.get("drained")) for a in audits),
                       "repetitions": len(audits)}
        kinds = {k for leg in same for k in leg["baselines"]}
        merged.append({**first, "gateway": gw, "baselines": {
            k: _median_run([leg["baselines"][k] for leg in same if k in leg["baselines"]])
            for k in sorted(kinds)}})
    return merged


def _leg(legs: Sequence[Mapping[str, Any]], rate: float | None) -> Mapping[str, Any] | None:
    """The billing verdict leg at ``rate`` (None: maximum load); never the flood leg."""
    for leg in legs:
        if (leg.get("rate") or None) == rate and not leg.get("flood_leg"):
            return leg
    return None


def _verdict(vid: str, figure: float | None, bound: float | str, met: bool | None,
             note: str = "", unit: str = "") -> dict[str, Any]:
    return {"id": vid, "target": TARGETS[vid], "figure": figure, "bound": bound, "unit": unit,
            "met": met, "note": note}


def _le(figure: float | None, bound: float) -> bool | None:
    return None if figure is None else figure <= bound


def _rate_latency(leg: Mapping[str, Any], met: bool | None) -> tuple[bool | None, str]:
    """A latency target at a rate holds only if the gateway sustained that rate: one that fell
    behind had its arrivals throttled by the bounded admission, which flatters its latency."""
    if leg["gateway"].get("keeps_up") is False:
        lag = leg["gateway"].get("schedule_lag_s")
        return False, (f"; the gateway did not sustain {leg.get('rate'):g}/s (last arrival "
                       f"{_fmt(lag)} s late), so its p99 at that rate was not reached")
    return met, ""


def rss_verdict(rss: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``rss_stable`` verdict from the ``--rss-check`` section (``bench._rss``), or n/a."""
    if not rss:
        return _verdict("rss_stable", None, 0.10, None,
                        "not measured in this run (pass --rss-check: a run and a 10x longer "
                        "one, each in a fresh gateway process)")
    short, long_ = rss["runs"][0], rss["runs"][1]
    change = rss.get("change")
    note = (f"peak RSS {_fmt(short['peak_rss_mb'])} MB after {short['invoices']} invoices, "
            f"{_fmt(long_['peak_rss_mb'])} MB after {long_['invoices']} "
            f"({'-' if change is None else f'{change * 100:+.1f} %'})")
    return _verdict("rss_stable", change, rss.get("bound", 0.10), rss.get("met"), note,
                    unit="(relative change)")


def verdicts(legs: Sequence[Mapping[str, Any]],
             rss: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One verdict per target of the issue, from the legs that were run (and ``rss``, the
    ``--rss-check`` section, for the RSS target)."""
    out: list[dict[str, Any]] = []
    lost = sum(int(leg["gateway"].get("audit", {}).get("lost", 0)) for leg in legs)
    dup = sum(int(leg["gateway"].get("audit", {}).get("duplicates", 0)) for leg in legs)
    drained = all(leg["gateway"].get("audit", {}).get("drained", False) for leg in legs)
    for leg in legs:  # flow 4's usage flood: a usage record lost or doubled fails the run too
        u = leg["gateway"].get("usage") or {}
        lost += int(u.get("lost", 0))
        dup += int(u.get("duplicates", 0))
    out.append(_verdict("correctness", lost + dup, 0,
                        lost == 0 and dup == 0 and drained,
                        f"LOST {lost}, DUP {dup}" + ("" if drained else ", did not drain"),
                        unit="events"))

    mx = _leg(legs, None)
    if mx is None:
        for vid in ("throughput_vs_raw", "throughput_vs_peer"):
            out.append(_verdict(vid, None, "", None, "needs a --max leg"))
    else:
        gw = mx["gateway"]
        best_key, best = better_raw_path(mx["baselines"].get("b1"), mx["baselines"].get("b2"),
                                         None)
        r = ratio(_tput(gw), _tput(best))
        out.append(_verdict("throughput_vs_raw", r, 0.70, None if r is None else r >= 0.70,
                            f"gateway {_fmt(_tput(gw))}/s vs {best_key} {_fmt(_tput(best))}/s",
                            unit="x"))
        peer_key, peer = the_peer(mx["baselines"])
        r = ratio(_tput(gw), _tput(peer))
        note = (f"gateway {_fmt(_tput(gw))}/s vs {peer_key} {_fmt(_tput(peer))}/s"
                if r is not None
                else f"{peer_key} unavailable: {(peer or {}).get('reason', 'not run')}")
        stalls = (peer or {}).get("redelivery_stalls")
        if r is not None and stalls:
            note += (f" (the peer's run had {stalls} event(s) waiting ~30 s "
                     "for a redelivery, which drags its figure down)")
        out.append(_verdict("throughput_vs_peer", r, 2.0, None if r is None else r >= 2.0,
                            note, unit="x"))

    leg1k = _leg(legs, 1000.0)
    if leg1k is None:
        out.append(_verdict("p99_at_1k", None, 3.0, None, "needs a 1,000/s leg"))
    else:
        gw99, b199 = _p99(leg1k["gateway"]), _p99(leg1k["baselines"].get("b1"))
        r = ratio(gw99, b199)
        met, note = _rate_latency(leg1k, _le(r, 3.0))
        out.append(_verdict("p99_at_1k", r, 3.0, met,
                            f"gateway p99 {_fmt(gw99)} ms vs b1 p99 {_fmt(b199)} ms{note}",
                            unit="x"))

    leg5k = _leg(legs, 5000.0)
    if leg5k is None:
        out.append(_verdict("backlog_at_5k", None, "keeps up", None, "needs a 5,000/s leg"))
        out.append(_verdict("p99_at_5k", None, 2.0, None, "needs a 5,000/s leg"))
    else:
        gw = leg5k["gateway"]
        lag = gw.get("schedule_lag_s")
        out.append(_verdict("backlog_at_5k", lag, "keeps up", gw.get("keeps_up"),
                            f"last arrival {_fmt(lag)} s behind schedule; achieved "
                            f"{_fmt(gw.get('arrival_rate_eps'))}/s of 5000/s offered",
                            unit="s late"))
        best_key, best = better_raw_path(leg5k["baselines"].get("b1"),
                                         leg5k["baselines"].get("b2"), 5000.0)
        r = ratio(_p99(gw), _p99(best))
        met, note = _rate_latency(leg5k, _le(r, 2.0))
        out.append(_verdict("p99_at_5k", r, 2.0, met,
                            f"gateway p99 {_fmt(_p99(gw))} ms vs {best_key} p99 "
                            f"{_fmt(_p99(best))} ms{note}", unit="x"))

    flood = next((leg for leg in legs if leg.get("flood_leg")), None) or mx
    sync = (flood or {}).get("gateway", {}).get("sync_lane") if flood else None
    usage = (flood or {}).get("gateway", {}).get("usage") if flood else None
    if not sync or not sync["under_load_ms"].get("n"):
        out.append(_verdict("sync_p99", None, "25 ms and 1.5x idle", None,
                            "not measured: needs --usage N and a --max leg (no faults)"))
    else:
        idle99, load99 = sync["idle_ms"]["p99"], sync["under_load_ms"]["p99"]
        slowdown = load99 / idle99 if idle99 else None
        out.append(_verdict("sync_p99", load99, "25 ms and 1.5x idle",
                            load99 <= 25.0 and slowdown is not None and slowdown <= 1.5,
                            f"p99 {_fmt(load99)} ms under load vs {_fmt(idle99)} ms idle "
                            f"({_fmt(slowdown)}x), {sync['errors']} errors; the load: "
                            f"{sync.get('load', 'the billing flood of this leg')}"
                            + ("" if usage else " (no usage flood: run with --usage N)"),
                            unit="ms"))
    if not usage:
        out.append(_verdict("usage_throughput", None, "LOST 0, DUP 0", None,
                            "not measured: needs --usage N and a --max leg (no faults)"))
    else:
        out.append(_verdict("usage_throughput", usage.get("throughput_eps"), "LOST 0, DUP 0",
                            usage.get("complete") and usage.get("lost") == 0
                            and usage.get("duplicates") == 0,
                            f"{usage.get('revenue_recorded')}/{usage.get('records')} records "
                            f"rated and recorded in {_fmt(usage.get('wall_s'))} s (intake "
                            f"{_fmt(usage.get('intake_eps'))}/s, {usage.get('aggregates')} "
                            f"aggregates), LOST {usage.get('lost')}, DUP "
                            f"{usage.get('duplicates')}", unit="records/s"))

    base = mx or (legs[0] if legs else None)
    if base is None:
        out.append(_verdict("cpu_per_event", None, 1.5, None, "no leg run"))
    else:
        best_key, best = better_raw_path(base["baselines"].get("b1"),
                                         base["baselines"].get("b2"), base.get("rate"))
        gcpu = base["gateway"].get("cpu_us_per_event")
        rcpu = (best or {}).get("cpu_us_per_event")
        r = ratio(gcpu, rcpu)
        out.append(_verdict("cpu_per_event", r, 1.5, _le(r, 1.5),
                            f"gateway {_fmt(gcpu)} us/event vs "
                            + (f"{best_key} {_fmt(rcpu)} us/event" if best_key else
                               "no raw path run")
                            + f" (leg {base['name']})", unit="x"))
    out.extend(like_for_like_verdicts(legs))
    out.append(rss_verdict(rss))
    return out


def like_for_like_verdicts(legs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The verdicts against b2wl (the raw path doing the gateway's ingress and ledger work),
    each from the same leg of the same run; ``None`` when that leg or b2wl was not run."""
    out: list[dict[str, Any]] = []
    mx = _leg(legs, None)
    b2wl = (mx or {}).get("baselines", {}).get("b2wl") if mx else None
    if mx is None or not b2wl or not b2wl.get("available", True):
        out.append(_verdict("throughput_vs_b2wl", None, 0.8, None,
                            "needs a --max leg with baseline b2wl"))
        out.append(_verdict("cpu_vs_b2wl", None, 1.5, None,
                            "needs a --max leg with baseline b2wl"))
    else:
        gw = mx["gateway"]
        r = ratio(_tput(gw), _tput(b2wl))
        out.append(_verdict("throughput_vs_b2wl", r, 0.8, None if r is None else r >= 0.8,
                            f"gateway {_fmt(_tput(gw))}/s vs b2wl {_fmt(_tput(b2wl))}/s",
                            unit="x"))
        gcpu, bcpu = gw.get("cpu_us_per_event"), b2wl.get("cpu_us_per_event")
        r = ratio(gcpu, bcpu)
        gbox, bbox = gw.get("cpu_us_per_event_box"), b2wl.get("cpu_us_per_event_box")
        out.append(_verdict("cpu_vs_b2wl", r, 1.5, _le(r, 1.5),
                            f"process: gateway {_fmt(gcpu)} vs b2wl {_fmt(bcpu)} us/event; "
                            f"whole box: {_fmt(gbox)} vs {_fmt(bbox)} us/event "
                            f"({_fmt(ratio(gbox, bbox))}x)", unit="x"))
    out.append(_p99_at_rate_verdict("p99_at_1k_vs_b2wl", legs, 1000.0, "b2wl", "1,000/s"))
    # Light load: b1w commits and posts every event on its own (no batching), so it is what
    # "nothing waits for company" looks like; the gateway's batches must not add a wait.
    out.append(_p99_at_rate_verdict("p99_at_100_vs_b1w", legs, 100.0, "b1w", "100/s"))
    return out


def _p99_at_rate_verdict(vid: str, legs: Sequence[Mapping[str, Any]], rate: float, kind: str,
                         shown: str) -> dict[str, Any]:
    """The gateway's p99 at ``rate`` against baseline ``kind``'s in the same leg, bound 2x;
    not measured without that leg or that baseline, not met when the rate was not kept."""
    leg = _leg(legs, rate)
    base = (leg or {}).get("baselines", {}).get(kind) if leg else None
    if leg is None or not base or not base.get("available", True):
        return _verdict(vid, None, 2.0, None, f"needs a {shown} leg with baseline {kind}")
    gw99, b99 = _p99(leg["gateway"]), _p99(base)
    r = ratio(gw99, b99)
    met, note = _rate_latency(leg, _le(r, 2.0))
    return _verdict(vid, r, 2.0, met,
                    f"gateway p99 {_fmt(gw99)} ms vs {kind} p99 {_fmt(b99)} ms{note}", unit="x")


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"
    return str(x)


def _summary(f: Mapping[str, Any] | None) -> dict[str, Any]:
    """A figures dict without its series (what the top-level JSON keys carry)."""
    if not f:
        f = {"available": False, "reason": "not run"}
    out = {k: v for k, v in f.items() if k not in ("series", "cdf")}
    if not out.get("available", True):  # same keys, no numbers
        out.setdefault("throughput_eps", None)
        out.setdefault("latency_ms", None)
    return out


def _ratios(gw: Mapping[str, Any], other: Mapping[str, Any] | None) -> dict[str, Any]:
    if not other or not other.get("available", True):
        reason = (other or {}).get("reason", "not run")
        return {"available": False, "reason": reason, "throughput": None, "p99": None,
                "p99_9": None, "cpu_per_event": None, "cpu_box_per_event": None}
    return {
        "throughput": ratio(_tput(gw), _tput(other)),
        "p99": ratio(_p99(gw), _p99(other)),
        "p99_9": ratio((gw.get("latency_ms") or {}).get("p99_9"),
                       (other.get("latency_ms") or {}).get("p99_9")),
        "cpu_per_event": ratio(gw.get("cpu_us_per_event"), other.get("cpu_us_per_event")),
        "cpu_box_per_event": ratio(gw.get("cpu_us_per_event_box"),
                                   other.get("cpu_us_per_event_box")),
    }


def leg_ratios(leg: Mapping[str, Any]) -> dict[str, Any]:
    """``vs_raw_path``, ``vs_peer`` (against ``the_peer``, named by ``against``),
    ``vs_peer_bare`` (FastStream alone) and ``vs_b1w|vs_b2w|vs_b2wl|vs_peerw`` of one leg:
    gateway figure / other figure, both from this leg of this run."""
    key, best = better_raw_path(leg["baselines"].get("b1"), leg["baselines"].get("b2"),
                                leg.get("rate"))
    peer_key, peer = the_peer(leg["baselines"])
    out = {"vs_raw_path": {"against": key, **_ratios(leg["gateway"], best)},
           "vs_peer": {"against": peer_key, **_ratios(leg["gateway"], peer)},
           "vs_peer_bare": _ratios(leg["gateway"], leg["baselines"].get("peer"))}
    for kind in WEBHOOK_BASELINES:
        out[f"vs_{kind}"] = _ratios(leg["gateway"], leg["baselines"].get(kind))
    return out


def build_report(legs: list[dict[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The full report: ``meta`` + legs + the primary leg's figures at the top level.

    The primary leg is the ``max`` leg when there is one, else the first. Top-level keys:
    ``gateway.billing``, ``baselines.raw_hop|raw_path|peer``,
    ``ratios.vs_raw_path|vs_peer|vs_peer_bare``,
    ``ratios.vs_b1w|vs_b2w|vs_b2wl``, ``cpu_us_per_event.<system>.process|box``, ``audit``,
    ``verdicts``, ``ok`` (False when anything was lost or doubled).
    """
    for leg in legs:
        leg["ratios"] = leg_ratios(leg)
    primary = _leg(legs, None) or (legs[0] if legs else None)
    report: dict[str, Any] = {**meta, "legs": legs}
    if primary is not None:
        key, best = better_raw_path(primary["baselines"].get("b1"),
                                    primary["baselines"].get("b2"), primary.get("rate"))
        raw_path = {**_summary(best), "best": key,
                    "b1": _summary(primary["baselines"].get("b1")),
                    "b2": _summary(primary["baselines"].get("b2"))}
        report["primary_leg"] = primary["name"]
        report["gateway"] = {"billing": _summary(primary["gateway"])}
        report["baselines"] = {"raw_hop": _summary(primary["baselines"].get("raw_hop")),
                               "raw_path": raw_path,
                               "peer": _summary(primary["baselines"].get("peer")),
                               **{k: _summary(primary["baselines"].get(k))
                                  for k in WEBHOOK_BASELINES}}
        report["ratios"] = primary["ratios"]
        # Per system of the primary leg: its own process, and the whole box (with nats-server,
        # the simulator and the load generator) per event.
        systems = {"gateway": primary["gateway"], **primary["baselines"]}
        report["cpu_us_per_event"] = {
            k: {"process": f.get("cpu_us_per_event"), "box": f.get("cpu_us_per_event_box")}
            for k, f in systems.items() if f and f.get("available", True)}
    usage_leg = next((leg for leg in legs if leg["gateway"].get("usage")), None)
    if usage_leg is not None:  # gateway.usage.throughput_eps and the rest of the flood
        report.setdefault("gateway", {})["usage"] = usage_leg["gateway"]["usage"]
    audits = [leg["gateway"].get("audit", {}) for leg in legs]
    report["audit"] = {
        "lost": sum(int(a.get("lost", 0)) for a in audits),
        "duplicates": sum(int(a.get("duplicates", 0)) for a in audits),
        "unexpected": sum(int(a.get("unexpected", 0)) for a in audits),
        "sum_ok": all(bool(a.get("sum_ok", False)) for a in audits),
        "dead_lettered": sum(int(a.get("dead_lettered", 0)) for a in audits),
        "drained": all(bool(a.get("drained", False)) for a in audits),
        "per_leg": {leg["name"]: leg["gateway"].get("audit", {}) for leg in legs},
    }
    for leg in legs:  # flow 4's usage flood counts too
        u = leg["gateway"].get("usage") or {}
        report["audit"]["lost"] += int(u.get("lost", 0))
        report["audit"]["duplicates"] += int(u.get("duplicates", 0))
    rss = meta.get("rss_check")
    report["verdicts"] = verdicts(legs, rss)
    if rss:  # the RSS check's runs are gateway runs too: what they lose or double counts
        report["audit"]["lost"] += int(rss["lost"])
        report["audit"]["duplicates"] += int(rss["duplicates"])
        report["audit"]["drained"] = report["audit"]["drained"] and bool(rss["drained"])
    a = report["audit"]
    drills = [leg["gateway"].get("drill") for leg in legs if leg["gateway"].get("drill")]
    if drills:
        report["recovery_s"] = {leg["name"]: leg["gateway"]["drill"]["recovery_s"]
                                for leg in legs if leg["gateway"].get("drill")}
        report["dlq_exact"] = all(d["dlq_exact"] for d in drills)
    report["ok"] = (bool(legs) and a["lost"] == 0 and a["duplicates"] == 0 and a["drained"]
                    and report.get("dlq_exact", True))
    return report


# -- human table ------------------------------------------------------------------------------

_ROWS: tuple[tuple[str, str], ...] = (
    ("gateway", "gateway, billing lane"),
    ("raw_hop", "(a) raw nats-py one hop"),
    ("b1", "(b1) raw path, per-message"),
    ("b2", "(b2) raw path, atomic batches"),
    ("b1w", "(b1w) b1 + webhook ingress"),
    ("b2w", "(b2w) b2 + webhook ingress"),
    ("b2wl", "(b2wl) b2w + ledger fsync"),
    ("peer", "(c) peer: FastStream"),
    ("peerw", "(cw) peer: FastAPI+FastStream"),
)


def _row(label: str, f: Mapping[str, Any] | None) -> str:
    if not f:
        return f"  {label:<32} not run"
    if not f.get("available", True):
        return f"  {label:<32} unavailable: {f.get('reason', '?')}"
    lat = f.get("latency_ms", {})
    cells = [_fmt(f.get("throughput_eps"))] + [_fmt(lat.get(k)) for k in
                                                ("p50", "p95", "p99", "p99_9", "max")]
    cells += [_fmt(f.get("cpu_us_per_event")), _fmt(f.get("cpu_us_per_event_box")),
              _fmt(f.get("peak_rss_mb"))]
    lag = f.get("schedule_lag_s")
    tail = "" if lag is None else ("  kept up" if f.get("keeps_up") else f"  behind {lag:.1f} s")
    reps = (f.get("repeats") or {}).get("throughput_eps")
    if reps:
        tail += "  runs: " + "/".join(_fmt(x) for x in reps) + " ev/s"
    if f.get("redelivery_stalls"):
        tail += f"  ({f['redelivery_stalls']} waited ~30 s for a redelivery)"
    return f"  {label:<32}" + "".join(f"{c:>10}" for c in cells) + tail


def render_human(report: Mapping[str, Any]) -> str:
    """The report as a terminal table with one verdict line per target."""
    m = report.get("machine", {})
    lines = [
        f"erpgw bench peak-billing: profile {report.get('profile')}, seed {report.get('seed')}, "
        f"broker fsync {report.get('fsync')}"
        + (f", median-throughput run of {report['repeat']} per system"
           if (report.get("repeat") or 1) > 1 else ""),
        f"machine: {m.get('nproc')} cores, {m.get('cpu')}, nats-server {m.get('nats_server')}, "
        f"Python {m.get('python')}; load average {m.get('loadavg_start')} at start, "
        f"{m.get('loadavg_end')} at end (other processes on the box skew every figure)",
    ]
    topo = report.get("topology")
    if topo:
        lines.append("; ".join(f"{k} {v}" for k, v in topo.items()))
    if report.get("duration_s"):
        lines.append(f"--duration {report['duration_s']:g} s: one leg, the rate held for that "
                     "long (rate x duration invoices)")
    head = f"  {'':<32}" + "".join(f"{h:>10}" for h in (
        "ev/s", "p50 ms", "p95 ms", "p99 ms", "p99.9", "max ms", "CPU us/ev", "box us/ev",
        "RSS MB"))
    for leg in report.get("legs", []):
        lines.append("")
        lines.append(f"leg {leg['name']}: {leg['events']} events "
                     + ("at maximum load" if not leg.get("rate") else
                        f"offered at {leg['rate']:g}/s")
                     + (" (flood leg: usage flood + sync probe; not a billing verdict leg)"
                        if leg.get("flood_leg") else ""))
        lines.append(head)
        lines.append(_row(_ROWS[0][1], leg["gateway"]))
        for key, label in _ROWS[1:]:
            if leg.get("flood_leg") and key not in leg["baselines"]:
                continue
            lines.append(_row(label, leg["baselines"].get(key)))
        rr = leg.get("ratios") or leg_ratios(leg)
        vr, vp = rr["vs_raw_path"], rr["vs_peer"]
        lines.append(f"  gateway / better raw path ({vr.get('against') or '-'}): throughput "
                     f"{_fmt(vr.get('throughput'))}x, p99 {_fmt(vr.get('p99'))}x, CPU/event "
                     f"{_fmt(vr.get('cpu_per_event'))}x;  gateway / peer "
                     f"({vp.get('against') or 'peer'}): throughput "
                     f"{_fmt(vp.get('throughput'))}x, p99 {_fmt(vp.get('p99'))}x")
        for kind in WEBHOOK_BASELINES:
            w = rr.get(f"vs_{kind}") or {}
            if w.get("available", True) and w.get("throughput") is not None:
                lines.append(f"  gateway / {kind}: throughput {_fmt(w.get('throughput'))}x, "
                             f"p99 {_fmt(w.get('p99'))}x, p99.9 {_fmt(w.get('p99_9'))}x, "
                             f"CPU/event {_fmt(w.get('cpu_per_event'))}x (box "
                             f"{_fmt(w.get('cpu_box_per_event'))}x)")
        gens = [f"{k} {_fmt(b['generator'].get('cpu_us_per_event'))}"
                for k, b in (("gateway", leg["gateway"]), *leg["baselines"].items())
                if isinstance(b, Mapping) and isinstance(b.get("generator"), Mapping)]
        if gens:
            lines.append("  load generator CPU us/event (its own process, in the box figure): "
                         + ", ".join(gens))
        revs = [f"{k} {_fmt(b['revenue'].get('lines_uploaded'))} in "
                f"{_fmt(b['revenue'].get('uploads'))}"
                for k, b in (("gateway", leg["gateway"]), *leg["baselines"].items())
                if isinstance(b, Mapping) and isinstance(b.get("revenue"), Mapping)]
        if revs:
            lines.append("  revenue lines uploaded by the leg's end (lines in uploads; the "
                         "lane runs beside the ERP lane, not waited on): " + ", ".join(revs))
        a = leg["gateway"].get("audit", {})
        lines.append(f"  audit: issued {a.get('issued')}  posted {a.get('posted')}  LOST "
                     f"{a.get('lost')}  DUP {a.get('duplicates')}  UNEXPECTED "
                     f"{a.get('unexpected')}  SUM_OK {'yes' if a.get('sum_ok') else 'NO'}  "
                     f"dead-lettered {a.get('dead_lettered')}")
        drill = leg["gateway"].get("drill")
        if drill:
            for name, rec in drill["recovery_s"].items():
                first, drained = rec["first_posting_s"], rec["drained_s"]
                lines.append(f"  fault {name}: healed -> next ERP posting "
                             f"{'-' if first is None else f'{first:.2f} s'}, drained "
                             f"{'-' if drained is None else f'{drained:.2f} s'}")
            lines.append(f"  dead letters exactly the injected poison: {drill['dlq_exact']}")
    rss = report.get("rss_check")
    if rss:
        lines.append("")
        lines.append("RSS check (maximum load, a fresh gateway process per run):")
        for r in rss["runs"]:
            lines.append(f"  {r['label']:<8} {r['invoices']:>7} invoices  peak RSS "
                         f"{_fmt(r['peak_rss_mb'])} MB  {_fmt(r['throughput_eps'])} ev/s  "
                         f"{r['wall_s']} s  LOST {r['lost']}  DUP {r['duplicates']}")
    lines.append("")
    lines.append("verdicts (same run, same machine, broker fsync "
                 f"{report.get('fsync')}):")
    for v in report.get("verdicts", []):
        tag = {True: "MET ", False: "FAIL", None: "n/a "}[v["met"]]
        fig = "" if v["figure"] is None else f": {_fmt(v['figure'])}{v['unit'] and ' ' + v['unit']}"
        bound = f" (bound {v['bound']})" if v["bound"] not in ("", None) else ""
        lines.append(f"  {tag}  {v['target']}{fig}{bound}; {v['note']}")
    a = report.get("audit", {})
    lines.append("")
    lines.append("RESULT: " + ("OK, nothing lost, nothing doubled" if report.get("ok") else
                               f"FAILED (LOST {a.get('lost')}, DUP {a.get('duplicates')}"
                               f"{'' if a.get('drained') else ', did not drain'})"))
    if report.get("plots"):
        lines.append(f"plots: {report['plots']}")
    elif report.get("plots_skipped"):
        lines.append(f"plots skipped: {report['plots_skipped']}")
    flame = report.get("flame")
    if flame:
        lines.append(f"flame graph of the gateway: {flame['file']}" if flame.get("written")
                     else f"flame graph not written: {flame.get('reason', '?')}")
    return "\n".join(lines)
