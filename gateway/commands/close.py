"""``erpgw close run --period YYYY-MM``: post what the revenue platform recognises in a month to
the ERP's general ledger (``actors.close``), through the running gateway's ERP poster; and
``erpgw close status --period YYYY-MM``: what blocks the close of a month, each with the
command that resolves it."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from ._common import add_tool_flags, nats_auth_for, nats_url_for, run_async

if TYPE_CHECKING:
    from actors.infra import NatsBus
    from actors.infra.state import SharedVersions
    from actors.platforms import PlatformSpec
    from contracts import Subjects

    from ..config import Config


def _period(text: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise argparse.ArgumentTypeError(f"--period must be YYYY-MM, got {text!r}")
    return text


def _gateway_config(args: argparse.Namespace) -> Config | None:
    """The gateway's configuration, or ``None`` (said on stderr) without its ledger."""
    from ..config import load_config

    cfg = load_config(args.config, overrides={"data_dir": str(args.data_dir)}
                      if args.data_dir else None)
    ledger_path = cfg.data_path / "ledger.db"
    if not ledger_path.exists():
        print(f"erpgw: no gateway ledger at {ledger_path}: pass the gateway's --data-dir "
              "(its broker identities are there)", file=sys.stderr)
        return None
    return cfg


def _specs(cfg: Config, args: argparse.Namespace, *platforms: str) -> dict[str, PlatformSpec]:
    """How to reach the platforms, at ``--<platform>-url`` when given."""
    import dataclasses

    from ..app import platform_specs

    specs = platform_specs(cfg)
    for name in platforms:
        url = getattr(args, f"{name}_url", None)
        if url:
            specs[name] = dataclasses.replace(specs[name], base_url=url)
    return specs


async def _connect(args: argparse.Namespace, name: str
                   ) -> tuple[NatsBus, Subjects, SharedVersions]:
    """The operator's connection to the gateway's broker, and the shared versions on it."""
    from actors.infra import NatsBus
    from actors.infra.kv import KvBucket
    from actors.infra.state import SharedVersions, bucket_name
    from contracts import Subjects

    url, prefix = nats_url_for(args)
    subjects = Subjects(prefix=prefix)
    bus = await NatsBus.connect(url, name=name, wait_for_server=5.0,
                                auth=nats_auth_for(args, "operator"))
    return bus, subjects, SharedVersions(KvBucket.on(bus, bucket_name(subjects, "versions")))


def cmd_close_run(args: argparse.Namespace) -> int:
    from actors.close import close_run, wait_applied
    from actors.platforms import open_platforms

    cfg = _gateway_config(args)
    if cfg is None:
        return 2
    entity = args.entity or cfg.close.entity

    async def go() -> int:
        specs = _specs(cfg, args, "revenue")
        bus, subjects, versions = await _connect(args, "erpgw-close")
        try:
            async with open_platforms(specs, limiters={}) as p:
                plan = await close_run(p.revenue.reader(), versions, bus, subjects,
                                       entity=entity, period=args.period,
                                       accounts=cfg.accounts, entities=cfg.entities)
            completed = await wait_applied(versions, plan, args.timeout)
        finally:
            await bus.close()
        published = sum(1 for rp in plan if rp.entry is not None)
        doc: dict[str, Any] = {
            "period": args.period, "entity": entity, "completed": completed,
            "published": published,
            "runs": [{"entity": rp.entity, "currency": rp.currency, "run": rp.run,
                      "action": rp.action,
                      "amount": rp.amount,
                      "external_id": rp.entry.external_id if rp.entry else None}
                     for rp in plan]}
        if args.json:
            print(msgspec.json.encode(doc).decode())
        else:
            print(f"close run {args.period} entity {entity}: {len(plan)} currency entr(ies), "
                  f"{published} published, "
                  f"{'completed' if completed else 'not completed (see erpgw dlq ls)'}")
            for r in doc["runs"]:
                print(f"  {r['entity']}  {r['currency']}  run {r['run']:>3}  {r['action']:<9}  "
                      f"{r['amount']:>14}  {r['external_id'] or '-'}")
        return 0 if completed else 1

    return int(run_async(go))


# How many items of one kind the human output lists (the counts and --json are complete).
LISTED = 20


