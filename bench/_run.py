"""``erpgw bench peak-billing``: the whole run, from start-up to the report.

Theory of operation:

1. Start the real stack (``gateway.stack.Stack``: embedded nats-server with the chosen fsync
   policy, ``erpgw sim`` and ``erpgw up`` as separate processes, fixed seed), or target what
   ``--nats-url`` / ``--gateway`` / ``--sim`` name instead (``_target``: what is started and
   what is targeted, and which combinations are refused).
2. Per leg (a bill run of N invoices at maximum load or at a fixed rate): the gateway first
   (``_gateway.run_gateway_leg``), then, right after it so that both see the same conditions
   on a shared box, the baselines against the same broker and the same simulator, same N and
   same load, each in its own process (``python -m bench.baseline``), the simulator reset
   before each. The gateway idles meanwhile (one fetch per second per consumer, one metrics
   snapshot per second); its CPU is read only during its own legs.
3. With ``--rss-check``: a fresh gateway for N invoices, another for 10 x N (``_rss``).
   Then stop the gateway (a targeted one is left alone).
4. Build the report (``_report``), print it (table or JSON), write plots and JSON to ``--out``.

Every load is bounded in count (N per leg) and in time (a stall timeout per leg; the baseline
processes get a hard timeout as well). Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from contracts import Subjects
from gateway.drills import Driller
from gateway.stack import Stack

from ._flame import Flame
from ._gateway import GatewayLeg, run_gateway_leg
from ._gateway_gen import GEN_FIRST_INDEX, run_generated_leg
from ._proc import machine
from ._report import build_report, merge_repeats, render_human
from ._rss import run_rss_check
from ._target import broker_problem, check_targets, make_stack, topology

__all__ = ["PROFILES", "BenchOptions", "Leg", "invoices_for_duration", "plan_legs",
           "run_peak_billing", "runs_at"]

BASELINE_KINDS = ("raw_hop", "b1", "b2", "b1w", "b2w", "b2wl", "peer", "peerw")
MAX_BILL_RUN = 1_000_000  # sim/_billing.py: the largest bill run the simulator accepts
RSS_BASE = 1000  # --rss-check: 1,000 and 10,000 invoices unless --invoices says otherwise


@dataclass(frozen=True)
class Leg:
    name: str
    events: int
    rate: float | None  # None: maximum load


# profile -> (invoices per leg, rates of the legs; None = maximum load)
PROFILES: dict[str, tuple[int, tuple[float | None, ...]]] = {
    "quick": (2000, (None, 100.0, 1000.0, 5000.0)),
    "month-end": (10000, (None, 100.0, 1000.0, 5000.0)),
}
# A profile's light-load leg (100/s) sends at most this many invoices: its point is the
# latency of an event that has no company (p99 at 100/s against b1w), which 200 events at
# 100/s show as well as 10,000 would, in 2 s instead of 100 s per system.
LIGHT_RATE = 100.0
LIGHT_EVENTS = 200
# The quick profile's light leg runs the two baselines its verdict and its table need.
QUICK_LIGHT_KINDS = ("b1w", "b2wl")
PEER_KINDS = ("peer", "peerw")
# The quick profile (``make bench``) runs the FastStream peers at its maximum-load leg only:
# that is where their verdict ("billing throughput >= 2x the peer") is read, and each peer run
# at a fixed rate costs the quick bench 5-10 s more (30 s more when FastStream loses a partial
# batch and waits ``ack_wait`` for its redelivery; docs/benchmarks.md). ``month-end`` and a
# single ``--rate`` leg run them at every rate.
QUICK_PEERS_ONLY_AT_MAX = ("the quick profile runs the peers at the maximum-load leg only "
                           "(--profile month-end runs them at every rate)")


def runs_at(kind: str, leg: Leg, legs: list[Leg], opts: BenchOptions) -> bool:
    """Whether baseline ``kind`` runs in ``leg``: all of them, except, in a several-leg quick
    profile, the peers at its fixed-rate legs (``QUICK_PEERS_ONLY_AT_MAX``) and, at its
    light-load leg, any but ``QUICK_LIGHT_KINDS``."""
    if opts.profile != "quick" or leg.rate is None or all(o.rate is not None for o in legs):
        return True
    if leg.rate == LIGHT_RATE:
        return kind in QUICK_LIGHT_KINDS
    return kind not in PEER_KINDS


def _skip_reason(kind: str, leg: Leg) -> str:
    if leg.rate == LIGHT_RATE and kind not in PEER_KINDS:
        return (f"the quick profile runs {' and '.join(QUICK_LIGHT_KINDS)} at its light-load "
                "leg (--profile month-end runs every baseline there)")
    return QUICK_PEERS_ONLY_AT_MAX


@dataclass(frozen=True)
class BenchOptions:
    profile: str = "quick"
    invoices: int | None = None  # per leg; default from the profile
    rate: float | None = None  # one leg at this rate instead of the profile's legs
    max: bool = False  # one leg at maximum load instead of the profile's legs
    fsync: str = "always"
    seed: int = 7
    out: Path | None = None
    json: bool = False
    quiet: bool = False
    workdir: Path | None = None
    stall_timeout: float = 60.0
    baselines: tuple[str, ...] = BASELINE_KINDS
    repeat: int = 1  # run every leg this many times; figures of the median run
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    faults: tuple[str, ...] = ()  # gateway.drills fault names, injected into every leg
    # --duration S: one leg at --rate R for S seconds (R x S invoices); see plan_legs
    duration: float | None = None
    # Targets (bench/_target.py): a broker, or broker + simulator + gateway, already running.
    nats_url: str | None = None
    gateway_url: str | None = None
    sim_url: str | None = None
    gateway_pid: int | None = None
    fsync_given: bool = False  # --fsync was on the command line (refused with --nats-url)
    rss_check: bool = False  # also a fresh run and a 10x longer one, compare peak RSS
    usage: int = 0  # --usage N: N usage records flood the usage lane during the max leg
    # --gateways 1,2,3 [--cluster 3]: one maximum-load leg per count of gateway processes
    # (bench/_scale.py) instead of the legs and baselines above.
    gateways: tuple[int, ...] = ()
    cluster: int = 0
    # --roles A/B: the process roles of each process of the run with that many processes
    # (one comma-separated list per process, docs/scale-out.md "Process roles")
    roles: tuple[str, ...] = ()
    flame: Path | None = None  # --flame FILE: a py-spy flame graph of the gateway's legs


def plan_legs(opts: BenchOptions) -> list[Leg]:
    """The legs to run: the profile's, or the single one ``--rate``/``--max`` asks for.

    Raises ``ValueError`` for an unknown profile, a non-positive count or rate, a
    ``--duration`` that conflicts with the other load options, or targets that do not fit
    together (``bench._target.check_targets``).
    """
    if opts.profile not in PROFILES:
        raise ValueError(f"unknown profile {opts.profile!r}; choose from "
                         f"{', '.join(PROFILES)}")
    default_n, rates = PROFILES[opts.profile]
    n = opts.invoices if opts.invoices is not None else default_n
    check_targets(opts)
    if opts.duration is not None:
        n = invoices_for_duration(opts)
    if n < 1:
        raise ValueError(f"--invoices must be at least 1, got {n}")
    if opts.repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {opts.repeat}")
    if opts.rate is not None and opts.rate <= 0:
        raise ValueError(f"--rate must be positive, got {opts.rate}")
    if opts.max:
        rates = (None,)
    elif opts.rate is not None:
        rates = (opts.rate,)
    several = len(rates) > 1
    return [Leg("max" if r is None else f"{r:g}/s",
                min(n, LIGHT_EVENTS) if several and r == LIGHT_RATE else n, r) for r in rates]


def invoices_for_duration(opts: BenchOptions) -> int:
    """The count ``--duration S`` asks for: ``--rate R`` x S, at least 1.

    Raises ``ValueError`` naming the options when ``--duration`` comes with ``--invoices`` (two
    answers to "how many"), with ``--max`` or without ``--rate`` (no pace to hold for S
    seconds), or is not positive, or asks for more than the simulator's largest bill run.
    """
    s = opts.duration
    if s is None or s <= 0:
        raise ValueError(f"--duration must be positive, got {s}")
    if opts.invoices is not None:
        raise ValueError("--duration and --invoices conflict: --duration S sends --rate R x S "
                         "invoices; give one of them")
    if opts.max or opts.rate is None:
        raise ValueError("--duration needs --rate R (it holds that rate for S seconds); it "
                         "cannot be combined with --max or a profile's legs")
    n = max(1, round(opts.rate * s))
    if n > MAX_BILL_RUN:
        raise ValueError(f"--rate x --duration is {n:,} invoices; the simulator's bill runs "
                         f"hold at most {MAX_BILL_RUN:,}")
    return n


class _Progress:
    """One progress line on stderr: rewritten in place on a terminal, every 2 s otherwise."""

    def __init__(self, enabled: bool, total_steps: int) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.total = total_steps
        self.step = 0
        self.prefix = ""
        self.last = 0.0
        self.t0 = time.monotonic()

    def phase(self, text: str) -> None:
        self.step += 1
        self.prefix = text
        self.say("", force=True)

    def say(self, detail: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else 2.0):
            return
        self.last = now
        line = (f"[{self.step}/{self.total} {now - self.t0:5.1f}s] {self.prefix}"
                + (f": {detail}" if detail else ""))
        sys.stderr.write(f"\r{line[:160]}\033[K" if self.tty else line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


async def _reset_sim(sim_url: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.post(f"{sim_url}/sim/v1/reset") as resp:
            await resp.read()


def generator_load(opts: BenchOptions) -> bool:
    """Whether the gateway's billing legs are loaded by ``bench._loadgen`` (as the webhook
    baselines are): yes for a stack the bench starts, without faults; a targeted gateway
    (its secret is not the bench's) and the fault drills (they act on the simulator's
    deliveries) keep the simulator's bill runs."""
    return not opts.gateway_url and not opts.faults


