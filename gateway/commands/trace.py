"""``erpgw trace``: one business transaction's path across systems, with timings."""

from __future__ import annotations

import argparse

import msgspec

from ._common import add_tool_flags, nats_auth_for, nats_url_for, run_async


def cmd_trace(args: argparse.Namespace) -> int:
    from actors.infra import NatsBus
    from contracts import Subjects

    from ..config import load_config
    from ..trace import render, trace

    cfg = load_config(args.config, overrides={"data_dir": str(args.data_dir)}
                      if args.data_dir else None)

    ledger = cfg.data_path / "ledger.db"
    ledger_path = ledger if ledger.exists() else None

    async def go() -> int:
        url, prefix = nats_url_for(args)
        bus = await NatsBus.connect(url, name="erpgw-trace", wait_for_server=5.0,
                                    auth=nats_auth_for(args, "operator"))
        try:
            t = await trace(bus, Subjects(prefix=prefix), args.query,
                            ledger_path=ledger_path)
        finally:
            await bus.close()
        print(msgspec.json.encode(t).decode() if args.json else render(t))
        return 0 if t.hops else 1

    return int(run_async(go))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("trace", help="follow one transaction across systems, with timings",
                       description="Print the path of one business transaction: when the "
                                   "source platform issued it, every message the gateway "
                                   "stored for it (lane, subject, sequence), dead letters, "
                                   "the ERP outcome from the ledger's audit trail and the "
                                   "revenue platform's lines. Transactions that reference it "
                                   "join the trace (an invoice's payment, commission and "
                                   "settlement). Exits 1 when nothing is known about the "
                                   "query.")
    add_tool_flags(p)
    p.add_argument("query", help="a correlation id, a business key (billing:in_000001:v1) or an "
                                 "object id (in_000001)")
    p.set_defaults(func=cmd_trace)