def cmd_close_status(args: argparse.Namespace) -> int:
    from actors.close import close_status
    from actors.infra import Ledger
    from actors.platforms import open_platforms

    from ..app import erp_postings_reader, stripe_billing_read

    cfg = _gateway_config(args)
    if cfg is None:
        return 2
    entity = args.entity or cfg.close.entity
    revenue_leg = "revenue" in cfg.reconcile.legs

    async def go() -> int:
        specs = _specs(cfg, args, "billing", "erp", "revenue")
        bus, subjects, versions = await _connect(args, "erpgw-close-status")
        # The gateway's ledger (read while it runs, like `erpgw reconcile`): in-doubt lines.
        ledger = await Ledger.open(cfg.data_path / "ledger.db") if revenue_leg else None
        try:
            async with open_platforms(specs, limiters={}) as p:
                status = await close_status(
                    bus, subjects, billing=p.billing.reader(), erp=p.erp.reader(),
                    revenue=p.revenue.reader(), versions=versions, entity=entity,
                    period=args.period, accounts=cfg.accounts, grace_s=args.grace,
                    revenue_leg=revenue_leg, ledger=ledger, entities=cfg.entities,
                    postings=erp_postings_reader(cfg, p.erp),
                    billing_read=stripe_billing_read(cfg, p.billing),
                    # the spill beside the ledger, as in the gateway (else the system's temp)
                    scratch=cfg.data_path if cfg.data_path.is_dir() else None)
        finally:
            if ledger is not None:
                await ledger.close()
            await bus.close()
        doc = {"period": args.period, "ready": status.blocking == 0,
               "blocking": status.blocking, "entities": [status.to_builtins()]}
        if args.json:
            print(msgspec.json.encode(doc).decode())
        else:
            _print_status(status.to_builtins())
        return 0 if status.blocking == 0 else 1

    return int(run_async(go))


def _print_status(e: dict[str, Any]) -> None:
    if e["ready"]:
        print(f"close {e['period']} entity {e['entity']}: ready, nothing blocks the close")
        return
    print(f"close {e['period']} entity {e['entity']}: NOT ready, {e['blocking']} item(s) "
          "block the close")
    for kind, n in e["by_kind"].items():
        if not n:
            continue
        print(f"  close.{kind} ({n})"
              + (f": {e['resolve'][kind]}" if kind in e["resolve"] else ""))
        items = [i for i in e["items"] if i["kind"] == kind]
        for i in items[:LISTED]:
            print(f"    {i['key']}  {i['detail']}")
            print(f"      -> {i['resolve']}")
        if len(items) > LISTED:
            print(f"    ... and {len(items) - LISTED} more (--json lists them all)")


def _period_flags(p: argparse.ArgumentParser, period: str, entity: str) -> None:
    add_tool_flags(p)
    p.add_argument("--period", type=_period, metavar="YYYY-MM", required=True, help=period)
    p.add_argument("--entity", metavar="NAME",
                   help=f"{entity} (default: the config's close.entity, \"default\")")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("close",
                       help="month-end close: what blocks it; post recognised revenue to the GL",
                       description="Month-end close steps against a running gateway.")
    csub = p.add_subparsers(dest="close_command", metavar="ACTION", required=True)
    run = csub.add_parser(
        "run", help="post what the revenue platform recognises in a month to the ERP's GL",
        description="Read what each revenue contract recognises in --period from the revenue "
                    "platform and post one journal entry per entity, period and currency "
                    "(debit deferred revenue, credit revenue by product line, accounts.revenue "
                    "and accounts.revenue_by_product) through the running gateway's ERP "
                    "poster. A re-run posts nothing new; when recognition changed since the "
                    "last run, the last run is reversed and the new one posted (both into the "
                    "first open period when the month is closed). Waits until the poster has "
                    "applied them; exits 1 when that did not happen within --timeout.")
    _period_flags(run, "the month to post", "the legal entity the entries are posted for "
                  "when [entities] is not configured (with it, each contract's customer's)")
    run.add_argument("--timeout", type=float, default=60.0, metavar="S",
                     help="how long to wait for the ERP poster to apply the entries (60)")
    run.add_argument("--revenue-url", metavar="URL",
                     help="revenue platform API base URL (default: the config's)")
    run.set_defaults(func=cmd_close_run)

    status = csub.add_parser(
        "status", help="what blocks the close of a month, each with the command that resolves it",
        description="List, per entity, what blocks the close of --period: documents of the "
                    "month not posted to the ERP (unposted), unresolved dead letters of the "
                    "month (dead_lettered), reconciliation breaks a person must decide "
                    "(recon_break), revenue lines in doubt (in_doubt), and revenue the revenue "
                    "platform recognises in the month that the GL does not hold yet "
                    "(revenue_unposted), each with the command that resolves it. Read-only: "
                    "publishes and repairs nothing. Exit status: 0 when nothing blocks the "
                    "close, 1 when something does, 2 for a usage error or no gateway ledger, "
                    "3 when a platform or the broker cannot be read.")
    _period_flags(status, "the month to close", "the legal entity")
    status.add_argument("--grace", type=float, default=300.0, metavar="S",
                        help="documents younger than S seconds count as in flight, still "
                             "unposted (default 300)")
    status.add_argument("--billing-url", metavar="URL", help="billing platform API base URL")
    status.add_argument("--erp-url", metavar="URL", help="ERP API base URL")
    status.add_argument("--revenue-url", metavar="URL",
                        help="revenue platform API base URL (default: the config's)")
    status.set_defaults(func=cmd_close_status)