def box_pids(stack: Stack) -> list[int]:
    """The processes besides the system under test whose CPU counts as the box's: the
    embedded nats-server and the simulator (none of them when targeted)."""
    sim = getattr(stack, "_sim", None)
    pids = [stack.broker.pid if stack.broker is not None else None,
            sim.pid if sim is not None and sim.poll() is None else None]
    return [p for p in pids if p]


async def _run_baseline(kind: str, leg: Leg, stack: Stack, opts: BenchOptions, idx: int,
                        workdir: Path) -> dict[str, Any]:
    await _reset_sim(stack.sim_url)
    admin = stack.auth("admin")  # the raw baselines run as the broker's admin identity
    cfg = {"nats_url": stack.url, "nats_seed": admin.seed_file if admin else "",
           "sim_url": stack.sim_url, "events": leg.events,
           "rate": leg.rate, "seed": opts.seed, "run_id": f"{kind}-{idx}",
           "stall_timeout": min(opts.stall_timeout, 60.0), "box_pids": box_pids(stack),
           "ledger_dir": str(workdir)}
    log = workdir / f"baseline-{kind}-{idx}.log"
    hard_timeout = 120.0 + leg.events / 200.0
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.baseline", kind, json.dumps(cfg),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), hard_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"kind": kind, "available": False,
                    "reason": f"did not finish within {hard_timeout:.0f} s (see {log})"}
    try:
        figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return {"kind": kind, "available": False,
                "reason": f"baseline process exited {proc.returncode}: {' | '.join(tail)}"}
    if figures.get("available", True) and not figures.get("complete", False):
        figures["note"] = (f"incomplete: {figures.get('completed')}/{leg.events} events in the "
                           "stall timeout")
    return figures


