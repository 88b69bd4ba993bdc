"""One billing leg through the real gateway, loaded by the bench's own generator.

Theory of operation: the same ``bench._loadgen`` process that loads the webhook baselines
(webhooks built and signed before the clock, one keep-alive client, 64 in flight, the leg's
pace) POSTs ``invoice.finalized`` webhooks to the gateway's ``/webhooks/billing`` with the
secret the stack configured. The simulator then only plays the ERP (and the other platforms),
so its CPU is what the ERP costs, as in the baselines' legs. The generator numbers its invoices
from a range the simulator never issues (``GEN_FIRST_INDEX``), so they cannot collide with a
bill run of the flood leg or the RSS check.

The simulator's audit counts what billing issued; these invoices it did not issue, so it
counts their postings as ``unexpected``. Completion is therefore read from the ERP's postings
(the audit's ``postings`` total, polled), and correctness per invoice after the leg:
``GET /erp/v1/journal-entries?externalId=<id>`` gives each invoice's postings (none: lost;
more than one: duplicate) and its first ``acceptedAt`` (latency ends there; it starts at the
generator's first POST of the webhook). CPU: the gateway process from the first POST to the
last posting; the box figure adds nats-server, the simulator and the generator over the same
window. ``revenue`` is how far the gateway's revenue lane got by then (the audit's revenue
lines and batches), as the baselines report theirs.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.stack import Stack

from ._gateway import GatewayLeg, _sim, _sum_cpu, gateway_cpu, progress_bar
from ._proc import peak_rss_mb, rss_mb
from ._report import keeps_up
from ._stats import (
    auto_bin,
    cdf_points,
    latency_summary,
    rate_series,
    redelivery_stalls,
    window_series,
)

__all__ = ["GEN_FIRST_INDEX", "run_generated_leg"]

GEN_FIRST_INDEX = 800_001  # generator invoices: in_800001 upwards (bill runs count from 1)
LOOKUP_CONCURRENCY = 16


async def _postings(http: aiohttp.ClientSession, base: str,
                    ids: list[str]) -> dict[str, tuple[int, float | None, tuple[str, int]]]:
    """``{id: (postings, first acceptedAt or None, first posting's currency and amount)}``."""
    out: dict[str, tuple[int, float | None, tuple[str, int]]] = {}
    queue = list(reversed(ids))

    async def worker() -> None:
        while queue:
            inv = queue.pop()
            posts = await _sim(http, "GET", f"{base}/erp/v1/journal-entries?externalId={inv}")
            items = posts.get("items", [])
            if not items:
                out[inv] = (0, None, ("", 0))
                continue
            first = min(items, key=lambda p: p["seq"])
            out[inv] = (len(items), float(first["acceptedAt"]),
                        (str(first.get("currency", "")).upper(), int(first.get("amount") or 0)))

    await asyncio.gather(*(worker() for _ in range(LOOKUP_CONCURRENCY)))
    return out


async def run_generated_leg(stack: Stack, leg: GatewayLeg, *, stall_timeout: float,
                            say: Callable[[str], None],
                            box_pids: tuple[int, ...] = ()) -> dict[str, Any]:
    """Drive one leg through the gateway with ``bench._loadgen``; the figures dict (the shape
    of ``bench._gateway.run_gateway_leg``'s, ``audit`` read from the ERP's postings).
    ``leg.first_index`` is the generator's first invoice number."""
    base = stack.sim_url
    pid = stack.gateway_pid
    ids = leg.invoice_ids
    gen_cfg = {"url": f"{stack.gateway_url}/webhooks/billing", "events": leg.events,
               "secret": stack.webhook_secret, "rate": leg.rate, "window": 64,
               "seed": stack.seed, "start_index": leg.first_index}
    others = [p for p in box_pids if p]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await _sim(http, "POST", f"{base}/sim/v1/reset")
        cpu0, box0 = gateway_cpu(stack), _sum_cpu(others)
        t_start = time.time()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._loadgen", json.dumps(gen_cfg),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
        gen_task = asyncio.ensure_future(proc.communicate())
        drained, cpu1, box1 = False, None, None
        last, moved = -1, time.monotonic()
        postings = 0
        audit: dict[str, Any] = {}
        try:
            while True:
                audit = await stack.audit()
                postings = int(audit.get("postings", 0))
                say(f"{progress_bar(postings / max(1, leg.events))} gateway (generator load): "
                    f"posted {postings}/{leg.events}")
                if postings >= leg.events and gen_task.done():
                    cpu1, box1, drained = gateway_cpu(stack), _sum_cpu(others), True
                    break
                if postings != last:
                    last, moved = postings, time.monotonic()
                elif time.monotonic() - moved > stall_timeout:
                    cpu1, box1 = gateway_cpu(stack), _sum_cpu(others)
                    break
                await asyncio.sleep(0.1)
            out, _ = await asyncio.wait_for(gen_task, stall_timeout)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        try:
            gen: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            gen = {"errors": leg.events, "reason": f"generator exited {proc.returncode}"}
        peak, rss_now = peak_rss_mb(pid), rss_mb(pid)
        say("gateway: reading per-invoice postings from the simulated ERP")
        per = await _postings(http, base, ids)

    sent_at: dict[str, float] = gen.pop("sent_at", {}) or {}
    revenue = audit.get("revenue") or {}
    posted = {k: v[1] for k, v in per.items() if v[1] is not None}
    lat = [(posted[k] - sent_at[k]) * 1000.0 for k in posted if k in sent_at]
    lost = sum(1 for k in ids if k not in per or per[k][0] == 0)
    dups = sum(max(0, per[k][0] - 1) for k in ids if k in per)
    amount_posted: dict[str, int] = {}
    for count, _at, (cur, amount) in per.values():
        if count:
            amount_posted[cur] = amount_posted.get(cur, 0) + amount
    amount_issued = gen.get("amount_issued") or {}
    first = min(sent_at.values()) if sent_at else t_start
    last_arr = max(sent_at.values()) if sent_at else first
    ok, lag = keeps_up(leg.rate, len(sent_at), first, last_arr)
    arr_span = last_arr - first
    span = (max(posted.values()) - first) if posted else 0.0
    n = len(posted)
    cpu = None if cpu0 is None or cpu1 is None or not n else (cpu1 - cpu0) / n * 1e6
    gen_cpu = float(gen.get("cpu_s") or 0.0)
    box = (None if cpu is None or not others or box0 is None or box1 is None
           else cpu + ((box1 - box0) + gen_cpu) / n * 1e6)
    bin_s = auto_bin(span)
    accepted = int((gen.get("statuses") or {}).get("200", 0))
    return {
        "kind": "gateway",
        "available": True,
        "complete": drained and lost == 0,
        "events": leg.events,
        "completed": n,
        "offered_rate": leg.rate,
        "throughput_eps": round(n / span, 1) if span > 0 else 0.0,
        "arrival_rate_eps": round((len(sent_at) - 1) / arr_span, 1) if arr_span > 0 else None,
        "keeps_up": ok,
        "schedule_lag_s": lag,
        "latency_ms": latency_summary(lat),
        "redelivery_stalls": redelivery_stalls((sent_at[k], (posted[k] - sent_at[k]) * 1000.0)
                                               for k in posted if k in sent_at),
        "latency_source": ("per-invoice: the generator's first POST of the webhook to the "
                           "first ERP posting's acceptedAt"),
        "load": "bench._loadgen (the same generator as the webhook baselines)",
        "cpu_us_per_event": None if cpu is None else round(cpu, 1),
        "cpu_scope": "the gateway process only (webhook ingress, router, ERP poster, ledger)",
        "cpu_us_per_event_box": None if box is None else round(box, 1),
        "peak_rss_mb": peak,
        "rss_mb_after": rss_now,
        "wall_s": round(span, 3),
        "generator": gen,
        "audit": {
            "issued": len(sent_at), "accepted": accepted, "posted": n,
            "postings": postings, "lost": lost, "duplicates": dups, "unexpected": 0,
            "sum_ok": bool(amount_issued) and amount_posted == amount_issued,
            "amount_issued": amount_issued, "amount_posted": amount_posted,
            "dead_lettered": 0, "dlq_exact": True, "drained": drained,
            "source": "the ERP's postings per invoice (the simulator did not issue these)",
        },
        # The revenue lane's progress at the leg's end (it is not waited on), as the
        # baselines report theirs.
        "revenue": {"lines_uploaded": int(revenue.get("lines", 0)),
                    "uploads": int(revenue.get("batches", 0)),
                    "source": "the simulator's audit when the last ERP posting was seen"},
        "drill": None,
        "sync_lane": None,
        "usage": None,
        "series": {
            "bin_s": bin_s,
            "throughput_eps": rate_series(posted.values(), first, bin_s),
            "p99_ms": window_series(((posted[k], (posted[k] - sent_at[k]) * 1000.0)
                                     for k in posted if k in sent_at), first, bin_s),
            "backlog": [],
        },
        "cdf": cdf_points(lat),
    }
