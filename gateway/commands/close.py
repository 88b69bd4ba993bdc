"""``erpgw close run --period YYYY-MM``: post what the revenue platform recognises in a month to
the ERP's general ledger (``actors.close``), through the running gateway's ERP poster."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import msgspec

from ._common import add_tool_flags, nats_auth_for, nats_url_for, run_async


def _period(text: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise argparse.ArgumentTypeError(f"--period must be YYYY-MM, got {text!r}")
    return text


def cmd_close_run(args: argparse.Namespace) -> int:
    import dataclasses

    from actors.close import close_run, wait_applied
    from actors.infra import NatsBus
    from actors.infra.kv import KvBucket
    from actors.infra.state import SharedVersions, bucket_name
    from actors.platforms import open_platforms
    from contracts import Subjects

    from ..app import platform_specs
    from ..config import load_config

    cfg = load_config(args.config, overrides={"data_dir": str(args.data_dir)}
                      if args.data_dir else None)
    ledger_path = cfg.data_path / "ledger.db"
    if not ledger_path.exists():
        print(f"erpgw: no gateway ledger at {ledger_path}: pass the gateway's --data-dir "
              "(its broker identities are there)", file=sys.stderr)
        return 2
    entity = args.entity or cfg.close.entity

    async def go() -> int:
        specs = platform_specs(cfg)
        if args.revenue_url:
            specs["revenue"] = dataclasses.replace(specs["revenue"], base_url=args.revenue_url)
        url, prefix = nats_url_for(args)
        subjects = Subjects(prefix=prefix)
        bus = await NatsBus.connect(url, name="erpgw-close", wait_for_server=5.0,
                                    auth=nats_auth_for(args, "operator"))
        try:
            versions = SharedVersions(KvBucket.on(bus, bucket_name(subjects, "versions")))
            async with open_platforms(specs, limiters={}) as p:
                plan = await close_run(p.revenue.reader(), versions, bus, subjects,
                                       entity=entity, period=args.period,
                                       accounts=cfg.accounts)
            completed = await wait_applied(versions, plan, args.timeout)
        finally:
            await bus.close()
        published = sum(1 for rp in plan if rp.entry is not None)
        doc: dict[str, Any] = {
            "period": args.period, "entity": entity, "completed": completed,
            "published": published,
            "runs": [{"currency": rp.currency, "run": rp.run, "action": rp.action,
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
                print(f"  {r['currency']}  run {r['run']:>3}  {r['action']:<9}  "
                      f"{r['amount']:>14}  {r['external_id'] or '-'}")
        return 0 if completed else 1

    return int(run_async(go))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("close", help="month-end close: post recognised revenue to the GL",
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
    add_tool_flags(run)
    run.add_argument("--period", type=_period, metavar="YYYY-MM", required=True,
                     help="the month to post")
    run.add_argument("--entity", metavar="NAME",
                     help="the legal entity the entries are posted for (default: the config's "
                          "close.entity, \"default\")")
    run.add_argument("--timeout", type=float, default=60.0, metavar="S",
                     help="how long to wait for the ERP poster to apply the entries (60)")
    run.add_argument("--revenue-url", metavar="URL",
                     help="revenue platform API base URL (default: the config's)")
    run.set_defaults(func=cmd_close_run)