async def _run_legs(stack: Stack, legs: list[Leg], kinds: list[str], opts: BenchOptions,
                    rep: int, first_index: int, results: list[dict[str, Any]],
                    progress: _Progress, workdir: Path) -> int:
    """One repetition of every leg; returns the next free invoice number."""
    tag = f" (run {rep + 1}/{opts.repeat})" if opts.repeat > 1 else ""
    gen_index = GEN_FIRST_INDEX + rep * len(legs) * max(leg.events for leg in legs)
    for i, leg in enumerate(legs):
        progress.phase(f"leg {leg.name}{tag}")
        gl = GatewayLeg(leg.name, leg.events, leg.rate, first_index)
        driller = Driller(stack, list(opts.faults), leg.events) if opts.faults else None
        # The billing verdict legs carry no usage flood and no sync probe (they get a leg of
        # their own, below), so the gateway does the same work as its baselines.
        if generator_load(opts):
            gl = GatewayLeg(leg.name, leg.events, leg.rate, gen_index)
            gen_index += leg.events
            gw = await run_generated_leg(stack, gl, stall_timeout=opts.stall_timeout,
                                         say=progress.say, box_pids=tuple(box_pids(stack)))
        else:
            gw = await run_gateway_leg(stack, gl, stall_timeout=opts.stall_timeout,
                                       metrics_subject=Subjects().metrics, say=progress.say,
                                       driller=driller, sync_probe=False,
                                       box_pids=tuple(box_pids(stack)))
            first_index = gl.first_index + leg.events  # gl learnt the leg's first number
        result: dict[str, Any] = {"name": leg.name, "rate": leg.rate, "events": leg.events,
                                  "gateway": gw, "baselines": {}}
        results.append(result)
        # The leg's baselines right after it, so both see the same conditions on the box;
        # the gateway idles meanwhile (a fetch per second and a metrics snapshot).
        for kind in kinds:
            if not runs_at(kind, leg, legs, opts):
                result["baselines"][kind] = {"kind": kind, "available": False,
                                             "reason": _skip_reason(kind, leg)}
                continue
            progress.phase(f"leg {leg.name}{tag}: baseline {kind}")
            result["baselines"][kind] = await _run_baseline(kind, leg, stack, opts,
                                                            rep * len(legs) + i, workdir)
    if opts.usage > 0 and not opts.faults and any(leg.rate is None for leg in legs):
        # The flood leg (--usage N): the maximum-load bill run again with N usage records
        # alongside and the sync-lane probe; the sync-lane and usage verdicts come from it.
        n = next(leg.events for leg in legs if leg.rate is None)
        name = "max+usage"
        progress.phase(f"leg {name}{tag}")
        gl = GatewayLeg(name, n, None, first_index)
        gw = await run_gateway_leg(stack, gl, stall_timeout=opts.stall_timeout,
                                   metrics_subject=Subjects().metrics, say=progress.say,
                                   usage=opts.usage, box_pids=tuple(box_pids(stack)))
        first_index = gl.first_index + n
        results.append({"name": name, "rate": None, "events": n, "gateway": gw,
                        "baselines": {}, "flood_leg": True})
    return first_index


