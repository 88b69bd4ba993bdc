"""``erpgw close run --period YYYY-MM``: post what the revenue platform recognises in a month to
the ERP's general ledger (``actors.close``), through the running gateway's ERP poster."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

import msgspec

from ._common import add_tool_flags, nats_auth_for, nats_url_for, run_async


def _period(text: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise argparse.ArgumentTypeError(f"--period must be YYYY-MM, got {text!r}")
    return text


def cmd_close_run(args: argparse.Namespace) -> int:
    import anyio

    from actors.close import Latest, aggregate_id, plan_close
    from actors.erp.periods import POLICY_HEADER
    from actors.infra import Ledger, NatsBus, OutMsg
    from actors.platforms import open_platforms
    from contracts import (
        Envelope,
        JsonCodec,
        MsgpackCodec,
        PostJournalEntry,
        Subjects,
        derive_id,
        make_envelope,
    )
    from contracts.platforms.revenue import RecognitionDetail

    from ..app import platform_specs
    from ..config import load_config

    cfg = load_config(args.config, overrides={"data_dir": str(args.data_dir)}
                      if args.data_dir else None)
    ledger_path = cfg.data_path / "ledger.db"
    if not ledger_path.exists():
        print(f"erpgw: no gateway ledger at {ledger_path}: pass the gateway's --data-dir "
              "(the close run reads what was posted before from it)", file=sys.stderr)
        return 2
    entries: JsonCodec[PostJournalEntry] = JsonCodec(PostJournalEntry)
    detail_codec: JsonCodec[RecognitionDetail] = JsonCodec(RecognitionDetail)
    envelopes: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
    entity, period = args.entity, args.period

    async def latest_runs(ledger: Ledger, currencies: list[str]) -> dict[str, Latest]:
        aggs = {c: ("revenue", aggregate_id(entity, period, c)) for c in currencies}
        rows = await ledger.aggregate_versions(aggs.values())
        out: dict[str, Latest] = {}
        for currency, agg in aggs.items():
            row = rows.get(agg)
            if row is None:
                continue
            run = max(row.version or 0, row.claimed or 0)
            known = (entries.decode(row.entry) if row.entry is not None
                     and row.version == run else None)
            out[currency] = Latest(run, known)
        return out

    async def go() -> int:
        specs = platform_specs(cfg)
        if args.revenue_url:
            import dataclasses

            specs["revenue"] = dataclasses.replace(specs["revenue"], base_url=args.revenue_url)
        async with open_platforms(specs, limiters={}) as p:
            resp = await p.revenue.reader().get(
                f"/revenue/v1/recognition/contracts?period={period}")
        detail = detail_codec.decode(resp.body)
        url, prefix = nats_url_for(args)
        subjects = Subjects(prefix=prefix)
        ledger = await Ledger.open(ledger_path)
        bus = await NatsBus.connect(url, name="erpgw-close", wait_for_server=5.0,
                                    auth=nats_auth_for(args, "operator"))
        try:
            currencies = sorted({it.currency.upper() for it in detail.items})
            plan = plan_close(entity, period, detail.items, cfg.accounts,
                              await latest_runs(ledger, currencies))
            for rp in plan:
                if rp.entry is None or rp.key is None:
                    continue
                env = make_envelope(rp.entry, source="gateway", key=rp.key,
                                    msg_id=derive_id("close.revenue_gl", rp.entry.idempotency_key))
                # next_open: a true-up of a closed month goes to the first open period.
                await bus.publish(OutMsg(subject=subjects.erp_journal,
                                         data=envelopes.encode(env), msg_id=env.id,
                                         headers={POLICY_HEADER: "next_open"}))
            published = [rp for rp in plan if rp.entry is not None]
            completed = await wait_applied(ledger, published)
        finally:
            await bus.close()
            await ledger.close()
        doc: dict[str, Any] = {
            "period": period, "entity": entity, "completed": completed,
            "published": len(published),
            "runs": [{"currency": rp.currency, "run": rp.run, "action": rp.action,
                      "amount": rp.amount,
                      "external_id": rp.entry.external_id if rp.entry else None}
                     for rp in plan]}
        if args.json:
            print(msgspec.json.encode(doc).decode())
        else:
            print(f"close run {period} entity {entity}: {len(plan)} currency entr(ies), "
                  f"{len(published)} published, "
                  f"{'completed' if completed else 'not completed (see erpgw dlq ls)'}")
            for r in doc["runs"]:
                print(f"  {r['currency']}  run {r['run']:>3}  {r['action']:<9}  "
                      f"{r['amount']:>14}  {r['external_id'] or '-'}")
        return 0 if completed else 1

    async def wait_applied(ledger: Ledger, published: list[Any]) -> bool:
        """Until the poster has applied every published run (the ledger's applied version),
        at most ``--timeout`` seconds (``0``: look once)."""
        if not published:
            return True
        want = {("revenue", rp.key.object_id): rp.run for rp in published}
        deadline = time.monotonic() + args.timeout
        while True:
            rows = await ledger.aggregate_versions(want)
            if all((rows[a].version or 0) >= run for a, run in want.items() if a in rows) \
                    and set(want) <= set(rows):
                return True
            if time.monotonic() >= deadline:
                return False
            await anyio.sleep(0.2)

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
    run.add_argument("--entity", default="default", metavar="NAME",
                     help="the legal entity the entries are posted for (default: default)")
    run.add_argument("--timeout", type=float, default=60.0, metavar="S",
                     help="how long to wait for the ERP poster to apply the entries (60)")
    run.add_argument("--revenue-url", metavar="URL",
                     help="revenue platform API base URL (default: the config's)")
    run.set_defaults(func=cmd_close_run)
