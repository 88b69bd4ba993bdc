"""``erpgw replay``: re-drive a lane's history from its stream."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import msgspec

from contracts import LANES

from ._common import add_tool_flags, nats_auth_for, nats_url_for, run_async, since_arg


def cmd_replay(args: argparse.Namespace) -> int:
    from actors.infra import NatsBus
    from actors.replay import replay_lane, select_events
    from contracts import Subjects

    from ..dlq import parse_since

    since = parse_since(args.since)

    async def go() -> int:
        url, prefix = nats_url_for(args)
        subjects = Subjects(prefix=prefix)
        bus = await NatsBus.connect(url, name="erpgw-replay", wait_for_server=5.0,
                                    auth=nats_auth_for(args, "operator"))
        try:
            items = await select_events(bus, subjects, args.lane, since=since, key=args.key)
            run = None if args.dry_run or not items else await replay_lane(
                bus, subjects, args.lane, items)
        finally:
            await bus.close()
        if args.json:
            print(msgspec.json.encode({
                "lane": args.lane, "since": since.isoformat(), "dry_run": args.dry_run,
                "run": run, "events": len(items),
                "items": [{"seq": i.seq, "subject": i.subject, "key": i.key,
                           "stored_at": datetime.fromtimestamp(i.stored_at, UTC).isoformat()}
                          for i in items]}).decode())
        else:
            for i in items if args.dry_run else []:
                print(f"would replay {i.seq} {i.subject} {i.key or '-'}")
            verb = "would be replayed (dry run)" if args.dry_run else f"replayed (run {run})"
            print(f"{len(items)} event(s) of lane {args.lane} since "
                  f"{since.isoformat(timespec='seconds')} {verb}")
        return 0

    return int(run_async(go))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="re-drive a lane's events from its stream (safe)",
                       description="Republish the events a lane stored since a time, so they "
                                   "flow through the routers and adapters again. Safe by "
                                   "construction: output ids and platform idempotency keys "
                                   "derive from business keys, and the ledger skips what was "
                                   "already posted, so only work that was lost is redone.")
    add_tool_flags(p)
    p.add_argument("--lane", required=True, choices=LANES, help="which lane's stream")
    p.add_argument("--since", required=True, metavar="WHEN", type=since_arg,
                   help="events stored since 30m, 2h, 1d ago or an ISO time")
    p.add_argument("--key", help="only events whose business key contains this (an invoice id) "
                                 "or whose correlation id equals it")
    p.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    p.set_defaults(func=cmd_replay)
