"""One leg of load through the real gateway, judged by the simulator.

Theory of operation, per leg: reset the simulator's records (so its audit covers this leg
only; invoice numbers keep counting, so the leg's invoices are ``in_<first>..in_<last>``),
read the gateway process's CPU time, ask billing for a bill run of N invoices at the leg's rate
(0 = all at once), then poll the audit until every invoice is issued, accepted and posted (or
dead-lettered), sampling the backlog meanwhile from the audit (issued - posted) and from the
gateway's own ``<prefix>.mon.metrics`` snapshots (consumer pending counts). CPU is read again
the moment the leg is drained.

Latency: the audit gives p50/p95/p99/max. For p99.9, the CDF and the time series the bench
reads, after the leg, each invoice's ``issued_at`` (``GET /billing/v1/events/evt_<id>``) and
its first posting's ``acceptedAt`` (``GET /erp/v1/journal-entries?externalId=<id>``), which is
exactly what the audit computes from, and checks that its percentiles agree with the audit's.
If those reads fail, the audit's figures are reported and p99.9 is left out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import anyio
import nats
import nats.errors

from contracts import Subjects
from gateway.drills import Driller
from gateway.stack import DrainResult, Stack

from ._proc import cpu_seconds, peak_rss_mb, rss_mb
from ._report import keeps_up
from ._stats import (
    auto_bin,
    backlog_series,
    cdf_points,
    latency_summary,
    rate_series,
    redelivery_stalls,
    window_series,
)
from ._sync_probe import SyncProbe
from ._usage import UsageFlood

__all__ = ["GatewayLeg", "run_gateway_leg"]

LOOKUP_CONCURRENCY = 16

Progress = Callable[[str], None]


class GatewayLeg:
    """What one leg asks of the gateway."""

    def __init__(self, name: str, events: int, rate: float | None, first_index: int) -> None:
        self.name = name
        self.events = events
        self.rate = rate
        self.first_index = first_index

    @property
    def invoice_ids(self) -> list[str]:
        return [f"in_{i:06d}" for i in range(self.first_index, self.first_index + self.events)]


async def _sim(http: aiohttp.ClientSession, method: str, url: str) -> Any:
    async with http.request(method, url) as resp:
        body = await resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"simulator {method} {url}: HTTP {resp.status}")
        return json.loads(body) if body else None


class _Metrics:
    """Backlog from the gateway's 1 s metric snapshots (core NATS, JSON)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._nc: Any = None

    async def start(self, url: str, subject: str, options: dict[str, Any]) -> None:
        try:
            self._nc = await nats.connect(url, name="erpgw-bench-metrics", **options)
        except (OSError, nats.errors.Error, TimeoutError):
            self._nc = None
            return

        async def on_msg(msg: Any) -> None:
            try:
                doc = json.loads(msg.data)
                pending = {k: int(v.get("pending", 0)) + int(v.get("ack_pending", 0))
                           for k, v in (doc.get("backlog") or {}).items()}
            except (ValueError, AttributeError, TypeError):
                return
            self.samples.append((time.time(), pending))

        await self._nc.subscribe(subject, cb=on_msg)

    async def stop(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


async def _per_invoice(http: aiohttp.ClientSession, base: str,
                       ids: list[str]) -> dict[str, tuple[float, float | None]]:
    """``{id: (issued_at, first posting accepted_at or None)}`` for every id the sim knows."""
    out: dict[str, tuple[float, float | None]] = {}
    queue = list(reversed(ids))

    async def worker() -> None:
        while queue:
            inv = queue.pop()
            ev = await _sim(http, "GET", f"{base}/billing/v1/events/evt_{inv}")
            posts = await _sim(http, "GET", f"{base}/erp/v1/journal-entries?externalId={inv}")
            items = posts.get("items", [])
            first = min(items, key=lambda p: p["seq"])["acceptedAt"] if items else None
            out[inv] = (float(ev["issued_at"]), None if first is None else float(first))

    await asyncio.gather(*(worker() for _ in range(LOOKUP_CONCURRENCY)))
    return out


def gateway_cpu(stack: Stack) -> float | None:
    """CPU seconds of the gateway: every gateway process of a stack split by process roles
    (``--roles``), else the one process."""
    pids = [p for p in stack.gateway_pids() if p] if stack.gateways > 1 else []
    return _sum_cpu(pids) if pids else cpu_seconds(stack.gateway_pid)


def _sum_cpu(pids: list[int]) -> float | None:
    """CPU seconds of ``pids`` together; None when any cannot be read."""
    vals = [cpu_seconds(p) for p in pids]
    return None if any(v is None for v in vals) else sum(v for v in vals if v is not None)


def progress_bar(frac: float, width: int = 20) -> str:
    """``[#########...........]  45%`` for a share done between 0 and 1 (clamped)."""
    frac = min(1.0, max(0.0, frac))
    full = int(frac * width)
    return f"[{'#' * full}{'.' * (width - full)}] {frac * 100:3.0f}%"


async def _first_index(http: aiohttp.ClientSession, base: str, leg: GatewayLeg) -> None:
    """Set ``leg.first_index`` from the first event of the simulator's current epoch.

    The simulator numbers invoices for the life of its process and the bench resets it before
    each leg, so the lowest invoice number among the leg's first events is its first invoice
    (the first 256, since a reordering fault may shuffle events in windows of 16). Left
    unchanged when the read fails (the per-invoice reads then fail too, and the audit's
    figures are reported).
    """
    try:
        page = await _sim(http, "GET", f"{base}/billing/v1/events?limit=256")
        ids = [str(e["data"]["object"]["id"]) for e in page["data"]]
    except (aiohttp.ClientError, RuntimeError, TimeoutError, KeyError, TypeError, ValueError):
        return
    numbers = [int(i[3:]) for i in ids if i.startswith("in_") and i[3:].isdigit()]
    if numbers:
        leg.first_index = min(numbers)


async def run_gateway_leg(stack: Stack, leg: GatewayLeg, *, stall_timeout: float,
                          metrics_subject: str, say: Progress,
                          driller: Driller | None = None,
                          lean: bool = False, usage: int = 0,
                          sync_probe: bool = True,
                          box_pids: tuple[int | None, ...] = ()) -> dict[str, Any]:
    """Drive one leg through ``stack`` and return its figures dict (with ``audit``).

    With ``driller`` the leg runs under its faults (``gateway.drills``): they fire while the
    bill run is in flight, and the figures gain a ``drill`` section with recovery times.
    ``lean`` (the RSS check's runs): no sync probe and no per-invoice latency reads, only the
    audit, CPU and memory. ``leg.first_index`` is corrected to the simulator's first invoice
    number of the leg (a targeted simulator may have issued invoices before). ``usage`` N > 0
    (the maximum-load leg only, without faults): N usage records flood the usage lane at
    maximum rate alongside the invoices (``bench._usage``), the sync probe runs until they are
    all recorded, and the figures gain a ``usage`` section. ``sync_probe`` False: no sync-lane
    probe (the billing verdict legs; the flood leg measures the sync lane). ``box_pids``: the
    other processes of the box (nats-server, the simulator, which generates this load) whose
    CPU counts, with the gateway's, in ``cpu_us_per_event_box``.
    """
    base = stack.sim_url
    pid = stack.gateway_pid
    starts = stack.gateway_starts
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await _sim(http, "POST", f"{base}/sim/v1/reset")
        metrics = _Metrics()
        await metrics.start(stack.url, metrics_subject, stack.nats_options("monitor"))
        samples: list[tuple[float, int, int, int]] = []  # t, issued, accepted, posted
        # The sync lane: idle first, then probed all through a maximum-load leg.
        probe: SyncProbe | None = None
        idle_lat: list[float] = []
        if leg.rate is None and driller is None and not lean and sync_probe:
            products = await _sim(http, "GET", f"{base}/cpq/v1/products")
            if products.get("items"):
                # A caller of the sync lane from outside the gateway: its own identity and
                # its own process (bench._sync_probe).
                probe = SyncProbe(stack.url, Subjects().sync_pricing_validate,
                                  products["items"][0]["id"],
                                  options=stack.nats_options("sync-client"))
                await probe.start()
                idle_lat = await probe.run(count=50)
        flood: UsageFlood | None = None
        if usage > 0 and probe is not None:
            flood = UsageFlood(stack.gateway_url, base, usage)
            await flood.prepare(http)
        flooding = anyio.Event()
        others = [p for p in box_pids if p]
        cpu0 = gateway_cpu(stack)
        box0 = _sum_cpu(others)
        t_start = time.time()
        if driller is not None:
            await driller.before_run()
        await stack.bill_run(leg.events, leg.rate or 0.0)
        drained, cpu1, audit, dead = False, None, {}, []
        box1: float | None = None
        last_sig: tuple[int, ...] = ()
        last_change = time.monotonic()
        try:
            async with anyio.create_task_group() as drill_tg:
                if driller is not None:
                    drill_tg.start_soon(driller.run)
                flood_lat: list[float] = []
                if probe is not None:
                    async def sync_under_load() -> None:
                        flood_lat.extend(await probe.run(until=flooding))
                    drill_tg.start_soon(sync_under_load)
                if flood is not None:
                    drill_tg.start_soon(flood.send, http)
                while True:
                    audit = await stack.audit()
                    if driller is not None:
                        driller.observe(audit)
                    now = time.time()
                    samples.append((now, audit["issued"], audit["accepted"], audit["posted"]))
                    say(f"{progress_bar(audit['posted'] / max(1, leg.events))} gateway: "
                        f"issued {audit['issued']}/{leg.events}  accepted "
                        f"{audit['accepted']}  posted {audit['posted']}"
                        + (f"  t {now - t_start:.0f}/{leg.events / leg.rate:.0f} s"
                           if leg.rate else ""))
                    sig = (audit["issued"], audit["accepted"], audit["posted"],
                           audit["postings"])
                    if sig != last_sig:
                        last_sig, last_change = sig, time.monotonic()
                    complete = (audit["issued"] >= leg.events
                                and audit["accepted"] >= audit["issued"])
                    if complete and audit["unposted_count"] == 0:
                        cpu1, drained = gateway_cpu(stack), True
                        box1 = _sum_cpu(others)
                        break
                    idle = time.monotonic() - last_change
                    if complete and idle > 3.0:  # the rest may be dead-lettered: ask the DLQ
                        dead = await stack.dead_letters()
                        if DrainResult(audit, dead, False, 0.0).lost == 0:
                            cpu1, drained = gateway_cpu(stack), True
                            box1 = _sum_cpu(others)
                            break
                    if idle > stall_timeout:
                        cpu1 = gateway_cpu(stack)
                        box1 = _sum_cpu(others)
                        break
                    await asyncio.sleep(0.25)
                if driller is not None:
                    driller.drained()  # faults the progress never reached fire now
                if flood is not None:  # the usage flood goes on: wait for it, bounded
                    last_n, moved = -1, time.monotonic()
                    while not flood.observe((await stack.audit()).get("usage")):
                        n = int(flood.audit.get("revenue_recorded", 0))
                        say(f"{progress_bar(n / max(1, usage))} usage: recorded {n}/{usage}")
                        if n != last_n:
                            last_n, moved = n, time.monotonic()
                        elif time.monotonic() - moved > stall_timeout:
                            break
                        await asyncio.sleep(0.25)
                flooding.set()
            # (the task group waited for every fault to heal and the sync probe to stop)
        finally:
            await metrics.stop()
            if probe is not None:
                await probe.close()
        if not dead and audit.get("unposted_count"):
            dead = await stack.dead_letters()
        peak = peak_rss_mb(pid)
        rss_now = rss_mb(pid)
        await _first_index(http, base, leg)
        per: dict[str, tuple[float, float | None]] = {}
        if not lean:
            say("gateway: reading per-invoice issue and posting times from the simulator")
            try:
                per = await _per_invoice(http, base, leg.invoice_ids)
            except (aiohttp.ClientError, RuntimeError, TimeoutError, KeyError, ValueError):
                per = {}

    result = DrainResult(audit, dead, drained, time.time() - t_start)
    ids = set(leg.invoice_ids)
    dlq_keys = result.dlq_keys & ids
    unposted = set(audit.get("unposted", []))
    posted_n = int(audit.get("posted", 0))
    audit_out = {
        "issued": audit.get("issued"), "accepted": audit.get("accepted"), "posted": posted_n,
        "postings": audit.get("postings"), "lost": result.lost,
        "duplicates": int(audit.get("duplicates", 0)),
        "unexpected": int(audit.get("unexpected", 0)),
        "sum_ok": audit.get("amount_issued") == audit.get("amount_posted"),
        "amount_issued": audit.get("amount_issued"), "amount_posted": audit.get("amount_posted"),
        "dead_lettered": len(dlq_keys),
        "dlq_exact": unposted == dlq_keys,
        "drained": drained,
        "latency_ms_from_audit": audit.get("latency_ms"),
    }

    posted = {k: v[1] for k, v in per.items() if v[1] is not None}
    issued_at = {k: v[0] for k, v in per.items()}
    lat = [(posted[k] - issued_at[k]) * 1000.0 for k in posted]
    exact = len(per) == leg.events and len(lat) == posted_n
    if exact:
        lat_summary = latency_summary(lat)
        source = "per-invoice from the simulator (issued_at to first ERP posting)"
        audit_lat = audit.get("latency_ms", {})
        if abs(float(audit_lat.get("p99", 0.0)) - float(lat_summary["p99"] or 0.0)) > 0.05:
            source += "; WARNING: differs from the audit's p99"
    else:
        a = audit.get("latency_ms", {})
        lat_summary = {"n": posted_n, "p50": a.get("p50"), "p95": a.get("p95"),
                       "p99": a.get("p99"), "p99_9": None, "max": a.get("max"), "mean": None}
        source = "the simulator's audit (p99.9 unavailable: per-invoice reads failed)"
    first = min(issued_at.values()) if issued_at else (audit.get("first_issued_at") or t_start)
    last_arr = max(issued_at.values()) if issued_at else first
    ok, lag = keeps_up(leg.rate, len(issued_at), first, last_arr)
    arr_span = last_arr - first
    bin_s = auto_bin((max(posted.values()) - first) if posted else 0.0)
    restarted = stack.gateway_starts != starts  # a kill drill: the CPU counters restarted
    cpu = (None if cpu0 is None or cpu1 is None or not posted_n or restarted
           else (cpu1 - cpu0) / posted_n * 1e6)
    box = (None if cpu is None or not others or box0 is None or box1 is None
           else cpu + (box1 - box0) / posted_n * 1e6)
    return {
        "kind": "gateway",
        "available": True,
        "complete": drained,
        "events": leg.events,
        "completed": posted_n,
        "offered_rate": leg.rate,
        "throughput_eps": round(float(audit.get("throughput_eps", 0.0)), 1),
        "arrival_rate_eps": round((len(issued_at) - 1) / arr_span, 1) if arr_span > 0 else None,
        "keeps_up": ok,
        "schedule_lag_s": lag,
        "latency_ms": lat_summary,
        "redelivery_stalls": redelivery_stalls((issued_at[k], (posted[k] - issued_at[k]) * 1000.0)
                                               for k in posted),
        "latency_source": source,
        "cpu_us_per_event": None if cpu is None else round(cpu, 1),
        "cpu_scope": "the gateway process only (webhook ingress, router, ERP poster, ledger)",
        "cpu_us_per_event_box": None if box is None else round(box, 1),
        "peak_rss_mb": peak,
        "rss_mb_after": rss_now,
        "wall_s": round((max(posted.values()) - first) if posted else 0.0, 3),
        "audit": audit_out,
        "drill": driller.finish(result) if driller is not None else None,
        "sync_lane": None if probe is None else {
            "idle_ms": latency_summary(idle_lat), "under_load_ms": latency_summary(flood_lat),
            "requests": len(idle_lat) + len(flood_lat) + probe.errors, "errors": probe.errors,
            "load": ("the billing flood of this leg" if flood is None else
                     f"a usage flood of {usage} records at maximum rate alongside the "
                     "billing flood of this leg")},
        "usage": None if flood is None else flood.figures(),
        "series": {
            "bin_s": bin_s,
            "throughput_eps": rate_series(posted.values(), first, bin_s),
            "p99_ms": window_series(((posted[k], (posted[k] - issued_at[k]) * 1000.0)
                                     for k in posted), first, bin_s),
            "backlog": backlog_series(((t, i, p) for t, i, _a, p in samples), first,
                                      leg.rate, leg.events),
            "backlog_in_gateway": [(round(t - first, 3), a - p)
                                   for t, _i, a, p in samples if t >= first],
            "consumer_pending": [(round(t - first, 3), d) for t, d in metrics.samples
                                 if t >= first],
        },
        "cdf": cdf_points(lat),
    }
