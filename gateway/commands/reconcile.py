"""``erpgw reconcile``: ERP vs billing (vs the dead letters), once, now."""

from __future__ import annotations

import argparse
import re

import msgspec

from contracts import format_amount

from ._common import add_tool_flags, nats_url_for, run_async


def _period(text: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise argparse.ArgumentTypeError(f"period must be YYYY-MM, got {text!r}")
    return text


def cmd_reconcile(args: argparse.Namespace) -> int:
    from actors.infra import HttpClient, NatsBus
    from actors.reconcile import Flag, run_once, summary
    from contracts import Subjects

    from ..config import load_config

    cfg = load_config(args.config)

    async def go() -> int:
        url, prefix = nats_url_for(args)
        bus = await NatsBus.connect(url, name="erpgw-reconcile", wait_for_server=5.0)
        try:
            async with HttpClient(args.billing_url or cfg.reconcile.billing_url,
                                  platform="billing") as billing, \
                    HttpClient(args.erp_url or cfg.erp.base_url, platform="erp") as erp:
                result = await run_once(bus, Subjects(prefix=prefix), billing, erp,
                                        period=args.period, grace_s=args.grace,
                                        repair=args.repair)
        finally:
            await bus.close()
        rep = result.report
        if args.json:
            doc = summary(result) | {
                "breaks_detail": msgspec.to_builtins(
                    [b for b in rep.breaks if b.kind != "in_flight"]),
                "actions": msgspec.to_builtins(rep.actions),
                "repaired_keys": result.repaired, "unrepairable_keys": result.unrepairable}
            print(msgspec.json.encode(doc).decode())
        else:
            print(f"reconciliation {args.period or 'all periods'}: {rep.checked} billed, "
                  f"{rep.matched} matched (accuracy {rep.accuracy:.4%})")
            currencies = sorted(set(rep.totals["billing"]) | set(rep.totals["erp"]))
            for cur in currencies:
                billed = rep.totals["billing"].get(cur, 0)
                posted = rep.totals["erp"].get(cur, 0)
                flag = "" if billed == posted else "   <-- differs"
                print(f"  {cur}: billing {format_amount(billed, cur):>22}  "
                      f"ERP {format_amount(posted, cur):>22}{flag}")
            for kind, n in rep.by_kind.items():
                if n:
                    print(f"  {kind:<14} {n}")
            for b in rep.breaks:
                if b.kind != "in_flight":
                    print(f"    {b.kind:<14} {b.key}: {b.detail}")
            for a in rep.actions:
                if isinstance(a, Flag):
                    print(f"    proposal for {a.key}: {a.proposal}")
            if args.repair:
                print(f"  repaired (re-driven): {len(result.repaired)}"
                      + (f"; not in any stream: {', '.join(result.unrepairable)}"
                         if result.unrepairable else ""))
            print(f"  auto-repairable share of breaks: {rep.auto_repairable_share:.1%}")
        real = sum(n for k, n in rep.by_kind.items() if k not in ("in_flight", "dead_lettered"))
        return 1 if real else 0

    return int(run_async(go))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reconcile", help="match ERP postings against billing; repair the safe",
                       description="Read every finalized invoice from the billing platform and "
                                   "every journal entry from the ERP (their APIs), plus the "
                                   "dead letters, and classify each difference: missing, "
                                   "in flight, dead-lettered, duplicate, amount, currency, "
                                   "orphan. With --repair, missing postings are re-driven from "
                                   "the stream with their original idempotency key; duplicates "
                                   "and wrong amounts are only reported, with a reversal "
                                   "proposal. Exits 1 when a break other than in-flight or "
                                   "dead-lettered remains.")
    add_tool_flags(p)
    p.add_argument("--period", type=_period, metavar="YYYY-MM",
                   help="only invoices issued in this month (default: all)")
    p.add_argument("--grace", type=float, default=300.0, metavar="S",
                   help="invoices younger than S seconds count as in flight (default 300)")
    p.add_argument("--repair", action="store_true",
                   help="re-drive missing postings from the stream (safe: same idempotency key)")
    p.add_argument("--billing-url", metavar="URL", help="billing platform API base URL")
    p.add_argument("--erp-url", metavar="URL", help="ERP API base URL")
    p.set_defaults(func=cmd_reconcile)
