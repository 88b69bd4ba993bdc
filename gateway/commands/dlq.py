"""``erpgw dlq``: list, show, replay and purge dead letters."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ._common import add_tool_flags, nats_auth_for, nats_url_for, run_async, since_arg


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lane", help="only this lane (billing, commercial, usage, revpartner)")
    p.add_argument("--code", help="only error codes starting with this (e.g. erp. or contract.)")
    p.add_argument("--key", help="only business keys containing this (e.g. an invoice id)")
    p.add_argument("--since", metavar="WHEN", type=since_arg,
                   help="only letters since 30m, 2h, 1d or ISO time")
    p.add_argument("--seq", type=int, nargs="*", metavar="SEQ", help="only these DLQ sequences")


async def _with_bus(args: argparse.Namespace,
                    fn: Callable[[Any, Any], Awaitable[int]]) -> int:
    from actors.infra import NatsBus
    from contracts import Subjects

    url, prefix = nats_url_for(args)
    bus = await NatsBus.connect(url, name="erpgw-dlq", wait_for_server=5.0,
                                auth=nats_auth_for(args, "operator"))
    try:
        return await fn(bus, Subjects(prefix=prefix))
    finally:
        await bus.close()


async def _select(bus: Any, subjects: Any, args: argparse.Namespace,
                  include_resolved: bool = False) -> list[Any]:
    from ..dlq import list_letters, parse_since

    since = parse_since(args.since) if getattr(args, "since", None) else None
    recs = await list_letters(bus, subjects, lane=args.lane, code=args.code, key=args.key,
                              since=since, include_resolved=include_resolved)
    if getattr(args, "seq", None):
        wanted = set(args.seq)
        recs = [r for r in recs if r.seq in wanted]
    return recs


def _row(rec: Any) -> dict[str, Any]:
    lt = rec.letter
    return {"seq": rec.seq, "failed_at": lt.failed_at.isoformat(timespec="seconds"),
            "lane": lt.lane, "code": lt.code, "key": lt.business_key, "attempts": lt.attempts,
            "subject": lt.subject, "reason": lt.reason,
            "resolved": rec.resolution.action if rec.resolution else None}


def cmd_ls(args: argparse.Namespace) -> int:
    async def go(bus: Any, subjects: Any) -> int:
        recs = await _select(bus, subjects, args, include_resolved=args.all)
        rows = [_row(r) for r in recs]
        if args.json:
            print(msgspec.json.encode(rows).decode())
            return 0
        if not rows:
            print("no dead letters" + (" matching the filters" if _filtered(args) else ""))
            return 0
        print(f"{'seq':>6}  {'failed at':<19}  {'lane':<10}  {'code':<28}  {'tries':>5}  key")
        for r in rows:
            mark = f"  [{r['resolved']}]" if r["resolved"] else ""
            print(f"{r['seq']:>6}  {r['failed_at'][:19]:<19}  {r['lane']:<10}  "
                  f"{r['code']:<28}  {r['attempts']:>5}  {r['key'] or '-'}{mark}")
        print(f"{len(rows)} dead letter(s)")
        return 0

    return int(run_async(lambda: _with_bus(args, go)))


def _filtered(args: argparse.Namespace) -> bool:
    return any(getattr(args, k, None) for k in ("lane", "code", "key", "since", "seq"))


def cmd_show(args: argparse.Namespace) -> int:
    from contracts import ContractError, Envelope, MsgpackCodec, redact

    codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)

    async def go(bus: Any, subjects: Any) -> int:
        args.lane = args.code = args.key = args.since = None
        args.seq = [args.seq_one]
        recs = await _select(bus, subjects, args, include_resolved=True)
        if not recs:
            print(f"erpgw: no dead letter with sequence {args.seq_one}", file=sys.stderr)
            return 1
        rec = recs[0]
        doc = _row(rec)
        doc.update(path=rec.letter.path, correlation_id=rec.letter.correlation_id,
                   platform_response=rec.letter.platform_response)
        try:
            message = msgspec.to_builtins(codec.decode(rec.letter.data))
            doc["message"] = message if args.reveal else redact(message)
        except ContractError as err:
            doc["message"] = None
            doc["undecodable"] = {"error": err.to_dict(), "bytes": len(rec.letter.data),
                                  "head": rec.letter.data[:64].hex()}
        if args.json:
            print(msgspec.json.encode(doc).decode())
        else:
            print(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode())
        return 0

    return int(run_async(lambda: _with_bus(args, go)))


def _resolve(action: str) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        from ..audit import identity_of
        from ..dlq import resolve_letters

        async def go(bus: Any, subjects: Any) -> int:
            recs = await _select(bus, subjects, args)
            if not recs:
                print("nothing to " + ("replay" if action == "replayed" else "purge"))
                return 0
            if not args.all_matching and not _filtered(args):
                print("erpgw: name what to act on (--seq, --lane, --code, --key, --since) or "
                      "pass --all-matching", file=sys.stderr)
                return 2
            verb = "replay" if action == "replayed" else "purge"
            if args.dry_run:
                for r in recs:
                    print(f"would {verb} {r.seq} ({r.letter.code}, {r.letter.business_key})")
                print(f"{len(recs)} letter(s) would be {action} (dry run)")
                return 0
            n = await resolve_letters(bus, subjects, recs, action=action, note=args.note,
                                      repost_open=getattr(args, "repost_open", False),
                                      identity=identity_of(nats_auth_for(args, "operator")))
            print(f"{n} letter(s) {action}")
            return 0

        return int(run_async(lambda: _with_bus(args, go)))

    return cmd


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dlq", help="list, show, replay or purge dead letters",
                       description="Dead letters are messages the gateway gave up on (contract "
                                   "violation, business rejection, retries exhausted), kept "
                                   "with their error code, reason, attempts and original bytes "
                                   "in the DLQ stream. Replay re-sends them after a fix; the "
                                   "ledger and idempotency keys make a replay safe.")
    dsub = p.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    ls = dsub.add_parser("ls", help="list dead letters", description="List dead letters.")
    add_tool_flags(ls)
    _filters(ls)
    ls.add_argument("--all", action="store_true", help="include replayed and purged letters")
    ls.set_defaults(func=cmd_ls)
    show = dsub.add_parser("show", help="show one dead letter in full",
                           description="Show one dead letter, with its message decoded.")
    add_tool_flags(show)
    show.add_argument("seq_one", type=int, metavar="SEQ", help="DLQ sequence (from `ls`)")
    show.add_argument("--reveal", action="store_true",
                      help="show personal data (tax ids, e-mail addresses, …) unmasked")
    show.set_defaults(func=cmd_show)
    for name, action, text in (
            ("replay", "replayed", "re-send the original messages to their original subjects"),
            ("purge", "purged", "mark letters as dealt with (kept in the stream for audit)")):
        c = dsub.add_parser(name, help=text, description=text.capitalize() + ".")
        add_tool_flags(c)
        _filters(c)
        c.add_argument("--all-matching", action="store_true",
                       help="act on every unresolved letter when no filter is given")
        c.add_argument("--dry-run", action="store_true", help="say what would happen, do nothing")
        c.add_argument("--note", default="", help="a note kept with the marker")
        if action == "replayed":
            c.add_argument("--repost-open", action="store_true",
                           help="a posting dated in a closed ERP period (erp.period_closed) "
                                "is posted on the first day of the first open period after "
                                "it, its original date in the memo (the next_open policy)")
        c.set_defaults(func=_resolve(action))
