"""``erpgw bench peak-billing --gateways 1,2,3 --cluster 3``: throughput at maximum load and
latency p99 per number of gateway processes on one nats-server cluster.

Theory of operation: for each N in ``--gateways``, a fresh stack (``gateway.stack.Stack``:
``--cluster`` nats-server nodes on loopback with R3 streams, the simulator, N ``erpgw up``
processes, docs/scale-out.md) takes one leg at maximum load from the bench's generator
(``bench._gateway_gen.run_generated_leg``, the same leg the single-process bench runs). The
generator POSTs to the round-robin proxy in front of the N processes (``gateway.rrproxy``;
with N = 1 too, so every N pays the same hop); the proxy runs in the bench's own process.
Each process's CPU time (``/proc/<pid>/stat``) is read when the leg starts and when its last
invoice is posted: every gateway process, every nats-server node, the simulator, the generator
(its own figure) and the bench process (the proxy), so the report can say where the cores
went; the machine's own busy and iowait shares over the same window (``/proc/stat``, other
work included) say how much of the box the stack had. The stack is stopped before the next N
starts. Nothing is compared with a wall-clock target.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from contracts import GatewayError
from gateway.broker import free_port
from gateway.rrproxy import RoundRobinProxy
from gateway.stack import Stack

from ._gateway import GatewayLeg
from ._gateway_gen import GEN_FIRST_INDEX, run_generated_leg
from ._proc import cpu_seconds, machine

__all__ = ["parse_gateways", "render_scale", "run_scale", "scale_summary"]

MAX_GATEWAYS = 8  # as ``erpgw demo --gateways``
GROUPS = ("gateways", "nats", "simulator", "generator", "proxy")


def parse_gateways(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` → ``(1, 2, 3)`` (sorted, once each); raises ``ValueError`` naming
    ``--gateways`` for anything else than whole numbers from 1 to 8."""
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise ValueError(f"--gateways: {part!r} is not a whole number") from None
        if not 1 <= n <= MAX_GATEWAYS:
            raise ValueError(f"--gateways: {n} is out of range: 1 to {MAX_GATEWAYS}")
        out.add(n)
    if not out:
        raise ValueError("--gateways needs at least one count, e.g. 1,2,3")
    return tuple(sorted(out))


def _pids(stack: Stack) -> dict[str, int]:
    """Every process of the stack whose CPU the report splits, by name."""
    pids = {f"gateway-{i}": p for i, p in enumerate(stack.gateway_pids(), 1) if p}
    if stack.nats_cluster is not None:
        pids.update({n.server_name: n.pid for n in stack.nats_cluster.nodes if n.pid})
    elif stack.broker is not None and stack.broker.pid:
        pids["nats"] = stack.broker.pid
    sim = getattr(stack, "_sim", None)
    if sim is not None and sim.poll() is None:
        pids["simulator"] = sim.pid
    return pids


