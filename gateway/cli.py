"""``erpgw``: the command line. Every command has ``--help``; errors name what was wrong.

Exit codes: 0 success, 1 the run found a problem (lost or doubled work, a failed check),
2 bad usage or configuration, 3 a start-up failure (port busy, broker missing), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from contracts import GatewayError

__all__ = ["main"]

log = logging.getLogger("erpgw.cli")

EPILOG = """\
Watch a running gateway from any NATS client: subscribe to erpgw.mon.> (JSON).
Docs: README.md and docs/ in the source tree."""


def _run(fn: Callable[[], Any]) -> Any:
    """Run an async entry point on uvloop when available (the production loop)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return anyio.run(fn)
    return anyio.run(fn, backend_options={"use_uvloop": True})


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


# -- erpgw up -------------------------------------------------------------------------------------

def _add_gateway_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML config file (see docs/configuration.md); "
                        "ERPGW_<SECTION>_<KEY> env vars and these flags override it")
    p.add_argument("--nats-url", metavar="URL",
                   help="use this NATS server/cluster instead of starting the embedded one")
    p.add_argument("--nats-port", type=int, metavar="PORT",
                   help="client port of the embedded nats-server (default 4222)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="where the ledger, audit trail and embedded broker store live "
                        "(default ./data)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if getattr(args, "nats_url", None):
        o.setdefault("nats", {})["url"] = args.nats_url
    if getattr(args, "nats_port", None):
        o.setdefault("nats", {})["port"] = args.nats_port
    if getattr(args, "data_dir", None):
        o["data_dir"] = str(args.data_dir)
    if getattr(args, "http_port", None):
        o.setdefault("http", {})["port"] = args.http_port
    if getattr(args, "erp_url", None):
        o.setdefault("erp", {})["base_url"] = args.erp_url
    if getattr(args, "log_level", None):
        o["log_level"] = args.log_level
    return o


def cmd_up(args: argparse.Namespace) -> int:
    from .app import run_gateway
    from .config import load_config
    from .logs import setup_logging

    cfg = load_config(args.config, overrides=_overrides(args))
    if args.print_config:
        import msgspec

        print(msgspec.json.format(msgspec.json.encode(cfg.public()), indent=2).decode())
        return 0
    setup_logging(cfg.log_level, json=args.log_json)
    _run(lambda: run_gateway(cfg))
    log.info("gateway stopped cleanly")
    return 0


# -- erpgw sim ------------------------------------------------------------------------------------

def cmd_sim(args: argparse.Namespace) -> int:
    import sim

    from .logs import setup_logging

    setup_logging(args.log_level, json=args.log_json)
    cfg = sim.SimConfig(host=args.host, port=args.port, webhook_url=args.webhook_url,
                        webhook_secret=args.webhook_secret, seed=args.seed,
                        delivery_concurrency=args.concurrency)

    async def main() -> None:
        import signal

        async with anyio.create_task_group() as tg:
            ready = anyio.Event()

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                    async for _ in sigs:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            tg.start_soon(lambda: sim.serve(cfg, ready=ready))
            await ready.wait()
            logging.getLogger("erpgw.sim").info(
                "simulator on http://%s:%d (billing, ERP); webhooks to %s", cfg.host, cfg.port,
                cfg.webhook_url)

    _run(main)
    return 0


# -- erpgw demo -----------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo

    opts = DemoOptions(invoices=args.invoices, rate=args.rate, nats_url=args.nats_url or "",
                       json=args.json, workdir=args.workdir, seed=args.seed,
                       stall_timeout=args.stall_timeout, fsync=args.fsync)
    ok: bool = _run(lambda: run_demo(opts))
    return 0 if ok else 1


# -- parser ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erpgw",
        description="erpgw keeps a partner portal, billing SaaS, revenue platform and cloud ERP "
                    "in step over NATS JetStream: nothing lost, nothing doubled.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="erpgw 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser("up", help="run the gateway daemon (Ctrl-C/SIGTERM drains and exits)",
                        description="Run the gateway: embedded nats-server (unless --nats-url), "
                                    "billing webhook ingress, invoice router, ERP poster. "
                                    "The first Ctrl-C/SIGTERM drains in-flight work and exits; "
                                    "a second stops at once.")
    _add_gateway_flags(up)
    up.add_argument("--http-port", type=int, metavar="PORT",
                    help="port of the webhook/health HTTP server (default 8600)")
    up.add_argument("--erp-url", metavar="URL", help="ERP base URL (default the simulator's)")
    up.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    up.add_argument("--log-json", action="store_true", help="JSON log lines")
    up.add_argument("--print-config", action="store_true",
                    help="print the effective configuration (secrets masked) and exit")
    up.set_defaults(func=cmd_up)

    sm = sub.add_parser("sim", help="run the platform simulator (billing and ERP over HTTP)",
                        description="Run the simulated billing platform and ERP as HTTP "
                                    "services on one port. Start a bill run with "
                                    "POST /billing/v1/bill-runs {\"invoices\": N, \"rate\": R}; "
                                    "read the ground truth at GET /sim/v1/audit.")
    sm.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    sm.add_argument("--port", type=int, default=8700, help="listen port (default 8700)")
    sm.add_argument("--webhook-url", default="http://127.0.0.1:8600/webhooks/billing",
                    help="where billing webhooks are delivered (default the gateway's)")
    sm.add_argument("--webhook-secret", default="whsec_demo",
                    help="webhook signing secret (default whsec_demo)")
    sm.add_argument("--seed", type=int, default=7, help="seed for invoices and faults (7)")
    sm.add_argument("--concurrency", type=int, default=32,
                    help="concurrent webhook deliveries (default 32)")
    sm.add_argument("--log-level", default="info",
                    choices=["debug", "info", "warning", "error"])
    sm.add_argument("--log-json", action="store_true", help="JSON log lines")
    sm.set_defaults(func=cmd_sim)

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
    dm.add_argument("--json", action="store_true", help="print the report as one JSON object")
    dm.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("erpgw: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        inner = _unwrap(exc)
        if isinstance(inner, KeyboardInterrupt):
            print("erpgw: interrupted", file=sys.stderr)
            return 130
        if isinstance(inner, SystemExit):
            raise inner from None
        if isinstance(inner, OSError):
            print(f"erpgw: error: {inner.strerror or inner}", file=sys.stderr)
            return 3
        if isinstance(inner, GatewayError):
            print(f"erpgw: error [{inner.code}]: {inner.message}", file=sys.stderr)
            return 2 if inner.code.startswith("config.") else 3
        name = type(inner).__name__
        if name == "SupervisorEscalation":
            print(f"erpgw: stopped: {inner} (cause: {inner.__cause__!r})", file=sys.stderr)
            return 1
        raise
