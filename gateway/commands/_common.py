"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:  # a type only: the broker client is imported by the commands that connect
    from actors.infra.bus import NatsAuth

__all__ = ["LOG_LEVELS", "add_gateway_flags", "faults_arg", "overrides", "run_async",
           "since_arg"]

LOG_LEVELS = ["debug", "info", "warning", "error"]


def since_arg(text: str) -> str:
    """argparse ``type`` of ``--since``: a bad value is a usage error (exit 2) naming it."""
    from contracts import GatewayError

    from ..dlq import parse_since

    try:
        parse_since(text)
    except GatewayError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: use 30m, 2h, 1d or an ISO time") from exc
    return text


def faults_arg(text: str) -> str:
    """argparse ``type`` of ``--faults``: an unknown fault is a usage error (exit 2) naming it."""
    from contracts import GatewayError

    from ..drills import parse_faults

    try:
        parse_faults(text)
    except GatewayError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc
    return text


def run_async(fn: Callable[[], Any]) -> Any:
    """Run an async entry point on uvloop when available (the production loop)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return anyio.run(fn)
    return anyio.run(fn, backend_options={"use_uvloop": True})


def add_gateway_flags(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--nats-url``, ``--nats-port``, ``--data-dir``: where the gateway is."""
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


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from the flags present on ``args``."""
    o: dict[str, Any] = {}
    if getattr(args, "nats_url", None):
        o.setdefault("nats", {})["url"] = args.nats_url
    if getattr(args, "nats_port", None):
        o.setdefault("nats", {})["port"] = args.nats_port
    if getattr(args, "data_dir", None):
        o["data_dir"] = str(args.data_dir)
    if getattr(args, "http_port", None):
        o.setdefault("http", {})["port"] = args.http_port
    if getattr(args, "admin_port", None):
        o.setdefault("admin", {})["port"] = args.admin_port
    if getattr(args, "erp_url", None):
        o.setdefault("erp", {})["base_url"] = args.erp_url
    if getattr(args, "log_level", None):
        o["log_level"] = args.log_level
    return o


def nats_url_for(args: argparse.Namespace) -> tuple[str, str]:
    """(NATS URL, subject prefix) of the gateway a tool command talks to.

    ``--nats-url`` wins; otherwise the config's ``nats.url``; otherwise the embedded broker of a
    local ``erpgw up`` (``nats://127.0.0.1:<nats.port>``). Raises ``ConfigError``.
    """
    from ..config import load_config

    cfg = load_config(getattr(args, "config", None), overrides=overrides(args))
    return cfg.nats.url or f"nats://127.0.0.1:{cfg.nats.port}", cfg.nats.prefix


def nats_auth_for(args: argparse.Namespace, role: str) -> NatsAuth | None:
    """The credentials of broker identity ``role`` (``operator`` or ``monitor``) for a tool
    command: the config's external-broker credential, else the role's seed in the data dir of
    a local ``erpgw up`` (``--data-dir``). Raises ``IdentityError`` naming the missing file."""
    from ..config import load_config
    from ..identities import auth_for

    cfg = load_config(getattr(args, "config", None), overrides=overrides(args))
    return auth_for(cfg, role, required=True)


def add_tool_flags(p: argparse.ArgumentParser) -> None:
    """Flags of commands that inspect a running gateway over NATS."""
    p.add_argument("--config", type=Path, metavar="FILE", help="the gateway's TOML config")
    p.add_argument("--nats-url", metavar="URL",
                   help="NATS server of the gateway (default: the config's, or the embedded "
                        "broker of a local `erpgw up` on 127.0.0.1:4222)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="data directory of the gateway (default ./data): its ledger, and its "
                        "identities/ with the broker credentials this command connects with")
    p.add_argument("--json", action="store_true", help="machine-readable output")