def machine_cpu() -> tuple[int, int, int] | None:
    """(total, idle, iowait) jiffies of all cores so far, from ``/proc/stat``; None if
    unreadable."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 6:
        return None
    ticks = [int(x) for x in fields[1:9]]
    return sum(ticks), ticks[3], ticks[4]


def machine_busy(before: tuple[int, int, int] | None,
                 after: tuple[int, int, int] | None) -> dict[str, float | None]:
    """Shares of the machine's CPU time between two ``machine_cpu`` readings: ``busy`` (not
    idle nor waiting for I/O, whoever ran) and ``iowait``."""
    if before is None or after is None or after[0] <= before[0]:
        return {"busy": None, "iowait": None}
    total = after[0] - before[0]
    idle, iowait = after[1] - before[1], after[2] - before[2]
    return {"busy": round((total - idle - iowait) / total, 3), "iowait": round(iowait / total, 3)}


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _group(name: str) -> str:
    if name.startswith("gateway-"):
        return "gateways"
    return name if name in ("simulator", "generator", "proxy") else "nats"


def scale_summary(leg: dict[str, Any], cpu_s: dict[str, float], wall_s: float,
                  gateways: int, shares: list[int],
                  box: dict[str, Any] | None = None) -> dict[str, Any]:
    """One N's figures from its leg (``run_generated_leg``'s dict), the CPU seconds each
    process used during it and the leg's wall time: throughput, latency, correctness, and the
    cores each process and each group kept busy on average (CPU seconds / wall seconds)."""
    cores = {k: round(v / wall_s, 2) if wall_s > 0 else None for k, v in sorted(cpu_s.items())}
    by_group: dict[str, float] = dict.fromkeys(GROUPS, 0.0)
    for k, v in cpu_s.items():
        by_group[_group(k)] += v
    audit = leg.get("audit") or {}
    lat = leg.get("latency_ms") or {}
    return {
        "gateways": gateways,
        "complete": bool(leg.get("complete")),
        "events": leg.get("events"),
        "completed": leg.get("completed"),
        "throughput_eps": leg.get("throughput_eps"),
        "latency_ms": {k: lat.get(k) for k in ("p50", "p95", "p99", "max")},
        "lost": audit.get("lost"),
        "duplicates": audit.get("duplicates"),
        "wall_s": round(wall_s, 2),
        "cpu_s": {k: round(v, 2) for k, v in sorted(cpu_s.items())},
        "cores": cores,
        "cores_by_group": {k: round(v / wall_s, 2) if wall_s > 0 else None
                           for k, v in by_group.items()},
        "cores_total": round(sum(cpu_s.values()) / wall_s, 2) if wall_s > 0 else None,
        "processed_by_gateway": shares,
        # The whole machine over the same window (other work included): busy and iowait
        # shares of all its cores, and the 1-minute load average at the start and the end.
        "machine": box or {},
    }


def bottleneck(by: dict[str, dict[str, Any]], nproc: int | None) -> str:
    """Where the cores went in the run with the most processes, in one sentence."""
    if not by:
        return "no run"
    ran = {k: v for k, v in by.items() if v.get("available", True)}
    if not ran:
        return "no run completed"
    top = ran[max(ran, key=int)]
    groups = {k: v for k, v in top["cores_by_group"].items() if v is not None}
    if not groups or top["cores_total"] is None:
        return "CPU not readable (no /proc)"
    first = max(groups, key=lambda k: groups[k])
    busy = top["cores_total"]
    saturated = nproc is not None and busy >= 0.85 * nproc
    text = (f"with {top['gateways']} gateway process(es) the stack kept {busy:.2f} of "
            f"{nproc} cores busy{' (saturated)' if saturated else ''}; the largest share: "
            f"{first} {groups[first]:.2f} cores ("
            + ", ".join(f"{k} {v:.2f}" for k, v in groups.items() if k != first) + ")")
    box = top.get("machine") or {}
    if box.get("busy") is not None and nproc:
        others = box["busy"] * nproc - busy
        text += (f"; the machine was {100 * box['busy']:.0f} % busy "
                 f"({max(0.0, others):.2f} cores of other work) and "
                 f"{100 * box['iowait']:.0f} % waiting for I/O")
        if box.get("loadavg_start") is not None:
            text += f", load average {box['loadavg_start']:g} -> {box['loadavg_end']:g}"
    return text


async def _one(n: int, opts: Any, workdir: Path, say: Any) -> dict[str, Any]:
    roles = tuple(opts.roles) if len(opts.roles) == n else ()
    stack = Stack(workdir / f"gateways-{n}", seed=opts.seed,
                  sync_interval="always" if opts.fsync == "always" else "2m",
                  cluster=opts.cluster, gateways=n, roles=roles)
    extra_proxy: RoundRobinProxy | None = None
    try:
        await stack.start()
        if stack.proxy is None:  # one process: the same hop as with several
            extra_proxy = RoundRobinProxy(stack.ingress_urls(), port=free_port())
            await extra_proxy.start()
            stack.proxy = extra_proxy
        pids = _pids(stack)
        events = opts.invoices or 2000
        snap: dict[str, Any] = {}

        def reading() -> dict[str, Any]:
            return {"t": time.monotonic(), "cpu": {k: cpu_seconds(p) for k, p in pids.items()},
                    "me": cpu_seconds(os.getpid()), "box": machine_cpu(), "load": _loadavg()}

        async def watch_drained() -> None:
            # The CPU window ends when the last invoice is posted, not after the leg's
            # per-invoice look-ups that follow it.
            while int((await stack.audit()).get("postings", 0)) < events:
                await asyncio.sleep(0.2)
            snap.update(reading())

        start = reading()
        watcher = asyncio.ensure_future(watch_drained())
        try:
            leg = await run_generated_leg(stack, GatewayLeg("max", events, None,
                                                            GEN_FIRST_INDEX),
                                          stall_timeout=opts.stall_timeout, say=say)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        end = snap or reading()  # a stalled leg: up to when it gave up
        shares = [int(w["processed"]) for w in await stack.work_shares()]
    finally:
        if extra_proxy is not None:
            stack.proxy = None
            await extra_proxy.stop()
        await stack.close()
    cpu = {k: b1 - b0 for k in pids
           if (b0 := start["cpu"][k]) is not None and (b1 := end["cpu"][k]) is not None}
    if start["me"] is not None and end["me"] is not None:
        cpu["proxy"] = end["me"] - start["me"]  # the bench process: the proxy and its polling
    cpu["generator"] = float((leg.get("generator") or {}).get("cpu_s") or 0.0)
    wall = end["t"] - start["t"]
    box = {**machine_busy(start["box"], end["box"]), "loadavg_start": start["load"],
           "loadavg_end": end["load"]}
    return {**scale_summary(leg, cpu, wall, n, shares, box), "roles": list(roles)}


async def run_scale(opts: Any, say: Any = None) -> dict[str, Any]:
    """Run one leg per N of ``opts.gateways`` and return the report (``by_gateways``)."""
    def quiet(_text: str) -> None:
        return None

    say = say or quiet
    tmp = None
    workdir = opts.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="erpgw-bench-scale-")
        workdir = Path(tmp)
    t0 = time.monotonic()
    by: dict[str, dict[str, Any]] = {}
    try:
        for n in opts.gateways:
            try:
                by[str(n)] = await _one(n, opts, workdir, say)
            except GatewayError as exc:  # this N could not run (its stack did not start)
                first_line = (exc.message.splitlines() or [""])[0]
                by[str(n)] = {"gateways": n, "complete": False, "available": False,
                              "reason": f"[{exc.code}] {first_line}"}
    finally:
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    mach = machine()
    return {
        "bench": "peak-billing",
        "mode": "scale-out",
        "command": opts.command or "erpgw bench peak-billing " + " ".join(sys.argv[3:]),
        "cluster_nodes": opts.cluster,
        "fsync": opts.fsync,
        "invoices": opts.invoices or 2000,
        "load": "bench._loadgen at maximum load, through the round-robin proxy",
        "by_gateways": by,
        "bottleneck": bottleneck(by, mach.get("nproc")),
        "machine": mach,
        "wall_s": round(time.monotonic() - t0, 1),
        "ok": all(r["complete"] and r.get("lost") == 0 and r.get("duplicates") == 0
                  for r in by.values()),
    }


def render_scale(report: dict[str, Any]) -> str:
    """The report as a table, one row per N."""
    head = (f"peak-billing scale-out: {report['invoices']} invoices at maximum load per run, "
            f"{report['cluster_nodes'] or 'a single'}-node nats "
            f"{'cluster' if report['cluster_nodes'] else 'broker'} (fsync {report['fsync']}), "
            f"{report['machine'].get('nproc')} cores")
    cols = ("gateways", "events/s", "p50 ms", "p99 ms", "lost", "dup", *GROUPS, "total")
    rows = [cols]
    skipped = []
    for n, r in sorted(report["by_gateways"].items(), key=lambda kv: int(kv[0])):
        if not r.get("available", True):
            skipped.append(f"  {n} gateway process(es): not run: {r['reason']}")
            continue
        g = r["cores_by_group"]
        rows.append((n, f"{r['throughput_eps']}", f"{r['latency_ms']['p50']}",
                     f"{r['latency_ms']['p99']}", f"{r['lost']}", f"{r['duplicates']}",
                     *(f"{g[k]}" for k in GROUPS), f"{r['cores_total']}"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(cols))]
    lines = [head, "  (CPU columns: cores kept busy on average during the leg)"]
    lines += ["  " + "  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True))
              for row in rows]
    lines += skipped
    lines += [f"  {n} gateway processes ran process roles " + " | ".join(r["roles"])
              for n, r in sorted(report["by_gateways"].items(), key=lambda kv: int(kv[0]))
              if r.get("roles")]
    lines.append(f"  bottleneck: {report['bottleneck']}")
    lines.append("  OK: every run complete, lost 0 and duplicated 0" if report["ok"]
                 else "  FAILED: a run lost, doubled or stalled")
    return "\n".join(lines)
