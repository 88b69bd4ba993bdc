"""``erpgw bench kill-soak``: fault-matrix row F1, random SIGKILLs of the gateway during a run.

Theory of operation (RELIABILITY.md, F1: "kill -9 at uniform random times, 30 kills in a
10-min run at 200 ev/s, with a supervisor/script restart"): the bench starts the real stack
(``gateway.stack.Stack``: embedded nats-server with ``sync_interval: always``, ``erpgw sim`` and
``erpgw up`` as separate processes), asks billing for one bill run of rate x duration invoices
at that rate, and SIGKILLs the gateway at ``kills`` times drawn uniformly at random (seeded)
from the run's duration. After each kill it does what a supervisor does: waits
``restart_delay_s`` and starts the gateway again, timing kill → ready (``/readyz`` answers 200
on the admin listener).
A kill due while the previous restart is still under way waits for it (counted as deferred), so
every kill hits a running gateway. Once billing has issued everything, the bench waits until
every invoice is posted or dead-lettered (T_recover(drain): end of issuing → drained) and judges
the run from the simulator's audit: LOST, DUP, UNEXPECTED, SUM_OK, DLQ_EXACT.

Pass: LOST = 0, DUP = 0, UNEXPECTED = 0, SUM_OK, drained, DLQ_EXACT, and every restart ready
within ``RESTART_BOUND_S`` (5 s). The consumers' ``ack_wait`` is 5 s (as for the bench's fault
legs) so that messages a killed gateway held come back quickly.
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from gateway.stack import Stack

from ._gateway import progress_bar
from ._proc import machine

__all__ = ["RESTART_BOUND_S", "SoakOptions", "kill_schedule", "render_soak", "run_soak"]

RESTART_BOUND_S = 5.0
POLL_S = 2.0  # audit polls during the run: the audit's cost grows with the run's invoices


@dataclass(frozen=True)
class SoakOptions:
    kills: int = 30
    duration: float = 600.0
    rate: float = 200.0
    seed: int = 7
    ack_wait_s: float = 5.0
    restart_delay_s: float = 0.2
    stall_timeout: float = 120.0
    workdir: Path | None = None
    quiet: bool = False
    command: str = ""

    def check(self) -> None:
        """Raises ``ValueError`` naming the option that is out of range."""
        if self.kills < 1:
            raise ValueError(f"--kills must be at least 1, got {self.kills}")
        if self.duration <= 0:
            raise ValueError(f"--duration must be positive, got {self.duration}")
        if self.rate <= 0:
            raise ValueError(f"--rate must be positive, got {self.rate}")
        if round(self.rate * self.duration) < 1:
            raise ValueError("--rate x --duration must be at least one invoice")


def kill_schedule(kills: int, duration: float, seed: int) -> list[float]:
    """``kills`` moments (seconds after the run starts), uniform on (0, duration), sorted.

    Seeded, so that a failing soak can be run again with the same kill times.
    """
    rng = random.Random(seed)  # a reproducible schedule, not a secret
    return sorted(round(rng.uniform(0.0, duration), 3) for _ in range(kills))


class _Line:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def say(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < (0.5 if self.tty else 10.0)):
            return
        self.last = now
        sys.stderr.write(f"\r{text[:160]}\033[K" if self.tty else text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


async def _kill_loop(stack: Stack, opts: SoakOptions, schedule: list[float], t0: float,
                     total: int, line: _Line) -> list[dict[str, Any]]:
    kills: list[dict[str, Any]] = []
    posted = 0
    last_poll = 0.0
    for n, at in enumerate(schedule, 1):
        deferred = time.monotonic() - t0 > at  # still restarting when this kill fell due
        while time.monotonic() - t0 < at:
            now = time.monotonic()
            # An audit read takes a while on a long run: none in the last second before a
            # kill, so that kills land on schedule.
            if now - last_poll >= POLL_S and at - (now - t0) > 1.0:
                posted = int((await stack.audit())["posted"])
                last_poll = time.monotonic()
            line.say(f"{progress_bar(posted / total)} kill-soak: t {now - t0:5.0f}/"
                     f"{opts.duration:.0f} s  kills {n - 1}/{len(schedule)}  posted "
                     f"{posted}/{total}")
            await anyio.sleep(min(0.2, max(0.0, at - (now - t0))))
        killed_at = time.monotonic()
        stack.kill_gateway()
        await anyio.sleep(opts.restart_delay_s)
        restart = time.monotonic()
        await stack.start_gateway()
        ready = time.monotonic()
        kills.append({"n": n, "due_s": at, "at_s": round(killed_at - t0, 3),
                      "late_s": round(killed_at - t0 - at, 3), "deferred": deferred,
                      "restart_to_ready_s": round(ready - restart, 3),
                      "kill_to_ready_s": round(ready - killed_at, 3)})
    return kills


async def run_soak(opts: SoakOptions) -> dict[str, Any]:
    """Run the soak and return its report (see the module docstring).

    Raises ``ValueError`` for bad options and what ``Stack.start``/``start_gateway`` raise
    when a process does not come up (the logs are kept then and their directory printed).
    """
    opts.check()
    total = round(opts.rate * opts.duration)
    schedule = kill_schedule(opts.kills, opts.duration, opts.seed)
    tmp = None
    workdir = opts.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="erpgw-soak-")
        workdir = Path(tmp)
    stack = Stack(workdir, seed=opts.seed, ack_wait_s=opts.ack_wait_s)
    line = _Line(not opts.quiet)
    wall0 = time.monotonic()
    try:
        line.say("kill-soak: starting nats-server, simulator and gateway", force=True)
        await stack.start()
        t0 = time.monotonic()
        await stack.bill_run(total, opts.rate)
        kills = await _kill_loop(stack, opts, schedule, t0, total, line)
        # Billing keeps issuing after the last kill; T_recover(drain) runs from the end of
        # issuing (the bill run's schedule, or later if the gateway held issuance back).
        while True:
            audit = await stack.audit()
            if audit["issued"] >= total:
                break
            line.say(f"{progress_bar(audit['posted'] / total)} kill-soak: all "
                     f"{len(kills)} kills done, issued {audit['issued']}/{total}")
            await anyio.sleep(POLL_S)
        issued_done = time.monotonic()

        def progress(a: dict[str, Any], dead: int) -> None:
            line.say(f"{progress_bar(a['posted'] / total)} kill-soak: draining, posted "
                     f"{a['posted']}/{total}, dead-lettered {dead}")

        result = await stack.wait_drained(total, stall_timeout=opts.stall_timeout,
                                          progress=progress, interval=1.0)
        drain_s = time.monotonic() - issued_done
        await stack.stop_gateway()
    except BaseException:
        line.done()
        print(f"kill-soak: logs in {workdir}", file=sys.stderr)
        raise
    finally:
        await stack.close()
    line.done()
    a = result.audit
    unposted = set(a.get("unposted", []))
    ready = [k["restart_to_ready_s"] for k in kills]
    lost, dup = result.lost, int(a.get("duplicates", 0))
    audit_out = {
        "issued": a.get("issued"), "accepted": a.get("accepted"), "posted": a.get("posted"),
        "lost": lost, "duplicates": dup, "unexpected": int(a.get("unexpected", 0)),
        "sum_ok": a.get("amount_issued") == a.get("amount_posted"),
        "dead_lettered": len(result.dlq_keys), "dlq_exact": unposted == result.dlq_keys,
        "drained": result.drained,
    }
    ok = (lost == 0 and dup == 0 and audit_out["unexpected"] == 0 and audit_out["sum_ok"]
          and result.drained and audit_out["dlq_exact"])
    restart_ok = max(ready) <= RESTART_BOUND_S
    if tmp is not None and ok and restart_ok:  # a failed soak keeps its logs
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "bench": "kill-soak",
        "fault": "F1: SIGKILL the gateway at uniform random times, supervisor restart",
        "command": opts.command,
        "seed": opts.seed, "rate": opts.rate, "duration_s": opts.duration, "invoices": total,
        "ack_wait_s": opts.ack_wait_s, "restart_delay_s": opts.restart_delay_s,
        "machine": machine(),
        "wall_s": round(time.monotonic() - wall0, 1),
        "kills": kills,
        "kills_done": len(kills),
        "kills_deferred": sum(1 for k in kills if k["deferred"]),
        "kill_late_s_max": max(k["late_s"] for k in kills),
        "restart_to_ready_s": {"p50_s": round(statistics.median(ready), 3),
                               "max_s": max(ready), "bound_s": RESTART_BOUND_S,
                               "met": restart_ok},
        "drain_after_issuing_s": round(drain_s, 2),
        "gateway_starts": stack.gateway_starts,
        "audit": audit_out,
        "ok": ok,
        "restart_ok": restart_ok,
        "logs": None if tmp is not None and ok and restart_ok else str(workdir),
    }


def render_soak(r: dict[str, Any]) -> str:
    """The soak report as lines for a terminal: figures, verdicts, RESULT."""
    a = r["audit"]
    rr = r["restart_to_ready_s"]
    m = r["machine"]
    tag = {True: "MET ", False: "FAIL"}
    return "\n".join([
        f"erpgw bench kill-soak (F1): {r['kills_done']} SIGKILLs of the gateway in a "
        f"{r['duration_s']:g} s run at {r['rate']:g}/s ({r['invoices']} invoices), seed "
        f"{r['seed']}, wall {r['wall_s']} s",
        f"machine: {m.get('nproc')} cores, {m.get('cpu')}, nats-server "
        f"{m.get('nats_server')}",
        "kills at (s): " + ", ".join(f"{k['at_s']:.1f}" for k in r["kills"])
        + f" ({r['kills_deferred']} fell due while the previous restart was under way and "
        f"waited for it; latest kill {r['kill_late_s_max']:.2f} s after its due time)",
        f"restart -> ready: p50 {rr['p50_s']:.2f} s, max {rr['max_s']:.2f} s "
        f"(bound {rr['bound_s']:g} s); drain after issuing ended: "
        f"{r['drain_after_issuing_s']} s",
        f"audit: issued {a['issued']}  posted {a['posted']}  LOST {a['lost']}  DUP "
        f"{a['duplicates']}  UNEXPECTED {a['unexpected']}  SUM_OK "
        f"{'yes' if a['sum_ok'] else 'NO'}  dead-lettered {a['dead_lettered']}  DLQ_EXACT "
        f"{'yes' if a['dlq_exact'] else 'NO'}  drained {'yes' if a['drained'] else 'NO'}",
        f"  {tag[r['ok']]}  LOST = 0, DUP = 0, UNEXPECTED = 0, SUM_OK, DLQ_EXACT, drained",
        f"  {tag[r['restart_ok']]}  restart-to-ready <= {rr['bound_s']:g} s: max "
        f"{rr['max_s']:.2f} s",
        "RESULT: " + ("OK, nothing lost, nothing doubled" if r["ok"] else
                      f"FAILED (LOST {a['lost']}, DUP {a['duplicates']})"),
    ] + ([f"logs: {r['logs']}"] if r.get("logs") else []))
