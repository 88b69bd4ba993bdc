"""The bench's own webhook load generator: ``python -m bench._loadgen CONFIG_JSON``.

Theory of operation: every webhook of a run is built and signed *before the clock starts*
(the same ``invoice.finalized`` events, signature scheme and secret handling as the billing
simulator: ``contracts.platforms.signing``), so the generator spends its measured time on
sending only. A lean keep-alive ``aiohttp`` client then POSTs them to the system under test:
event ``k`` is due ``k / rate`` seconds after the first (all at once at maximum load), and never
more than ``window`` (64, the simulator's bound) are sent and not yet answered. An event's
clock starts right before its first POST (``sent_at``), as the simulator stamps ``issued_at``
when a delivery slot frees; an answer other than 2xx is retried (up to ``retries`` times) and
the event keeps its first ``sent_at``.

The generator runs in a process of its own so that its CPU is its own: the figures dict it
prints as one JSON line on stdout carries ``cpu_s`` (user + system from the first POST to the
last answer), ``sent_at`` per event key (the invoice id), ``errors`` (events never accepted),
``wall_s`` and ``amount_issued`` (invoice totals per currency). The pacing and admission rule
is ``due_now`` (pure, unit-tested).
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from contracts.platforms.billing import BillingEvent, EventData
from contracts.platforms.signing import SIGNATURE_HEADER, sign
from sim import generate_invoices

__all__ = ["LoadConfig", "build_webhooks", "due_now", "main", "run_load"]

_event_enc = msgspec.json.Encoder()


@dataclass(frozen=True)
class LoadConfig:
    url: str  # the webhook endpoint (loopback)
    events: int
    secret: str
    rate: float | None = None  # None or 0: maximum load
    window: int = 64
    seed: int = 7
    start_index: int = 1  # the first invoice number (in_<start_index>)
    retries: int = 20
    timeout_s: float = 30.0


def due_now(sent: int, outstanding: int, elapsed: float, rate: float | None, total: int,
            window: int) -> int:
    """How many further events may be sent now.

    ``sent`` events were sent so far and ``outstanding`` of them are not yet answered; at a
    fixed ``rate`` event k (0-based) is due at ``k / rate`` seconds (event 0 at once), at
    maximum load (``rate`` None or 0) every event is due. The answer never lets more than
    ``window`` be outstanding and never exceeds ``total``. Raises ``ValueError`` for a window
    below 1 or counts that contradict each other.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if not 0 <= outstanding <= sent <= total:
        raise ValueError(f"need 0 <= outstanding ({outstanding}) <= sent ({sent}) <= total "
                         f"({total})")
    due = total if not rate else min(total, math.floor(elapsed * rate) + 1)
    return max(0, min(due - sent, window - outstanding))


def build_webhooks(cfg: LoadConfig, now: float | None = None,
                   amounts: dict[str, int] | None = None) -> list[tuple[str, bytes, str]]:
    """``(invoice id, body, signature header)`` of every event, in issue order; ``amounts``,
    when given, gains each currency's invoice totals (what the ERP should end up holding)."""
    at = time.time() if now is None else now
    out = []
    for inv in generate_invoices(cfg.events, cfg.seed, cfg.start_index, now=at):
        if amounts is not None:
            cur = inv.currency.upper()
            amounts[cur] = amounts.get(cur, 0) + inv.total
        body = _event_enc.encode(BillingEvent(id=f"evt_{inv.id}", type="invoice.finalized",
                                              created=inv.created, data=EventData(object=inv)))
        out.append((inv.id, body, sign(cfg.secret, body, int(at))))
    return out


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def run_load(cfg: LoadConfig) -> dict[str, Any]:
    """Send every webhook of ``cfg`` (see the module docstring); the figures dict."""
    amounts: dict[str, int] = {}
    hooks = build_webhooks(cfg, amounts=amounts)  # before the clock
    sent_at: dict[str, float] = {}
    errors = 0
    statuses: dict[str, int] = {}
    wake = asyncio.Event()
    outstanding = 0
    conn = aiohttp.TCPConnector(limit=cfg.window, force_close=False)
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)

    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as http:
        async def one(key: str, body: bytes, sig: str) -> None:
            nonlocal outstanding, errors
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sig}
            try:
                for attempt in range(cfg.retries + 1):
                    if attempt:
                        await asyncio.sleep(min(1.0, 0.05 * attempt))
                    try:
                        async with http.post(cfg.url, data=body, headers=headers) as resp:
                            await resp.read()
                            status = resp.status
                    except (aiohttp.ClientError, TimeoutError):
                        status = 0
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    if 200 <= status < 300:
                        return
                errors += 1
            finally:
                outstanding -= 1
                wake.set()

        tasks: list[asyncio.Task[None]] = []
        cpu0 = _cpu_s()
        t0 = time.monotonic()
        sent = 0
        while sent < len(hooks):
            elapsed = time.monotonic() - t0
            n = due_now(sent, outstanding, elapsed, cfg.rate, len(hooks), cfg.window)
            if n == 0:
                wake.clear()
                pause = (None if outstanding >= cfg.window or not cfg.rate
                         else max(0.0, sent / cfg.rate - elapsed))
                try:
                    await asyncio.wait_for(wake.wait(), pause)
                except TimeoutError:
                    pass
                continue
            for key, body, sig in hooks[sent:sent + n]:
                sent_at[key] = time.time()
                outstanding += 1
                tasks.append(asyncio.ensure_future(one(key, body, sig)))
            sent += n
        await asyncio.gather(*tasks)
        wall = time.monotonic() - t0
        cpu = _cpu_s() - cpu0
    return {"kind": "generator", "events": len(hooks), "errors": errors,
            "statuses": statuses, "amount_issued": amounts, "cpu_s": round(cpu, 4),
            "wall_s": round(wall, 3),
            "cpu_us_per_event": round(cpu / len(hooks) * 1e6, 1) if hooks else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "sent_at": sent_at}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench._loadgen CONFIG_JSON", file=sys.stderr)
        return 2
    cfg = LoadConfig(**json.loads(args[0]))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        out = asyncio.run(run_load(cfg))
    else:
        out = uvloop.run(run_load(cfg))
    print(json.dumps(out), flush=True)
    return 0 if out["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
