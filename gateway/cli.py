"""``erpgw``: the command line. Every command has ``--help``; errors name what was wrong.

Commands live one per module in ``gateway.commands`` and are discovered at start.

Exit codes: 0 success, 1 the run found a problem (lost or doubled work, a failed check),
2 bad usage or configuration, 3 a start-up failure (port busy, broker missing), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
from collections.abc import Sequence

from contracts import GatewayError

from . import __version__, commands

__all__ = ["build_parser", "main"]

EPILOG = """\
Watch a running gateway from any NATS client: subscribe to erpgw.mon.> (JSON).
Probe it on its admin listener (default http://127.0.0.1:8601): /livez, /readyz,
/status, /metrics. Webhooks go to the HTTP port (default 8600).
Docs: README.md and docs/ in the source tree."""


def _command_modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    order = {name: i for i, name in enumerate(commands.ORDER)}
    return sorted(found, key=lambda n: (order.get(n, len(order)), n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erpgw",
        description="erpgw keeps a partner portal, billing SaaS, revenue platform and cloud ERP "
                    "in step over NATS JetStream: nothing lost, nothing doubled.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"erpgw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        importlib.import_module(f"{commands.__name__}.{name}").register(sub)
    return parser


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _reader_gone() -> int:
    """The reader of our output closed it (``erpgw ... | head``): stop quietly, like a
    command killed by SIGPIPE, and keep the interpreter's final flush from complaining."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # --help and --version print here
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
    except SystemExit:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return _reader_gone()
        raise
    except BrokenPipeError:
        return _reader_gone()
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # inside the boundary: a reader that went away is seen here
        return code
    except KeyboardInterrupt:
        print("erpgw: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:  # the CLI boundary: explain, never a traceback
        inner = _unwrap(exc)
        if isinstance(inner, KeyboardInterrupt):
            print("erpgw: interrupted", file=sys.stderr)
            return 130
        if isinstance(inner, SystemExit):
            raise inner from None
        if isinstance(inner, BrokenPipeError):
            return _reader_gone()
        if isinstance(inner, OSError):
            print(f"erpgw: error: {inner.strerror or inner}", file=sys.stderr)
            return 3
        if isinstance(inner, GatewayError):
            print(f"erpgw: error [{inner.code}]: {inner.message}", file=sys.stderr)
            return 2 if inner.code.startswith(("config.", "cli.")) else 3
        if type(inner).__name__ == "SupervisorEscalation":
            print(f"erpgw: stopped: {inner} (cause: {inner.__cause__!r})", file=sys.stderr)
            return 1
        raise
