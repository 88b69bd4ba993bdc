"""``erpgw demo``: broker, simulator and gateway, a bill run, and the report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ._common import faults_arg, run_async
from .up import process_roles_arg


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import DemoOptions, parse_dialects, parse_flows, run_demo
    from ..drills import CLUSTER_FAULTS, parse_faults

    faults = tuple(parse_faults(args.faults)) if args.faults else ()
    try:
        flows = parse_flows(args.flows)
    except ValueError as exc:
        print(f"erpgw demo: error: argument --flows: {exc}", file=sys.stderr)
        return 2
    try:
        dialects = parse_dialects(args.dialects or "")
    except ValueError as exc:
        print(f"erpgw demo: error: argument --dialects: {exc}", file=sys.stderr)
        return 2
    if "out-of-order" in faults and dialects["billing"] == "stripe":
        print("erpgw demo: error: --faults out-of-order amends invoices, which the simulator "
              "does not do in Stripe's dialect (docs/simulator.md, 'Not simulated'): drop "
              "out-of-order or billing=stripe", file=sys.stderr)
        return 2
    if "broker-restart" in faults and (args.nats_url or args.cluster):
        print("erpgw demo: error: --faults broker-restart needs the single embedded broker "
              "(drop --nats-url and --cluster)", file=sys.stderr)
        return 2
    cluster_faults = sorted(f for f in faults if f in CLUSTER_FAULTS)
    if cluster_faults and not args.cluster:
        print(f"erpgw demo: error: --faults {','.join(cluster_faults)} needs --cluster N",
              file=sys.stderr)
        return 2
    if args.tls and (args.nats_url or args.cluster or args.gateways > 1):
        print("erpgw demo: error: --tls runs one embedded broker and one gateway process: "
              "drop --nats-url, --cluster and --gateways", file=sys.stderr)
        return 2
    if "lose-quorum" in faults and args.cluster and args.cluster != 3:
        print("erpgw demo: error: --faults lose-quorum kills two of three nodes: it needs "
              "--cluster 3", file=sys.stderr)
        return 2
    if args.roles and len(args.roles) != args.gateways:
        print(f"erpgw demo: error: --roles gives {len(args.roles)} processes' roles: pass "
              f"--gateways {len(args.roles)}", file=sys.stderr)
        return 2
    if args.cluster and args.nats_url:
        print("erpgw demo: error: --cluster starts its own nats-server nodes: drop --nats-url",
              file=sys.stderr)
        return 2
    opts = DemoOptions(invoices=args.invoices, rate=args.rate, nats_url=args.nats_url or "",
                       json=args.json, workdir=args.workdir, seed=args.seed,
                       stall_timeout=args.stall_timeout, fsync=args.fsync, faults=faults,
                       flows=flows, billing_dialect=dialects["billing"],
                       erp_dialect=dialects["erp"], cluster=args.cluster,
                       gateways=args.gateways, roles=tuple(args.roles or ()),
                       closed_period=args.closed_period or "",
                       tls=args.tls)
    ok: bool = run_async(lambda: run_demo(opts))
    return 0 if ok else 1


def _count(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{n} is out of range: {lo} to {hi}")
        return n
    return parse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dm = sub.add_parser("demo", help="run broker, simulator and gateway; fire a bill run; report",
                        description="Start an embedded nats-server (unless --nats-url), the "
                                    "simulator and the gateway as separate processes, fire a "
                                    "bill run, wait until everything is posted, and report "
                                    "what the simulator saw: issued, accepted, posted, lost, "
                                    "duplicated, dead-lettered, throughput and invoice posting "
                                    "latency. Exits 1 if anything was lost or doubled.")
    dm.add_argument("--invoices", type=int, default=2000, help="invoices in the bill run (2000)")
    dm.add_argument("--rate", type=float, default=0.0,
                    help="invoices issued per second; 0 issues them all at once (default)")
    dm.add_argument("--nats-url", metavar="URL", help="use an existing NATS server")
    dm.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    dm.add_argument("--workdir", type=Path, metavar="DIR",
                    help="keep logs, ledger and broker store here (default: a temp dir, "
                         "removed afterwards)")
    dm.add_argument("--stall-timeout", type=float, default=60.0, metavar="S",
                    help="give up when nothing moves for S seconds (default 60)")
    dm.add_argument("--fsync", choices=["always", "default"], default="always",
                    help="embedded broker fsync policy: always (durable, the default) or the "
                         "server default (2 min), to see what durability costs")
    dm.add_argument("--faults", metavar="LIST", type=faults_arg,
                    help="run under these faults (comma-separated): erp-outage, 5xx-burst, "
                         "429-storm, commit-timeout, poison, duplicate-webhooks, "
                         "out-of-order (also amended invoices, some version 2 before "
                         "version 1; reports ORDER_OK; not with billing in Stripe's dialect), "
                         "kill-gateway (process 1 of N), "
                         "broker-restart, kill-nats-leader, kill-nats-node, lose-quorum (two "
                         "of three nodes down 15 s; reports T_recover) (with --cluster), "
                         "freeze-gateway (SIGSTOP past ack_wait, then SIGCONT), "
                         "altered-amount (the ERP records 2 %% of postings with another "
                         "amount; the reconciler must find exactly those), period-close (the "
                         "ERP closes the bill run's month at 30 %%; see --closed-period); the "
                         "report adds "
                         "recovery times and whether the dead letters are exactly the "
                         "injected poison")
    dm.add_argument("--flows", default="all", metavar="LIST",
                    help="what runs besides the bill run (flow 2): all (default), invoices "
                         "(the bill run alone), or any of money (credit memos, payments, "
                         "settlements), usage, deals (with a close run posting the contracts' "
                         "recognised revenue to the GL), changes (subscription amendments; "
                         "needs deals)")
    dm.add_argument("--dialects", default="", metavar="LIST",
                    help="the platforms' wire formats, comma-separated: stripe (billing speaks "
                         "Stripe), netsuite (the ERP speaks NetSuite), or PLATFORM=DIALECT "
                         "(billing=erpgw|stripe, erp=erpgw|netsuite); default: erpgw for all")
    dm.add_argument("--cluster", type=_count(0, 5), default=0, metavar="N",
                    help="start N nats-server nodes joined into one JetStream cluster (streams "
                         "with min(N, 3) replicas) instead of one broker (docs/scale-out.md)")
    dm.add_argument("--gateways", type=_count(1, 8), default=1, metavar="N",
                    help="run N gateway processes, each with its own data directory, behind "
                         "one round-robin webhook address; the report adds each process's "
                         "share of the work (default 1)")
    dm.add_argument("--roles", type=process_roles_arg, metavar="A/B",
                    help="with --gateways N: the process roles of each process, one "
                         "comma-separated list per process, e.g. --gateways 2 --roles "
                         "ingress,billing/sync,revenue,usage,commercial,close (erpgw up "
                         "--roles; docs/scale-out.md, 'Process roles'); kill-gateway and "
                         "freeze-gateway act on the first")
    dm.add_argument("--closed-period", choices=["next_open", "dead_letter"],
                    help="the gateway's erp.closed_period: a posting dated in a period the "
                         "ERP has closed goes to the first open period (next_open) or is "
                         "dead-lettered erp.period_closed (dead_letter, the gateway's default; "
                         "with --faults period-close the demo then re-posts those letters with "
                         "erpgw dlq replay --repost-open)")
    dm.add_argument("--tls", action="store_true",
                    help="every hop over TLS: a throwaway CA made into the work directory "
                         "signs the broker's certificate (mutual TLS, with the NKey "
                         "identities), the gateway's HTTPS webhook and admin listeners and the "
                         "simulator's HTTPS platforms; each side verifies the other "
                         "(docs/security.md, S14)")
    dm.add_argument("--json", action="store_true", help="print the report as one JSON object")
    dm.set_defaults(func=cmd_demo)
