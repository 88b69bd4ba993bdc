"""``erpgw reconcile``: billing vs the ERP, the revenue platform, the GL and the payables (vs
the dead letters and the gateway's ledger), once, now."""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import TYPE_CHECKING

import msgspec

from contracts import format_amount

from ._common import add_tool_flags, nats_auth_for, nats_url_for, run_async

if TYPE_CHECKING:
    from actors.reconcile import Overview, RunResult

LEGS = ("revenue", "gl", "payables")


def _period(text: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise argparse.ArgumentTypeError(f"period must be YYYY-MM, got {text!r}")
    return text


def _legs(text: str) -> list[str]:
    legs = [leg.strip() for leg in text.split(",") if leg.strip() and leg.strip() != "erp"]
    unknown = sorted(set(legs) - set(LEGS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown leg(s) {', '.join(unknown)}; "
                                         f"known: erp, {', '.join(LEGS)}")
    return legs


def cmd_reconcile(args: argparse.Namespace) -> int:
    from actors.infra import Ledger, NatsBus
    from actors.platforms import open_platforms
    from actors.reconcile import EXPLAINED_KINDS, run_once, summary
    from contracts import Subjects

    from ..app import erp_postings_reader, platform_specs, stripe_billing_read
    from ..audit import identity_of
    from ..config import load_config

    cfg = load_config(args.config, overrides={"data_dir": str(args.data_dir)}
                      if args.data_dir else None)
    legs = cfg.reconcile.legs if args.legs is None else args.legs
    ledger_path = cfg.data_path / "ledger.db"

    async def reconcile_now() -> RunResult:
        url, prefix = nats_url_for(args)
        auth = nats_auth_for(args, "operator")
        bus = await NatsBus.connect(url, name="erpgw-reconcile", wait_for_server=5.0,
                                    auth=auth)
        # The gateway's ledger (read while the gateway runs, like `erpgw trace`): the revenue
        # leg's proof that a line was never sent. Without it revenue is compared, not repaired.
        ledger = (await Ledger.open(ledger_path)
                  if "revenue" in legs and ledger_path.exists() else None)
        try:
            # The platforms as the gateway reaches them (credentials, dialects), at the URLs
            # given on the command line if any; no budgets: this run is the only reader.
            specs = platform_specs(cfg)
            for name, url in (("billing", args.billing_url), ("erp", args.erp_url),
                              ("revenue", args.revenue_url), ("partner", args.partner_url)):
                if url:
                    specs[name] = dataclasses.replace(specs[name], base_url=url)
            async with open_platforms(specs, limiters={}) as p:
                return await run_once(
                    bus, Subjects(prefix=prefix), p.billing.reader(), p.erp.reader(),
                    period=args.period, grace_s=args.grace, repair=args.repair,
                    revenue=p.revenue.reader() if "revenue" in legs else None, ledger=ledger,
                    partner=p.partner.reader() if "payables" in legs else None,
                    accounts=msgspec.structs.asdict(cfg.accounts) if "gl" in legs else None,
                    # netsuite: the journal entries through SuiteQL, signed like the poster
                    postings=erp_postings_reader(cfg, p.erp),
                    billing_read=stripe_billing_read(cfg, p.billing),
                    audit_role="operator", audit_identity=identity_of(auth),
                    entities=cfg.entities)
        finally:
            if ledger is not None:
                await ledger.close()
            await bus.close()

    async def go() -> int:
        result = await reconcile_now()
        ov = result.overview
        if args.json:
            doc = summary(result) | {
                "breaks_detail": msgspec.to_builtins(
                    [b for b in ov.breaks if b.kind != "in_flight"]),
                "actions": msgspec.to_builtins(
                    [a for leg in result.legs.values() for a in leg.actions]),
                "repaired_keys": result.repaired, "reuploaded_keys": result.reuploaded,
                "unrepairable_keys": result.unrepairable,
                "ledger": str(ledger_path) if "revenue" in legs and ledger_path.exists()
                else None}
            print(msgspec.json.encode(doc).decode())
        else:
            _print_table(args, result, ov)
        real = sum(n for k, n in ov.by_kind.items() if k not in EXPLAINED_KINDS)
        return 1 if real else 0

    return int(run_async(go))


def _print_table(args: argparse.Namespace, result: RunResult, ov: Overview) -> None:
    from actors.reconcile import Flag

    rep = result.report
    print(f"reconciliation {args.period or 'all periods'}: {rep.checked} billing documents, "
          f"{rep.matched} matched in the ERP (accuracy {rep.accuracy:.4%})")
    for name, leg in result.legs.items():
        systems = list(leg.totals)
        currencies = sorted({c for t in leg.totals.values() for c in t})
        print(f"  {name}: {leg.checked} checked, {leg.matched} matched")
        for cur in currencies:
            amounts = [leg.totals[s].get(cur, 0) for s in systems]
            cells = "  ".join(f"{s} {format_amount(a, cur):>20}" for s, a in zip(systems, amounts,
                                                                          strict=True))
            # a system with no totals at all (no ledger read) is not a difference
            seen = {a for sys_, a in zip(systems, amounts, strict=True) if leg.totals[sys_]}
            differs = "" if len(seen) <= 1 else "   <-- differs"
            print(f"    {cur}: {cells}{differs}")
    print("  breaks by class:")
    for kind, n in ov.by_kind.items():
        if n:
            print(f"    {kind:<18} {n}")
    if not any(ov.by_kind.values()):
        print("    none")
    for b in ov.breaks:
        if b.kind != "in_flight":
            print(f"    [{b.leg}] {b.kind:<18} {b.key}: {b.detail}")
    for leg in result.legs.values():
        for a in leg.actions:
            if isinstance(a, Flag):
                print(f"    proposal for {a.key}: {a.proposal}")
    if args.repair:
        print(f"  repaired: {len(result.repaired)} re-posted, {len(result.reuploaded)} "
              "re-driven to revenue"
              + (f"; not in any stream: {', '.join(result.unrepairable)}"
                 if result.unrepairable else ""))
    print(f"  auto-repairable share of breaks: {ov.auto_repairable_share:.1%}; "
          f"auto-repaired: {ov.auto_repaired_share:.1%}")
    if ov.revenue_event_accuracy is not None:
        print(f"  revenue event accuracy: {ov.revenue_event_accuracy:.4%} "
              "(invoices revenue-matched / checked)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reconcile", help="match billing with the ERP, revenue, GL and payables; "
                                         "repair the safe",
                       description="Read billing's invoices, credit notes and payments, the "
                                   "ERP's journal entries, GL balances and vendor bills, the "
                                   "revenue platform's billings report, the partner portal's "
                                   "settlements (their APIs, in pages), the dead letters and "
                                   "the gateway's ledger, and classify each difference: "
                                   "missing, in flight, dead-lettered, duplicate, amount, "
                                   "currency, orphan; revenue_missing, revenue_duplicate, "
                                   "revenue_amount, revenue_orphan, in_doubt; gl; "
                                   "payable_missing, payable_duplicate, payable_amount, "
                                   "payable_orphan. With --repair, missing postings are "
                                   "re-driven from the stream with their original idempotency "
                                   "key, and invoices whose revenue lines the ledger proves "
                                   "never sent are re-driven to the revenue poster; everything "
                                   "else is only reported, with a proposal for a person. Exits "
                                   "1 when a break other than in-flight or dead-lettered "
                                   "remains.")
    add_tool_flags(p)
    p.add_argument("--period", type=_period, metavar="YYYY-MM",
                   help="only documents issued in this month (default: all)")
    p.add_argument("--grace", type=float, default=300.0, metavar="S",
                   help="documents younger than S seconds count as in flight (default 300)")
    p.add_argument("--repair", action="store_true",
                   help="re-drive missing postings (same idempotency key) and revenue lines "
                        "the ledger proves never sent")
    p.add_argument("--legs", type=_legs, metavar="LIST",
                   help="comma-separated legs besides billing vs ERP: revenue, gl, payables "
                        "(default: reconcile.legs, all three)")
    p.add_argument("--billing-url", metavar="URL", help="billing platform API base URL")
    p.add_argument("--erp-url", metavar="URL", help="ERP API base URL")
    p.add_argument("--revenue-url", metavar="URL", help="revenue platform API base URL")
    p.add_argument("--partner-url", metavar="URL", help="partner portal API base URL")
    p.set_defaults(func=cmd_reconcile)
