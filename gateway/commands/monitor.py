"""``erpgw monitor``: a live terminal dashboard of a running gateway.

Fed only by the gateway's monitoring subjects (``<prefix>.mon.>``: metrics every second, KPIs
every few seconds, events), so it works against any gateway the NATS server reaches, remote
ones included, and never touches the gateway's state. ``--once --json`` prints one snapshot
for scripts; ``--json`` alone streams every document as a JSON line.

The view (``MonitorView``) is plain data plus a ``render`` function, so it is tested without a
terminal; the shell around it connects, feeds it and redraws four times a second.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ._common import add_tool_flags, nats_auth_for, nats_url_for, run_async

if TYPE_CHECKING:
    from actors.infra.bus import NatsAuth

__all__ = ["MonitorView", "register", "sparkline"]

_BARS = "▁▂▃▄▅▆▇█"
_STALE_S = 3.0  # a snapshot older than this is shown as stale (the metrics come every 1 s)
_SWITCH_S = 5.0  # follow another gateway instance once the followed one is silent this long


def register(sub: Any) -> None:
    p = sub.add_parser(
        "monitor", help="live dashboard of a running gateway (from erpgw.mon.> on NATS)",
        description="Live terminal dashboard of a running gateway: lanes, backlog, throughput,\n"
                    "posting latency, circuit breakers, rate limiter, dead letters, supervisor\n"
                    "restarts, SLA, the latest reconciliation and recent events. It reads only\n"
                    "the gateway's monitoring subjects (<prefix>.mon.>), so any gateway the NATS\n"
                    "server reaches can be watched, a remote one included. Ctrl-C quits.\n\n"
                    "--once prints one snapshot and exits; --once --json prints it as JSON\n"
                    "(metrics, kpi, recon, recent events); --json alone streams every document\n"
                    "as a JSON line. Subjects and fields: docs/monitoring.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  erpgw monitor\n  erpgw monitor --nats-url nats://gw-1:4222\n"
               "  erpgw monitor --once --json | jq .metrics.lanes")
    add_tool_flags(p)
    p.add_argument("--once", action="store_true",
                   help="print one snapshot and exit (with --json: the documents as JSON)")
    p.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for the broker and, with --once, for the "
                        "gateway's metrics and KPIs (default 10)")
    p.add_argument("--instance", metavar="HOST:PID",
                   help="watch only this gateway process when several share the broker")
    p.add_argument("--history", type=int, default=60, metavar="N",
                   help="snapshots of throughput in the sparkline (default 60)")
    p.set_defaults(func=cmd_monitor)


def sparkline(values: list[float], width: int) -> str:
    """Bars scaled to the largest value shown; the newest value last."""
    vals = values[-width:] if width > 0 else []
    top = max(vals, default=0.0)
    if top <= 0:
        return _BARS[0] * len(vals)
    return "".join(_BARS[min(len(_BARS) - 1, int(v / top * (len(_BARS) - 1) + 0.5))]
                   for v in vals)


class MonitorView:
    """What the dashboard knows: the latest documents of one gateway and recent events."""

    def __init__(self, prefix: str, *, instance: str | None = None, history: int = 60,
                 max_events: int = 12) -> None:
        self.prefix = prefix
        self.pinned = instance
        self.instance: str | None = instance
        self.history = max(1, history)
        self.metrics: dict[str, Any] | None = None
        self.kpi: dict[str, Any] | None = None
        self.recon: dict[str, Any] | None = None  # the latest reconciliation report
        self.metrics_at = 0.0  # local receipt time, for staleness
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.throughput: dict[str, deque[float]] = {}
        self.instances: dict[str, float] = {}  # instance -> last heard (local time)

    def _follows(self, doc: dict[str, Any], now: float) -> bool:
        inst = doc.get("instance")
        if not isinstance(inst, str):
            return self.pinned is None
        self.instances[inst] = now
        if self.pinned is not None:
            return inst == self.pinned
        if self.instance is None or now - self.instances.get(self.instance, 0.0) > _SWITCH_S:
            if inst != self.instance:
                self.instance = inst
                self.throughput.clear()
        return inst == self.instance

    def feed(self, subject: str, doc: Any, now: float | None = None) -> str | None:
        """Take one document from ``subject``; returns its kind ("metrics", "kpi", "event")
        or ``None`` when it is not for this view."""
        now = time.time() if now is None else now
        mon = f"{self.prefix}.mon."
        if not subject.startswith(mon) or not isinstance(doc, dict):
            return None
        rest = subject[len(mon):]
        if rest == "metrics":
            if not self._follows(doc, now):
                return None
            self.metrics, self.metrics_at = doc, now
            for lane, v in (doc.get("lanes") or {}).items():
                self.throughput.setdefault(lane, deque(maxlen=self.history)).append(
                    float(v.get("out_per_s") or 0.0))
            return "metrics"
        if rest == "kpi":
            if not self._follows(doc, now):
                return None
            self.kpi = doc
            return "kpi"
        inst = doc.get("instance")
        if self.pinned is not None and isinstance(inst, str) and inst != self.pinned:
            return None
        kind = rest.split(".", 1)[1] if rest.startswith("events.") else rest
        if rest == "recon.report":
            self.recon = doc
        self.events.append({"subject": subject, "kind": doc.get("kind", kind), **doc})
        return "event"

    def summary(self) -> dict[str, Any]:
        """The JSON of ``--once --json``: the latest documents and the recent events."""
        return {"instance": self.instance, "instances": sorted(self.instances),
                "metrics": self.metrics, "kpi": self.kpi, "recon": self.recon,
                "events": list(self.events),
                "throughput": {lane: list(h) for lane, h in self.throughput.items()}}

    # -- rendering -----------------------------------------------------------------------------

    def render(self, now: float | None = None, *, source: str = "") -> Any:
        """A rich renderable of the whole dashboard."""
        from rich.columns import Columns
        from rich.console import Group
        from rich.panel import Panel
        from rich.text import Text

        now = time.time() if now is None else now
        m = self.metrics
        if m is None:
            where = f" on {source}" if source else ""
            return Panel(Text(f"waiting for {self.prefix}.mon.metrics{where} … (is the gateway "
                              "running?)", style="yellow"), title="erpgw monitor")
        return Group(
            self._header(m, now, source),
            self._lanes(m),
            Columns([self._latency(m), self._sla(), self._recon()], expand=False),
            Columns([self._breakers(m), self._limiters(m), self._dlq(m)], expand=False),
            Columns([self._supervisor(m), self._events()], expand=False),
        )

    def _header(self, m: dict[str, Any], now: float, source: str) -> Any:
        from rich.text import Text

        age = now - self.metrics_at
        loop = m.get("event_loop") or {}
        t = Text()
        t.append("erpgw monitor  ", style="bold")
        t.append(f"{m.get('instance', '?')}  ", style="cyan")
        if source:
            t.append(f"{source}  ", style="dim")
        t.append(f"up {_duration(m.get('uptime_s'))}  snapshot #{m.get('seq')} ")
        t.append(f"{age:.1f}s ago", style="red bold" if age > _STALE_S else "green")
        t.append(f"  loop lag {loop.get('lag_ms', 0):.1f} ms (max {loop.get('lag_max_ms', 0):.1f})")
        if self.kpi is not None:
            ok = (self.kpi.get("sla") or {}).get("ok", True)
            t.append("  SLA ")
            t.append("ok" if ok else "BREACHED", style="green" if ok else "red bold")
        others = [i for i in self.instances if i != self.instance]
        if others:
            t.append(f"  (+{len(others)} other gateway(s): --instance)", style="yellow")
        return t

    def _lanes(self, m: dict[str, Any]) -> Any:
        from rich.table import Table

        t = Table(title="lanes", title_justify="left", expand=False)
        for col in ("lane / consumer", "in/s", "out/s", "throughput (out/s)", "total",
                    "pending", "ack pending", "in flight", "failed"):
            t.add_column(col, justify="left" if col in ("lane / consumer",
                                                        "throughput (out/s)") else "right")
        for lane, v in (m.get("lanes") or {}).items():
            hist = list(self.throughput.get(lane, []))
            t.add_row(f"[bold]{lane}[/]", _f(v.get("in_per_s")), _f(v.get("out_per_s")),
                      sparkline(hist, 30) + f" {max(hist, default=0):.0f}/s max",
                      f"{v.get('in', 0)} in / {v.get('out', 0)} out", _i(v.get("pending")),
                      _i(v.get("ack_pending")), "", "")
            for name, c in (v.get("consumers") or {}).items():
                t.add_row(f"  {name}", "", _f(c.get("processed_per_s")), "",
                          str(c.get("processed", 0)), _i(c.get("pending")),
                          _i(c.get("ack_pending")), _i(c.get("in_flight")),
                          _warn(c.get("failed", 0)))
        return t

    def _latency(self, m: dict[str, Any]) -> Any:
        from rich.table import Table

        lat = (m.get("latency_ms") or {}).get("invoice_posting") or {}
        post = m.get("postings") or {}
        t = Table(title="invoice posting", title_justify="left", show_header=False)
        t.add_column("")
        t.add_column("", justify="right")
        for k in ("p50", "p95", "p99", "max"):
            t.add_row(f"latency {k}", f"{lat.get(k, 0):.0f} ms")
        t.add_row("posted", f"{post.get('created', 0)} (+{post.get('replayed', 0)} replayed)")
        t.add_row("rate", f"{_f(post.get('per_s'))}/s")
        if self.kpi is not None:
            rec = self.kpi.get("failure_recovery") or {}
            t.add_row("recoveries", str(rec.get("incidents", 0)))
            t.add_row("last recovery", _secs(rec.get("last_s")))
            if rec.get("ongoing_s") is not None:
                t.add_row("[red]outage for[/]", _secs(rec.get("ongoing_s")))
        return t

    def _sla(self) -> Any:
        from rich.table import Table

        t = Table(title="SLA", title_justify="left")
        for col in ("KPI", "value", "target", ""):
            t.add_column(col, justify="left" if col == "KPI" else "right")
        if self.kpi is None:
            t.add_row("(waiting for mon.kpi)", "", "", "")
            return t
        for name, c in ((self.kpi.get("sla") or {}).get("checks") or {}).items():
            t.add_row(name, _f(c.get("value")), _f(c.get("target")),
                      "[red bold]BREACHED[/]" if c.get("breached") else "[green]ok[/]")
        return t

    def _recon(self) -> Any:
        from rich.table import Table

        t = Table(title="reconciliation", title_justify="left")
        t.add_column("")
        t.add_column("", justify="right")
        r = self.recon
        self._close_row(t)
        if r is None:
            t.add_row("(no mon.recon.report yet)", "")
            return t
        breaks = {k: v for k, v in (r.get("breaks") or {}).items() if v}
        t.add_row("period", str(r.get("period") or "all"))
        t.add_row("checked / matched", f"{_i(r.get('checked'))} / {_i(r.get('matched'))}")
        t.add_row("breaks", ", ".join(f"{k} {v}" for k, v in breaks.items()) or "[green]none[/]")
        t.add_row("repaired", _i(r.get("repaired")))
        t.add_row("accuracy", _f(r.get("accuracy")))
        return t

    def _close_row(self, t: Any) -> None:
        """The ``close.blocking`` KPI: items blocking the close (``erpgw close status``)."""
        close = (self.kpi or {}).get("close")
        if not isinstance(close, dict):
            t.add_row("close blocking", "-")
            return
        periods = close.get("periods") or {}
        per = ", ".join(f"{p} {v.get('blocking', 0)}" for p, v in sorted(periods.items()))
        t.add_row("close blocking", f"{_warn(close.get('blocking'))} ({per})" if per
                  else _warn(close.get("blocking")))

    def _breakers(self, m: dict[str, Any]) -> Any:
        from rich.table import Table

        t = Table(title="circuit breakers", title_justify="left")
        for col in ("breaker", "state", "trips", "failures", "retry in"):
            t.add_column(col, justify="left" if col in ("breaker", "state") else "right")
        colour = {"closed": "green", "open": "red bold", "half_open": "yellow"}
        for name, b in (m.get("breakers") or {}).items():
            state = str(b.get("state"))
            t.add_row(name, f"[{colour.get(state, 'white')}]{state}[/]", str(b.get("trips", 0)),
                      str(b.get("failures", 0)), _secs(b.get("retry_in_s") or None))
        return t

    def _limiters(self, m: dict[str, Any]) -> Any:
        from rich.table import Table

        t = Table(title="rate limiters", title_justify="left")
        for col in ("limiter", "rate/s", "burst", "tokens", "in flight", "hold", "429s"):
            t.add_column(col, justify="left" if col == "limiter" else "right")
        for name, v in (m.get("limiters") or {}).items():
            rate = f"{_f(v.get('rate'))}/{_f(v.get('configured_rate'))}"
            t.add_row(name, rate, str(v.get("burst")), _f(v.get("tokens")),
                      str(v.get("in_flight")), _secs(v.get("hold_s") or None),
                      _warn(v.get("throttles", 0)))
        return t

    def _dlq(self, m: dict[str, Any]) -> Any:
        from rich.table import Table

        d = m.get("dlq") or {}
        t = Table(title="dead letters", title_justify="left", show_header=False)
        t.add_column("")
        t.add_column("", justify="right")
        t.add_row("this process", _warn(d.get("dead_lettered", 0)))
        t.add_row("stored (all time)", _i(d.get("stored")))
        t.add_row("unresolved", _warn(d.get("unresolved")))
        for key, n in sorted((d.get("by_code") or {}).items(), key=lambda kv: -kv[1])[:4]:
            t.add_row(f"  {key}", str(n))
        return t

    def _supervisor(self, m: dict[str, Any]) -> Any:
        from rich.table import Table

        s = m.get("supervisor") or {}
        t = Table(title=f"supervisor {s.get('name', '')}: {s.get('restarts', 0)} restart(s)",
                  title_justify="left")
        for col in ("actor", "state", "restarts", "last error"):
            t.add_column(col, justify="right" if col == "restarts" else "left")
        for name, c in (s.get("children") or {}).items():
            state = str(c.get("state"))
            t.add_row(name, f"[{'green' if state == 'running' else 'yellow'}]{state}[/]",
                      _warn(c.get("restarts", 0)), _short(c.get("last_error") or "", 40))
        return t

    def _events(self) -> Any:
        from rich.table import Table

        t = Table(title="recent events", title_justify="left")
        for col in ("time", "kind", "what"):
            t.add_column(col)
        for ev in reversed(self.events):
            at = ev.get("at")
            when = time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(
                at, int | float) else ""
            t.add_row(when, str(ev.get("kind")), _short(describe_event(ev), 70))
        if not self.events:
            t.add_row("", "", "(none yet)")
        return t


def describe_event(ev: dict[str, Any]) -> str:
    """One line for a monitoring event of any kind."""
    kind = ev.get("kind")
    if kind == "breaker":
        return f"{ev.get('breaker')} {ev.get('source')} → {ev.get('target')}: {ev.get('reason')}"
    if kind == "dlq":
        return f"{ev.get('lane')} {ev.get('code')} {ev.get('business_key') or ''}".strip()
    if kind == "sla":
        return (f"{ev.get('sla')} breach {ev.get('event')}: {_f(ev.get('value'))} vs target "
                f"{_f(ev.get('target'))}")
    if kind == "supervisor":
        err = f": {ev['error']}" if ev.get("error") else ""
        return f"{ev.get('child')} {ev.get('event')} (restarts {ev.get('restarts')}){err}"
    body = {k: v for k, v in ev.items() if k not in ("subject", "kind", "at", "instance")}
    return msgspec.json.encode(body).decode()


def _f(v: Any) -> str:
    if not isinstance(v, int | float):
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.2f}"


def _i(v: Any) -> str:
    return str(v) if isinstance(v, int) else "-"


def _warn(v: Any) -> str:
    return f"[red]{v}[/]" if isinstance(v, int | float) and v > 0 else _i(v)


def _secs(v: Any) -> str:
    return f"{v:.1f} s" if isinstance(v, int | float) else "-"


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _duration(v: Any) -> str:
    s = int(v) if isinstance(v, int | float) else 0
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s"


# -- the shell ---------------------------------------------------------------------------------

@asynccontextmanager
async def _subscription(url: str, subject: str, wait: float = 10.0,
                        auth: NatsAuth | None = None) -> AsyncIterator[Any]:
    """A core NATS subscription to ``subject``; reconnects by itself once connected.

    Raises ``BrokerUnavailable`` when the server cannot be reached within ``wait`` seconds.
    """
    import nats  # the one import of the client in the CLI: a core subscription, nothing else

    from actors.infra.bus import BrokerUnavailable, mask_url, server_list

    async def _quiet(*_args: Any) -> None:
        return None

    try:
        # nats-py retries a first connection forever when reconnecting is allowed: bound it.
        with anyio.fail_after(wait):
            nc = await nats.connect(server_list(url), name="erpgw-monitor",
                                    connect_timeout=min(3, wait),
                                    allow_reconnect=True, max_reconnect_attempts=-1,
                                    reconnect_time_wait=0.5, error_cb=_quiet,
                                    disconnected_cb=_quiet, reconnected_cb=_quiet,
                                    **(auth.options() if auth else {}))
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"cannot reach NATS at {mask_url(url)} (waited {wait:g} s): "
                                f"{exc!r}") from exc
    try:
        yield await nc.subscribe(subject)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await nc.close()


def _decode(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None


async def _once(args: argparse.Namespace, url: str, prefix: str,
                auth: NatsAuth | None = None) -> int:
    from contracts import GatewayError

    view = MonitorView(prefix, instance=args.instance, history=args.history)
    async with _subscription(url, f"{prefix}.mon.>", args.wait, auth) as sub:
        with anyio.move_on_after(args.wait):
            async for msg in sub.messages:
                view.feed(msg.subject, _decode(msg.data))
                if view.metrics is not None and view.kpi is not None:
                    break
    if view.metrics is None:
        raise GatewayError(
            f"no {prefix}.mon.metrics from a gateway on {url} within {args.wait:g} s; is "
            "`erpgw up` running there (same --nats-url and prefix)?", code="monitor.no_data")
    if args.json:
        print(msgspec.json.encode(view.summary()).decode())
    else:
        from rich.console import Console

        Console().print(view.render(source=url))
    return 0


async def _until_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _stream_json(url: str, prefix: str, instance: str | None, wait: float,
                       auth: NatsAuth | None = None) -> int:
    async with _subscription(url, f"{prefix}.mon.>", wait, auth) as sub, \
            anyio.create_task_group() as tg:
        tg.start_soon(_until_signal, tg.cancel_scope)
        async for msg in sub.messages:
            doc = _decode(msg.data)
            if instance and isinstance(doc, dict) and doc.get("instance") not in (None,
                                                                                   instance):
                continue
            sys.stdout.write(msgspec.json.encode({"subject": msg.subject, "doc": doc})
                             .decode() + "\n")
            sys.stdout.flush()
    return 0


async def _live(args: argparse.Namespace, url: str, prefix: str,
                auth: NatsAuth | None = None) -> int:
    from rich.console import Console
    from rich.live import Live

    view = MonitorView(prefix, instance=args.instance, history=args.history)
    console = Console()

    async def feed(sub: Any) -> None:
        async for msg in sub.messages:
            view.feed(msg.subject, _decode(msg.data))

    async with _subscription(url, f"{prefix}.mon.>", args.wait, auth) as sub:
        with Live(view.render(source=url), console=console, auto_refresh=False,
                  screen=console.is_terminal, redirect_stdout=False,
                  redirect_stderr=False) as live:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_until_signal, tg.cancel_scope)
                tg.start_soon(feed, sub)
                while True:
                    live.update(view.render(source=url), refresh=True)
                    await anyio.sleep(0.25)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    url, prefix = nats_url_for(args)
    auth = nats_auth_for(args, "monitor")  # read-only on <prefix>.mon.>
    if args.once:
        return int(run_async(lambda: _once(args, url, prefix, auth)))
    if args.json:
        return int(run_async(lambda: _stream_json(url, prefix, args.instance, args.wait, auth)))
    return int(run_async(lambda: _live(args, url, prefix, auth)))
