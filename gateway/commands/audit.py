"""``erpgw audit verify``: check the ledger's keyed audit chain and its anchors."""

from __future__ import annotations

import argparse

import msgspec

from ._common import add_tool_flags, nats_auth_for, nats_url_for, run_async


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from actors.infra import Ledger, NatsBus
    from contracts import GatewayError, Subjects

    from ..audit import audit_key, read_anchors, render, verify
    from ..config import load_config

    cfg = load_config(args.config, overrides={"data_dir": str(args.data_dir)}
                      if args.data_dir else None)
    ledger_path = cfg.data_path / "ledger.db"
    if not ledger_path.exists():
        raise GatewayError(f"no ledger at {ledger_path} (point --data-dir at the gateway's "
                           "data directory)", code="audit.ledger_missing")
    key = audit_key(cfg)

    async def go() -> int:
        anchors = None
        if not args.no_anchors:
            url, prefix = nats_url_for(args)
            bus = await NatsBus.connect(url, name="erpgw-audit", wait_for_server=5.0,
                                        auth=nats_auth_for(args, "operator"))
            try:
                anchors = await read_anchors(bus, Subjects(prefix=prefix), args.max_anchors)
            finally:
                await bus.close()
        ledger = await Ledger.open(ledger_path)
        try:
            report = await verify(ledger, key, anchors)
        finally:
            await ledger.close()
        print(msgspec.json.encode(report.to_builtins()).decode() if args.json
              else render(report))
        return 0 if report.ok else 1

    return int(run_async(go))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="verify the ledger's audit trail (keyed chain, anchors)",
                       description="Audit trail tools (docs/security.md, S19).")
    verbs = p.add_subparsers(dest="audit_command", metavar="VERB", required=True)
    v = verbs.add_parser(
        "verify", help="check the keyed hash chain and its anchors; exit 1 on any break",
        description="Walk the ledger's audit chain with the audit key (audit.key_file, default "
                    "<data_dir>/audit.key) and check every anchor of its head stored on the "
                    "audit stream: names the first row whose hash or link is wrong (seq, event, "
                    "key), an anchored row that is missing (a truncated tail) or that differs "
                    "(a rewritten chain). Exits 0 when all agree, 1 otherwise.")
    add_tool_flags(v)
    v.add_argument("--no-anchors", action="store_true",
                   help="check the chain only, without the broker (truncation goes unseen)")
    v.add_argument("--max-anchors", type=int, default=10_000, metavar="N",
                   help="check the newest N anchors (default 10000; the newest shows a "
                        "truncated tail, older ones a rewritten past)")
    v.set_defaults(func=cmd_audit_verify)
