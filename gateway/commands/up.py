"""``erpgw up``: the gateway daemon."""

from __future__ import annotations

import argparse
import logging

import anyio

from ._common import LOG_LEVELS, add_gateway_flags, overrides, run_async

log = logging.getLogger("erpgw.cli")


def cmd_up(args: argparse.Namespace) -> int:
    from .. import gc_tuning
    from ..app import run_gateway
    from ..config import load_config
    from ..logs import setup_logging

    over = overrides(args)
    if args.roles is not None:
        over.setdefault("scale_out", {})["roles"] = args.roles
    cfg = load_config(args.config, overrides=over)
    if args.print_config:
        import msgspec

        print(msgspec.json.format(msgspec.json.encode(cfg.public()), indent=2).decode())
        return 0
    setup_logging(cfg.log_level, json=args.log_json or cfg.log.json)
    gc_tuning.set_thresholds(cfg.runtime)

    async def serve() -> None:
        started = anyio.Event()

        async def freeze_once_started() -> None:
            await started.wait()
            gc_tuning.freeze_started(cfg.runtime)

        async with anyio.create_task_group() as tg:
            tg.start_soon(freeze_once_started)
            await run_gateway(cfg, ready=started)
            tg.cancel_scope.cancel()

    run_async(serve)
    log.info("gateway stopped cleanly")
    return 0


ROLE_NAMES = ("ingress", "sync", "billing", "revenue", "usage", "commercial", "close")


def parse_roles(text: str) -> list[str]:
    """``--roles`` as a list (comma-separated); an unknown or empty one is a usage error
    naming it."""
    roles = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLE_NAMES]
    if unknown or not roles:
        what = f"unknown role {unknown[0]!r}" if unknown else "no role given"
        raise argparse.ArgumentTypeError(f"{what}; choose from {','.join(ROLE_NAMES)}")
    return list(dict.fromkeys(roles))


def process_roles_arg(text: str) -> list[str]:
    """``--roles A/B`` of ``erpgw demo`` and ``erpgw bench``: one list of process roles per
    process (``parse_roles``' check on each), at least two processes, every role in one."""
    lists = [",".join(parse_roles(part)) for part in text.split("/")]
    if len(lists) < 2:
        raise argparse.ArgumentTypeError("give one list per process, separated by '/', "
                                         "e.g. ingress,billing/sync,revenue,usage,commercial,"
                                         "close")
    nobody = [r for r in ROLE_NAMES if not any(r in x.split(",") for x in lists)]
    if nobody:
        raise argparse.ArgumentTypeError(f"role {nobody[0]!r} runs in no process: its work "
                                         "would wait at the broker")
    return lists


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="run the gateway daemon (Ctrl-C/SIGTERM drains and exits)",
                        description="Run the gateway: embedded nats-server (unless --nats-url), "
                                    "billing webhook ingress, invoice router, ERP poster. "
                                    "Webhooks and the usage intake are served on the HTTP "
                                    "port; probes (/livez, /readyz), /status, /metrics and "
                                    "the synchronous lane on the admin port (loopback by "
                                    "default; a bearer token is required off loopback). "
                                    "The first Ctrl-C/SIGTERM drains in-flight work and exits; "
                                    "a second stops at once.")
    add_gateway_flags(up)
    up.add_argument("--http-port", type=int, metavar="PORT",
                    help="port of the webhook and usage HTTP listener (default 8600)")
    up.add_argument("--admin-port", type=int, metavar="PORT",
                    help="port of the admin listener: /livez, /readyz, /status, /metrics, "
                         "/sync/v1 (default 8601)")
    up.add_argument("--erp-url", metavar="URL", help="ERP base URL (default the simulator's)")
    up.add_argument("--log-level", choices=LOG_LEVELS,
                    help="log level (default: the config's log_level)")
    up.add_argument("--log-json", action="store_true",
                    help="JSON log lines (also: log.json = true in the config, "
                         "ERPGW_LOG_JSON=1)")
    up.add_argument("--roles", type=parse_roles, metavar="ROLE,...",
                    help="run only these process roles (default: all; also "
                         "scale_out.roles): " + ", ".join(ROLE_NAMES) + ". E.g. "
                         "--roles ingress,billing here and "
                         "--roles sync,revenue,usage,commercial,close in a second process on "
                         "the same broker (docs/scale-out.md, \"Process roles\")")
    up.add_argument("--print-config", action="store_true",
                    help="print the effective configuration (secrets masked) and exit")
    up.set_defaults(func=cmd_up)