async def run_peak_billing(opts: BenchOptions) -> dict[str, Any]:
    """Run the bench and return the report; prints nothing but the progress line."""
    legs = plan_legs(opts)
    kinds = [k for k in BASELINE_KINDS if k in opts.baselines]
    flood_legs = (1 if opts.usage > 0 and not opts.faults
                  and any(leg.rate is None for leg in legs) else 0)
    runs = sum(1 + sum(runs_at(k, leg, legs, opts) for k in kinds) for leg in legs)
    progress = _Progress(not opts.quiet, 1 + opts.repeat * (runs + flood_legs)
                         + (2 if opts.rss_check else 0))
    tmp = None
    workdir = opts.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="erpgw-bench-")
        workdir = Path(tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    stack = make_stack(opts, workdir)
    skipped: str | None = None  # why the baselines cannot use a targeted broker
    rss: dict[str, Any] | None = None
    if opts.faults:  # quicker redelivery after a kill drill, and what the faults need
        stack.ack_wait_s = 5.0
        stack.gateway_toml = Driller(stack, list(opts.faults), 1).gateway_toml
    reps: list[list[dict[str, Any]]] = []
    flame = Flame(opts.flame) if opts.flame is not None else None
    topo = topology(opts)
    load_start = _loadavg()
    t0 = time.monotonic()
    try:
        progress.phase("; ".join(f"{k} {v.split(':')[0]}" for k, v in topo.items()))
        await stack.start()
        if opts.nats_url and kinds:
            problem = await broker_problem(stack.url, stack.nats_options("admin"))
            if problem:
                skipped = (f"skipped: the targeted broker {opts.nats_url} cannot carry the "
                           f"baselines ({problem})")
        first_index = 1
        if flame is not None:
            await flame.start(stack.gateway_pid)
        for rep in range(opts.repeat):
            results: list[dict[str, Any]] = []
            reps.append(results)
            first_index = await _run_legs(stack, legs, [] if skipped else kinds, opts, rep,
                                          first_index, results, progress, workdir)
            for leg_result in results if skipped else ():
                leg_result["baselines"] = {k: {"kind": k, "available": False, "reason": skipped}
                                           for k in kinds}
        if flame is not None:
            await flame.stop()
        if opts.rss_check:
            rss, first_index = await run_rss_check(
                stack, opts.invoices or RSS_BASE, first_index, stall_timeout=opts.stall_timeout,
                phase=progress.phase, say=progress.say)
        await stack.stop_gateway()
    except BaseException:
        progress.done()
        if flame is not None:
            await flame.stop()
        if tmp is None:
            print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    finally:
        await stack.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    progress.done()
    meta = {
        "bench": "peak-billing",
        "command": opts.command or "erpgw bench peak-billing " + shlex.join(sys.argv[3:]),
        "profile": opts.profile if not (opts.max or opts.rate) else "custom",
        "seed": opts.seed,
        "repeat": opts.repeat,
        "fsync": opts.fsync if not opts.nats_url else "the targeted broker's own",
        "gateway_load": ("bench._loadgen, the generator of the webhook baselines"
                         if generator_load(opts) else "the simulator's bill runs"),
        "broker_sync_interval": stack.sync_interval if not opts.nats_url else "unknown",
        "topology": topo,
        "duration_s": opts.duration,
        "rss_check": rss,
        "machine": {**machine(), "loadavg_start": load_start, "loadavg_end": _loadavg()},
        "wall_s": round(time.monotonic() - t0, 1),
        "faults": list(opts.faults),
        "flame": flame.result if flame is not None else None,
        "not_built": ["--usage (usage lane)", "sync-lane probe"],
    }
    return build_report(merge_repeats(reps), meta)


def write_outputs(report: dict[str, Any], out: Path) -> list[str]:
    """``report.json``, ``report.txt`` and the plots (when matplotlib is there) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    try:
        from ._plots import make_plots
    except ImportError as exc:
        report["plots_skipped"] = (f"matplotlib is not available ({exc}); "
                                   "pip install -e '.[bench]' to draw them")
    else:
        files = make_plots(report, out)
        report["plots"] = files
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.txt").write_text(render_human(report) + "\n")
    return files
