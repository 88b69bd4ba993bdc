"""``erpgw bench peak-billing``: a month-end load through broker, simulator and gateway,
measured against the raw stack and a peer in the same run (see docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ._common import faults_arg, run_async
from .up import process_roles_arg

_KINDS = ("raw_hop", "b1", "b2", "b1w", "b2w", "b2wl", "peer", "peerw")


def _baselines(text: str) -> tuple[str, ...]:
    if text.strip() in ("", "none"):
        return ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in _KINDS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown baseline {', '.join(bad)}; choose from {', '.join(_KINDS)} or none")
    return kinds


def cmd_peak_billing(args: argparse.Namespace) -> int:
    import msgspec

    from bench import BenchOptions, render_human, run_peak_billing, write_outputs

    from ..drills import parse_faults

    opts = BenchOptions(
        profile=args.profile, invoices=args.invoices, rate=args.rate, max=args.max,
        fsync=args.fsync or "always", fsync_given=args.fsync is not None, seed=args.seed,
        out=args.out, json=args.json, quiet=args.quiet,
        workdir=args.workdir, stall_timeout=args.stall_timeout, baselines=args.baselines,
        repeat=args.repeat, faults=tuple(parse_faults(args.faults)) if args.faults else (),
        command="erpgw bench peak-billing " + shlex.join(sys.argv[3:]),
        duration=args.duration, nats_url=args.nats_url, gateway_url=args.gateway,
        sim_url=args.sim, gateway_pid=args.gateway_pid, rss_check=args.rss_check,
        usage=args.usage, gateways=args.gateways or (), cluster=args.cluster,
        roles=tuple(args.roles or ()), flame=args.flame)
    if args.gateways or args.cluster:
        return _scale_out(args, opts)
    if args.roles and (args.nats_url or args.gateway):
        print("erpgw bench: error: --roles starts the gateway processes itself: drop "
              "--nats-url and --gateway", file=sys.stderr)
        return 2
    try:
        from bench import plan_legs

        plan_legs(opts)
    except ValueError as exc:
        print(f"erpgw bench: error: {exc}", file=sys.stderr)
        return 2
    report: dict[str, Any] = run_async(lambda: run_peak_billing(opts))
    if args.out is not None:
        write_outputs(report, args.out)
    elif not args.json:
        report["plots_skipped"] = "no --out DIR given"
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(render_human(report))
    return 0 if report["ok"] else 1


# What a scale-out run (--gateways) does not combine with: it runs one maximum-load leg per
# count of processes, on stacks it starts, without baselines.
_NOT_WITH_GATEWAYS = ("rate", "max", "duration", "nats_url", "gateway", "sim", "gateway_pid",
                      "rss_check", "usage", "faults", "out", "flame")


def _scale_out(args: argparse.Namespace, opts: Any) -> int:
    import msgspec

    from bench._scale import render_scale, run_scale

    if not args.gateways:
        print("erpgw bench: error: --cluster needs --gateways LIST", file=sys.stderr)
        return 2
    if args.roles and len(args.roles) not in args.gateways:
        print(f"erpgw bench: error: --roles gives {len(args.roles)} processes' roles; "
              f"--gateways must include {len(args.roles)}", file=sys.stderr)
        return 2
    clash = [f"--{n.replace('_', '-')}" for n in _NOT_WITH_GATEWAYS if getattr(args, n)]
    if clash or args.repeat != 1:
        print(f"erpgw bench: error: --gateways runs one maximum-load leg per count of gateway "
              f"processes; drop {', '.join(clash) or '--repeat'}", file=sys.stderr)
        return 2
    if args.invoices is not None and args.invoices < 1:
        print(f"erpgw bench: error: --invoices must be at least 1, got {args.invoices}",
              file=sys.stderr)
        return 2

    def say(text: str) -> None:
        if not args.quiet and not args.json:
            print(f"\r{text[:100]:<100}", end="", file=sys.stderr, flush=True)

    report: dict[str, Any] = run_async(lambda: run_scale(opts, say))
    if not args.quiet and not args.json:
        print(file=sys.stderr)
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(render_scale(report))
    return 0 if report["ok"] else 1


def _gateway_counts(text: str) -> tuple[int, ...]:
    from bench._scale import parse_gateways

    try:
        return parse_gateways(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--gateways: ")) from None


def _cluster_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= n <= 5:
        raise argparse.ArgumentTypeError(f"{n} is out of range: 0 to 5")
    return n


def cmd_kill_soak(args: argparse.Namespace) -> int:
    """``erpgw bench kill-soak``: exit 0 when nothing was lost or doubled and every restart was
    ready in time, 1 otherwise, 2 for bad options."""
    import msgspec

    from bench._soak import SoakOptions, render_soak, run_soak

    opts = SoakOptions(kills=args.kills, duration=args.duration, rate=args.rate,
                       seed=args.seed, workdir=args.workdir, quiet=args.quiet,
                       stall_timeout=args.stall_timeout,
                       command="erpgw bench kill-soak " + shlex.join(sys.argv[3:]))
    try:
        opts.check()
    except ValueError as exc:
        print(f"erpgw bench: error: {exc}", file=sys.stderr)
        return 2
    report: dict[str, Any] = run_async(lambda: run_soak(opts))
    print(msgspec.json.encode(report).decode() if args.json else render_soak(report))
    return 0 if report["ok"] and report["restart_ok"] else 1


def _register_soak(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ks = bsub.add_parser(
        "kill-soak", help="kill soak: random SIGKILLs of the gateway during a run (make soak)",
        description="Start nats-server, the simulator and the gateway, fire one bill run at "
                    "--rate for --duration seconds and SIGKILL the gateway --kills times at "
                    "seeded uniform random moments, restarting it each time as a supervisor "
                    "would; then drain and judge from the simulator's audit. Exits 1 if "
                    "anything was lost or doubled, the sums differ, or a restart took more "
                    "than 5 s to be ready (docs/benchmarks.md, 'the kill soak').")
    ks.add_argument("--kills", type=int, default=30, help="SIGKILLs in the run (default 30)")
    ks.add_argument("--duration", type=float, default=600.0, metavar="S",
                    help="length of the bill run in seconds (default 600)")
    ks.add_argument("--rate", type=float, default=200.0, metavar="R",
                    help="invoices per second (default 200)")
    ks.add_argument("--seed", type=int, default=7,
                    help="seed of the kill times and of the simulation (default 7)")
    ks.add_argument("--stall-timeout", type=float, default=120.0, metavar="S",
                    help="give up draining when nothing moves for S seconds (default 120)")
    ks.add_argument("--workdir", type=Path, metavar="DIR",
                    help="keep logs and the broker store here (default: a temp dir, kept "
                         "only when the soak fails)")
    ks.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    ks.add_argument("--json", action="store_true", help="print the report as one JSON object")
    ks.set_defaults(func=cmd_kill_soak)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bp = sub.add_parser("bench", help="benchmarks: peak-billing load against baselines",
                        description="Benchmarks of the real stack, every figure set against "
                                    "the raw stack measured in the same run.")
    bsub = bp.add_subparsers(dest="bench", metavar="BENCH")
    pb = bsub.add_parser(
        "peak-billing", help="month-end billing load: gateway vs raw nats-py vs a peer",
        description="Start nats-server, the simulator and the gateway as separate processes, "
                    "fire bill runs (legs: maximum load, then 1,000/s and 5,000/s; or one leg "
                    "with --rate/--max) and, right after each, run the baselines on the same "
                    "broker and simulator with the same counts: (a) raw nats-py one hop, "
                    "(b1)/(b2) the "
                    "raw gateway-shaped path with per-message or atomic batch publishes, (c) "
                    "a FastStream peer. Reports throughput, latency p50/p95/p99/p99.9, CPU "
                    "per event, peak RSS, backlog, the simulator's audit and one verdict per "
                    "target of issue 8. Exits 1 if anything was lost or doubled.")
    pb.add_argument("--profile", default="quick", choices=["quick", "month-end"],
                    help="quick: 2,000 invoices per leg (make bench); month-end: 10,000")
    pb.add_argument("--invoices", type=int, metavar="N", help="invoices per leg")
    load = pb.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, metavar="R",
                      help="one leg, invoices offered at R per second")
    load.add_argument("--max", action="store_true", help="one leg at maximum load")
    pb.add_argument("--fsync", choices=["always", "default"], default=None,
                    help="broker fsync for every system: always (the durable default) or the "
                         "server default (2 min), to see what durability costs; only for a "
                         "broker the bench starts")
    pb.add_argument("--duration", type=float, metavar="S",
                    help="one leg at --rate R for S seconds (R x S invoices); needs --rate, "
                         "excludes --invoices and --max")
    tg = pb.add_argument_group(
        "targets", "run against processes that are already running instead of starting them "
                   "(docs/benchmarks.md, 'Targeting a running deployment')")
    tg.add_argument("--nats-url", metavar="URL",
                    help="use this broker instead of starting one: the gateway (when the "
                         "bench starts it) and the baselines use it")
    tg.add_argument("--gateway", metavar="URL",
                    help="a running gateway (its HTTP base URL): start neither gateway nor "
                         "simulator; needs --sim and --nats-url")
    tg.add_argument("--sim", metavar="URL",
                    help="the running simulator that delivers webhooks to --gateway and that "
                         "it posts to; its audit judges the run (the bench resets it before "
                         "each leg)")
    tg.add_argument("--gateway-pid", type=int, metavar="PID",
                    help="with --gateway on this machine: read that process's CPU and RSS")
    pb.add_argument("--rss-check", action="store_true",
                    help="after the legs, run a fresh gateway for N invoices (--invoices, "
                         "default 1,000) and another for "
                         "10 x N at maximum load and compare their peak RSS (target: within "
                         "+-10 %%)")
    pb.add_argument("--usage", type=int, default=0, metavar="N",
                    help="a leg of its own after the billing legs: the maximum-load bill "
                         "run again while N usage records are fired at the gateway's "
                         "POST /usage/v1/records at maximum rate; reports the usage lane's "
                         "throughput and the sync-lane p99 during that flood vs idle "
                         "(default 0: no usage flood)")
    pb.add_argument("--baselines", type=_baselines, default=_KINDS, metavar="LIST",
                    help="comma-separated baselines to run: raw_hop,b1,b2,b1w,b2w,b2wl,peer,peerw "
                         "(default all) or none")
    pb.add_argument("--repeat", type=int, default=1, metavar="K",
                    help="run every leg K times and report each system's median-throughput "
                         "run (correctness counts every run); default 1")
    pb.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    pb.add_argument("--faults", metavar="LIST", type=faults_arg,
                    help="inject these faults into every gateway leg while it runs (as "
                         "`erpgw demo --faults`: erp-outage, kill-gateway, 5xx-burst, "
                         "429-storm, commit-timeout, poison, duplicate-webhooks, out-of-order, "
                         "broker-restart); each leg reports recovery times")
    sc = pb.add_argument_group(
        "scale-out", "throughput and p99 per number of gateway processes (docs/benchmarks.md, "
                     "'Scale-out')")
    sc.add_argument("--gateways", type=_gateway_counts, metavar="LIST",
                    help="e.g. 1,2,3: for each count, a fresh stack with that many gateway "
                         "processes behind one round-robin address takes one leg of "
                         "--invoices (default 2,000) at maximum load; reports throughput, "
                         "latency p50/p99 and the cores each process kept busy, per count "
                         "(JSON: by_gateways); no baselines")
    sc.add_argument("--cluster", type=_cluster_size, default=0, metavar="N",
                    help="with --gateways: N nats-server nodes in one JetStream cluster (R3 "
                         "streams) instead of one broker")
    sc.add_argument("--roles", type=process_roles_arg, metavar="A/B",
                    help="split the gateway into processes by process roles, one "
                         "comma-separated list per process, gateway 1 first (erpgw up "
                         "--roles; docs/scale-out.md, 'Process roles'), e.g. "
                         "ingress,billing,revenue,usage,commercial,close/sync: the legs run "
                         "through those processes (CPU: all of them; RSS and --flame: gateway "
                         "1). With --gateways: the roles of the run with that many processes")
    pb.add_argument("--out", type=Path, metavar="DIR",
                    help="write report.json, report.txt and PNG plots here")
    pb.add_argument("--flame", type=Path, metavar="FILE",
                    help="also write a flame graph (SVG) of the gateway process during the "
                         "legs, sampled by py-spy (the bench extra; needs ptrace rights)")
    pb.add_argument("--workdir", type=Path, metavar="DIR",
                    help="keep logs and the broker store here (default: a temp dir)")
    pb.add_argument("--stall-timeout", type=float, default=60.0, metavar="S",
                    help="give up on a leg when nothing moves for S seconds (default 60)")
    pb.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    pb.add_argument("--json", action="store_true", help="print the report as one JSON object")
    pb.set_defaults(func=cmd_peak_billing)
    _register_soak(bsub)

    def _help(_args: argparse.Namespace) -> int:
        bp.print_help()
        return 2

    bp.set_defaults(func=_help)
