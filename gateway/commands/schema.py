"""``erpgw schema``: the canonical contracts as JSON Schema and AsyncAPI, the OpenAPI documents
of the gateway's HTTP listeners, and the check that keeps the contracts compatible
(``erpgw schema check --against contracts/schemas`` in CI)."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["register"]

SNAPSHOT = "contracts/schemas"


def _fail(message: str) -> int:
    print(f"erpgw schema: error: {message}", file=sys.stderr)
    return 2


def load_schema_dir(directory: Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` in ``directory``, keyed by file stem (the message type).

    Raises ``ValueError`` naming the file when one is not a JSON object, ``FileNotFoundError``
    when ``directory`` does not exist.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"no such directory: {directory}")
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            doc = msgspec.json.decode(path.read_bytes())
        except msgspec.DecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: not a JSON Schema object")
        out[path.stem] = doc
    return out


def cmd_export(args: argparse.Namespace) -> int:
    from contracts.schema import dumps, json_schemas

    out: Path = args.dir
    docs = json_schemas()
    out.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (out / f"{name}.json").write_bytes(dumps(doc))
    stale = sorted(p.name for p in out.glob("*.json") if p.stem not in docs)
    print(f"wrote {len(docs)} JSON Schemas (2020-12) to {out}")
    if stale:
        print(f"erpgw schema: warning: {len(stale)} file(s) in {out} match no current message "
              f"and were left alone: {', '.join(stale)} (a check against this directory will "
              "report them as removed messages)", file=sys.stderr)
    return 0


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from contracts.schema import asyncapi, dumps

    doc = asyncapi()
    data = dumps(doc)
    if args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(data)
        print(f"wrote AsyncAPI {doc['asyncapi']} document ({len(doc['channels'])} channels, "
              f"{len(doc['components']['messages'])} messages) to {args.out}")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from contracts.schema import dumps

    from ..config import load_config
    from ..openapi import document

    cfg = load_config(args.config)  # a bad file: ConfigError naming it (exit 2)
    doc = document(args.listener, cfg)
    data = dumps(doc)
    if args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(data)
        operations = sum(len(ops) for ops in doc["paths"].values())
        print(f"wrote OpenAPI {doc['openapi']} document of the {args.listener} listener "
              f"({operations} operations) to {args.out}")
    return 0


def shipped_snapshot() -> Path:
    """The schema snapshot installed with the contracts (the released messages)."""
    return Path(str(resources.files("contracts").joinpath("schemas")))


def cmd_check(args: argparse.Namespace) -> int:
    from contracts.schema import compare, format_report, json_schemas

    if args.against is None:
        args.against = shipped_snapshot()
    try:
        old = load_schema_dir(args.against)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    if not old:
        return _fail(f"no *.json schemas in {args.against} "
                     f"(make a snapshot with: erpgw schema export {args.against})")
    report = compare(old, json_schemas())
    if args.json:
        doc = {"against": str(args.against), "compatible": report.compatible,
               "breaking": report.breaking, "additive": report.additive}
        print(msgspec.json.encode(doc).decode())
    else:
        print(format_report(report, str(args.against)))
    return 0 if report.compatible else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    sc = sub.add_parser(
        "schema", help="export JSON Schemas, print the AsyncAPI and OpenAPI documents, check "
                       "compatibility",
        formatter_class=fmt,
        description="The canonical messages (contracts/) as JSON Schema 2020-12 and AsyncAPI "
                    "3.0, generated from the msgspec structs; the compatibility check that "
                    "keeps a version's messages readable by every gateway sharing a stream; and "
                    "the OpenAPI 3.1 documents of the gateway's own HTTP listeners.",
        epilog=f"examples:\n"
               f"  erpgw schema export {SNAPSHOT}          refresh the committed snapshot\n"
               f"  erpgw schema asyncapi --out asyncapi.json\n"
               f"  erpgw schema openapi --listener admin --config erpgw.toml\n"
               f"  erpgw schema check --against {SNAPSHOT}  what CI runs\n\n"
               "Evolution rules and error codes: docs/contracts.md")

    def usage(_args: argparse.Namespace) -> int:
        sc.print_help()
        return 2

    sc.set_defaults(func=usage)
    ss = sc.add_subparsers(dest="schema_command", metavar="SUBCOMMAND")

    ex = ss.add_parser(
        "export", help="write one JSON Schema (2020-12) per message to DIR",
        formatter_class=fmt,
        description="Write one JSON Schema (dialect 2020-12) per canonical message, "
                    "DIR/<type>.json (invoice.issued.v1.json, …), and DIR/dead_letter.json. "
                    "Each schema describes the message as it travels: the envelope with the "
                    "payload fixed to that type, the structs in $defs, and an x-erpgw "
                    "annotation with its lane, subject, stream and authority. Files are "
                    "canonical JSON (sorted keys) so a snapshot diffs cleanly; existing files "
                    "of other names are left alone (and named).",
        epilog=f"example: erpgw schema export {SNAPSHOT}")
    ex.add_argument("dir", type=Path, metavar="DIR", help="output directory (created if needed)")
    ex.set_defaults(func=cmd_export)

    aa = ss.add_parser(
        "asyncapi", help="print the AsyncAPI 3.0 document (JSON) of the bus",
        formatter_class=fmt,
        description="Print an AsyncAPI 3.0.0 document, as JSON, of every subject (channel), "
                    "JetStream stream (x-stream, per lane) and message of the gateway: the "
                    "canonical messages (msgpack), dead letters and monitoring subjects "
                    "(JSON), with send/receive operations and the payload schemas.",
        epilog="example: erpgw schema asyncapi --out build/asyncapi.json")
    aa.add_argument("--out", type=Path, metavar="FILE",
                    help="write to FILE instead of standard output")
    aa.set_defaults(func=cmd_asyncapi)

    oa = ss.add_parser(
        "openapi", help="print the OpenAPI 3.1 document (JSON) of a listener of the gateway",
        formatter_class=fmt,
        description="Print an OpenAPI 3.1.0 document, as JSON, of one of the gateway's HTTP "
                    "listeners as the config sets it up: 'webhooks' (the platforms' signed "
                    "webhooks at their configured paths and the usage intake) or 'admin' "
                    "(/livez, /readyz, /status, /metrics, the synchronous lane). A running "
                    "gateway serves the same documents on its admin listener at "
                    "/openapi/webhooks.json and /openapi/admin.json.",
        epilog="example: erpgw schema openapi --listener admin --out build/admin.json")
    oa.add_argument("--listener", choices=("webhooks", "admin"), default="webhooks",
                    help="which listener (default: webhooks)")
    oa.add_argument("--config", type=Path, metavar="FILE",
                    help="the gateway's TOML config (paths, dialect, listeners; default: the "
                         "built-in defaults and ERPGW_* variables)")
    oa.add_argument("--out", type=Path, metavar="FILE",
                    help="write to FILE instead of standard output")
    oa.set_defaults(func=cmd_openapi)

    ck = ss.add_parser(
        "check", help="compare the current messages with a schema snapshot; exit 1 if breaking",
        formatter_class=fmt,
        description="Compare the schemas of the current code with those in DIR (made by "
                    "'erpgw schema export') and list every change. Breaking: a message or "
                    "field removed, a type changed, a new required field, a field made "
                    "required or optional, enum values, constraints or a default changed, a "
                    "subject moved. Additive: a new message, a new optional field.\n\n"
                    "exit status: 0 compatible (additive changes only), 1 a breaking change, "
                    "2 DIR missing or unreadable.",
        epilog=f"example: erpgw schema check --against {SNAPSHOT} --json")
    ck.add_argument("--against", type=Path, metavar="DIR",
                    help="directory of the snapshot to compare with (default: the snapshot "
                         "installed with this release)")
    ck.add_argument("--json", action="store_true",
                    help="print one JSON object: against, compatible, breaking[], additive[]")
    ck.set_defaults(func=cmd_check)
