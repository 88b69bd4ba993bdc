"""Governance: JSON Schema and AsyncAPI generated from the structs, and a compatibility check.

Pure functions over the message registry (no I/O; the ``erpgw schema`` command reads and
writes the files):

- ``json_schemas()``: one JSON Schema (2020-12) per canonical message, rooted at the envelope
  as it travels, the payload fixed to that message (``$defs`` hold the structs), plus the
  dead letter. Keyed by type tag (``invoice.issued.v1``) — the file names of the export.
- ``asyncapi()``: an AsyncAPI 3.0 document of every lane subject, stream and message, the dead
  letter subjects and the monitoring subjects.
- ``compare(old, new)``: what changed between two schema sets, each change classed breaking
  or additive (see docs/contracts.md, "Evolution rules"). Within a version only additive
  changes are allowed: a new message, a new optional field. Everything else — a message or
  field removed, a type changed, a new required field, a field made required or optional,
  enum values or constraints or a default changed, a union alternative added or removed, a
  subject moved — breaks a reader or a writer of the other version sharing the stream.

Theory of operation of ``compare``: both documents are walked in parallel from the root,
``$ref``s resolved inside each document (struct names do not matter, shapes do), unions
matched alternative by alternative (tagged structs by tag, others by kind), objects property
by property. A recursion guard on (old ref, new ref) keeps recursive types finite.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from ._authority import AUTHORITY
from ._deadletter import DeadLetter
from ._message import Envelope
from ._registry import MESSAGES, MessageSpec
from ._subjects import LANES, Subjects
from ._sync import (
    OrderDecision,
    OrderRequest,
    PricingDecision,
    PricingRequest,
    SyncDecided,
    SyncError,
)

__all__ = [
    "API_VERSION",
    "JSON_SCHEMA_DIALECT",
    "Change",
    "Report",
    "asyncapi",
    "compare",
    "dumps",
    "format_report",
    "json_schemas",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
API_VERSION = "1.0.0"
DEAD_LETTER = "dead_letter"

Schema = dict[str, Any]


# ---------------------------------------------------------------------------- JSON Schema


def _components(ref_template: str) -> Schema:
    types: list[Any] = [spec.cls for spec in MESSAGES] + [Envelope, DeadLetter]
    _, defs = msgspec.json.schema_components(types, ref_template=ref_template)
    return defs


def _ref_names(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(prefix):
                yield value[len(prefix):]
            else:
                yield from _ref_names(value, prefix)
    elif isinstance(node, list):
        for item in node:
            yield from _ref_names(item, prefix)


def _closure(root: Any, defs: Schema, prefix: str) -> list[str]:
    seen: set[str] = set()
    todo = list(_ref_names(root, prefix))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_ref_names(defs[name], prefix))
    return sorted(seen)


def _meta(spec: MessageSpec, subjects: Subjects) -> dict[str, str]:
    meta = {"type": spec.type, "domain": spec.domain, "kind": spec.kind, "lane": spec.lane,
            "subject": subjects.for_type(spec.type), "stream": subjects.stream(spec.lane)}
    if spec.kind == "evt":
        meta["authority"] = AUTHORITY[spec.domain]
    return meta


def _enveloped(envelope: Schema, payload_ref: str) -> Schema:
    root = copy.deepcopy(envelope)
    root["properties"]["payload"] = {"$ref": payload_ref}
    root.pop("title", None)
    return root


def json_schemas(subjects: Subjects | None = None) -> dict[str, Schema]:
    """One self-contained JSON Schema 2020-12 document per canonical message, keyed by its
    type tag, plus ``dead_letter``. Deterministic: same code, same documents."""
    subjects = subjects or Subjects()
    prefix = "#/$defs/"
    defs = _components(prefix + "{name}")
    envelope = defs["Envelope"]
    out: dict[str, Schema] = {}
    for spec in MESSAGES:
        root = _enveloped(envelope, prefix + spec.cls.__name__)
        root["description"] = (
            f"{spec.summary} The canonical envelope carrying one `{spec.type}` payload.")
        out[spec.type] = {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": f"urn:erpgw:message:{spec.type}",
            "title": spec.type,
            "x-erpgw": _meta(spec, subjects),
            **root,
            "$defs": {name: defs[name] for name in _closure(root, defs, prefix)},
        }
    letter = copy.deepcopy(defs["DeadLetter"])
    letter.pop("title", None)
    out[DEAD_LETTER] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:erpgw:message:{DEAD_LETTER}",
        "title": DEAD_LETTER,
        "x-erpgw": {"subject": subjects.dlq("{lane}", "{code}"), "stream": subjects.dlq_stream},
        **letter,
    }
    plain: dict[str, Schema] = _plain(out)
    return plain


def _plain(doc: Any) -> Any:
    """JSON builtins only (a tuple default becomes a list), so a generated document equals
    the same document read back from a file."""
    return msgspec.json.decode(msgspec.json.encode(doc))


def dumps(doc: Any) -> bytes:
    """Canonical JSON for a committed file: keys sorted, two-space indent, final newline."""
    return msgspec.json.format(msgspec.json.encode(doc, order="sorted"), indent=2) + b"\n"


# ---------------------------------------------------------------------------- AsyncAPI

_ID = re.compile(r"[^A-Za-z0-9_]")


def _drop_discriminators(node: Any) -> Any:
    # msgspec writes OpenAPI-style discriminator objects; AsyncAPI's schema dialect defines
    # ``discriminator`` as a plain string. Every tagged struct pins its tag with an enum, so
    # nothing is lost by dropping them.
    if isinstance(node, dict):
        return {k: _drop_discriminators(v) for k, v in node.items() if k != "discriminator"}
    if isinstance(node, list):
        return [_drop_discriminators(v) for v in node]
    return node


def asyncapi(subjects: Subjects | None = None) -> Schema:
    """The AsyncAPI 3.0.0 document of the bus, as JSON-ready builtins (deterministic)."""
    subjects = subjects or Subjects()
    prefix = "#/components/schemas/"
    schemas: Schema = _drop_discriminators(_components(prefix + "{name}"))
    envelope = schemas.pop("Envelope")
    channels: Schema = {}
    operations: Schema = {}
    messages: Schema = {}
    msg_id_header = {
        "type": "object",
        "properties": {"Nats-Msg-Id": {
            "type": "string",
            "description": "deterministic per (causing message, step): JetStream drops a "
                           "republished duplicate inside the dedupe window"}},
    }

    def add_channel(cid: str, address: str, title: str, description: str, msg_key: str,
                    actions: tuple[str, ...], extra: Schema | None = None) -> None:
        channels[cid] = {"address": address, "title": title, "description": description,
                         "messages": {msg_key: {"$ref": f"#/components/messages/{msg_key}"}},
                         **(extra or {})}
        for action in actions:
            operations[f"{action}_{cid}"] = {
                "action": action, "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"{'publish' if action == 'send' else 'consume'} {title}",
                "messages": [{"$ref": f"#/channels/{cid}/messages/{msg_key}"}]}

    for spec in MESSAGES:
        name = spec.cls.__name__
        schemas[f"{name}Envelope"] = _enveloped(envelope, prefix + name)
        meta = _meta(spec, subjects)
        who = (f"Authority: {meta['authority']}." if spec.kind == "evt"
               else f"A command to the {AUTHORITY[spec.domain]} adapter.")
        messages[name] = {
            "name": spec.type, "title": name, "summary": spec.summary,
            "contentType": "application/msgpack", "headers": msg_id_header,
            "payload": {"$ref": f"{prefix}{name}Envelope"},
            "tags": [{"name": f"lane:{spec.lane}"}, {"name": f"domain:{spec.domain}"}],
        }
        add_channel(_ID.sub("_", spec.type), meta["subject"], spec.type,
                    f"{spec.summary} Lane `{spec.lane}`, JetStream stream `{meta['stream']}`. "
                    f"{who}", name, ("send", "receive"),
                    {"x-lane": spec.lane, "x-stream": meta["stream"], "x-domain": spec.domain})

    messages["DeadLetter"] = {
        "name": DEAD_LETTER, "title": "DeadLetter", "contentType": "application/json",
        "summary": "A message the gateway gave up on, with its error and history (replayable).",
        "payload": {"$ref": f"{prefix}DeadLetter"}, "tags": [{"name": "lane:dlq"}]}
    add_channel("dead_letters", subjects.dlq("{lane}", "{code}"), "dead letters",
                f"Dead letters, JSON, in stream `{subjects.dlq_stream}`.", "DeadLetter",
                ("send", "receive"),
                {"x-stream": subjects.dlq_stream, "parameters": {
                    "lane": {"enum": list(LANES), "description": "lane the message failed in"},
                    "code": {"description": "error code with dots as underscores "
                                            "(contract_not_authority)"}}})

    messages["DeadLetterResolution"] = {
        "name": "dead_letter_resolution", "title": "DeadLetterResolution",
        "contentType": "application/json", "tags": [{"name": "lane:dlq"}],
        "summary": "A marker that a dead letter was replayed or purged (the stream denies "
                   "deletes, so the history stays complete).",
        "payload": {"type": "object", "description": "seq, action (replayed | purged), at, by, "
                                                     "note; written by `erpgw dlq`"}}
    add_channel("dead_letter_resolutions",
                subjects.dlq_resolutions.replace(">", "{action}.{seq}"), "dead letter resolutions",
                f"Replay/purge markers, JSON, in stream `{subjects.dlq_stream}`.",
                "DeadLetterResolution", ("send", "receive"),
                {"x-stream": subjects.dlq_stream, "parameters": {
                    "action": {"enum": ["replayed", "purged"], "description": "what was done"},
                    "seq": {"description": "stream sequence of the dead letter"}}})

    messages["MetricsSnapshot"] = {
        "name": "metrics", "title": "MetricsSnapshot", "contentType": "application/json",
        "summary": "Statistics of every actor and consumer, once a second.",
        "payload": {"type": "object"}, "tags": [{"name": "lane:mon"}]}
    add_channel("metrics", subjects.metrics, "metrics",
                "Metric snapshots, core NATS (at most once), JSON.", "MetricsSnapshot", ("send",))
    messages["MonitorEvent"] = {
        "name": "monitor_event", "title": "MonitorEvent", "contentType": "application/json",
        "summary": "A breaker, SLA, DLQ, reconciliation or supervisor event.",
        "payload": {"type": "object"}, "tags": [{"name": "lane:mon"}]}
    add_channel("monitor_events", subjects.mon_event("{kind}"), "monitor events",
                "Monitoring events, core NATS (at most once), JSON.", "MonitorEvent", ("send",),
                {"parameters": {"kind": {"description": "breaker, sla, dlq, recon, supervisor"}}})

    # The synchronous lane: request/reply (NATS services), JSON, plus its follow-up events.
    sync_types = (PricingRequest, PricingDecision, OrderRequest, OrderDecision, SyncError,
                  SyncDecided)
    refs, sync_defs = msgspec.json.schema_components(sync_types,
                                                     ref_template=prefix + "{name}")
    schemas.update(_drop_discriminators(sync_defs))
    for cls, ref in zip(sync_types, refs, strict=True):
        name = cls.__name__
        messages[name] = {"name": name, "title": name, "contentType": "application/json",
                          "summary": (cls.__doc__ or name).strip().splitlines()[0],
                          "payload": ref, "tags": [{"name": "lane:sync"}]}
    for cid, address, request, decision in (
            ("sync_pricing_validate", subjects.sync_pricing_validate, "PricingRequest",
             "PricingDecision"),
            ("sync_order_accept", subjects.sync_order_accept, "OrderRequest", "OrderDecision")):
        channels[cid] = {
            "address": address, "title": address,
            "description": "Request/reply (NATS service `erpgw-sync`, discoverable on "
                           "`$SRV.>`); the deadline travels in the `Erpgw-Deadline-Ms` header. "
                           "The reply is the decision or a SyncError.",
            "messages": {m: {"$ref": f"#/components/messages/{m}"}
                         for m in (request, decision, "SyncError")}}
        channels[f"{cid}_reply"] = {"address": None, "title": f"{address} reply",
                                    "messages": {m: {"$ref": f"#/components/messages/{m}"}
                                                 for m in (decision, "SyncError")}}
        operations[f"receive_{cid}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"answer {address}",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{request}"}],
            "reply": {"channel": {"$ref": f"#/channels/{cid}_reply"},
                      "messages": [{"$ref": f"#/channels/{cid}_reply/messages/{decision}"},
                                   {"$ref": f"#/channels/{cid}_reply/messages/SyncError"}]}}
    add_channel("sync_decided", subjects.sync_decided("{operation}"), "sync follow-ups",
                "The final decision of a request first answered accepted_pending_validation; "
                f"JetStream stream `{subjects.stream('commercial')}`.", "SyncDecided",
                ("send", "receive"),
                {"parameters": {"operation": {"enum": ["pricing", "order"]}}})

    messages["Kpi"] = {
        "name": "kpi", "title": "Kpi", "contentType": "application/json",
        "summary": "Business KPIs with their SLA targets and breaches.",
        "payload": {"type": "object"}, "tags": [{"name": "lane:mon"}]}
    add_channel("kpi", f"{subjects.prefix}.mon.kpi", "KPIs",
                "KPIs (invoice posting latency, failure recovery, DLQ) every few seconds, core "
                "NATS, JSON.", "Kpi", ("send",))
    messages["Reconciliation"] = {
        "name": "reconciliation", "title": "Reconciliation", "contentType": "application/json",
        "summary": "A reconciliation break, repair or run report.",
        "payload": {"type": "object"}, "tags": [{"name": "lane:mon"}]}
    add_channel("reconciliation", f"{subjects.prefix}.mon.recon.{{kind}}", "reconciliation",
                "Breaks, repairs and run reports of the reconciler, core NATS, JSON.",
                "Reconciliation", ("send",),
                {"parameters": {"kind": {"enum": ["break", "repair", "report"]}}})
    messages["MaxDeliveriesAdvisory"] = {
        "name": "max_deliveries_advisory", "title": "MaxDeliveriesAdvisory",
        "contentType": "application/json",
        "summary": "The server's notice that a message ran out of deliveries (kept so that it "
                   "becomes a dead letter).",
        "payload": {"type": "object"}, "tags": [{"name": "lane:dlq"}]}
    add_channel("max_deliveries_advisories",
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}",
                "max-deliveries advisories",
                f"Written by nats-server; kept in stream `{subjects.advisory_stream}`.",
                "MaxDeliveriesAdvisory", ("receive",),
                {"x-stream": subjects.advisory_stream,
                 "parameters": {"stream": {"enum": [subjects.stream(lane) for lane in LANES]},
                                "consumer": {"description": "the durable consumer"}}})

    lanes = "\n".join(f"- `{lane}`: stream `{subjects.stream(lane)}`, subjects "
                      f"`{subjects.lane_wildcard(lane)}`" for lane in LANES)
    doc: Schema = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "erpgw canonical messages",
            "version": API_VERSION,
            "description": "Every subject, stream and message of the erpgw bus. Subjects read "
                           "`<prefix>.<lane>.<evt|cmd>.<type>`; one JetStream stream per lane "
                           "(workload isolation):\n" + lanes,
            "tags": [{"name": f"lane:{lane}", "description": f"stream {subjects.stream(lane)}"}
                     for lane in LANES],
        },
        "defaultContentType": "application/msgpack",
        "servers": {"embedded": {
            "host": "127.0.0.1:4222", "protocol": "nats",
            "description": "the nats-server the gateway starts by default (--nats-url for "
                           "another server or cluster)"}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
    plain: Schema = _plain(doc)
    return plain


# ---------------------------------------------------------------------------- compatibility


class Change(msgspec.Struct, frozen=True):
    """One difference between two schema sets. ``path`` points into the message
    (``$.payload.lines[].amount``); ``kind`` is a stable identifier (docs/contracts.md)."""

    schema: str
    path: str
    kind: str
    breaking: bool
    detail: str


class Report(msgspec.Struct, frozen=True):
    changes: list[Change]

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.breaking]

    @property
    def additive(self) -> list[Change]:
        return [c for c in self.changes if not c.breaking]

    @property
    def compatible(self) -> bool:
        return not self.breaking


_CONSTRAINTS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
                "minLength", "maxLength", "pattern", "minItems", "maxItems", "contentEncoding",
                "uniqueItems")
_MISSING = object()


class _Differ:
    def __init__(self, name: str, old_root: Schema, new_root: Schema) -> None:
        self.name = name
        self.roots = (old_root, new_root)
        self.changes: list[Change] = []
        self._active: set[tuple[str, str]] = set()

    def add(self, path: str, kind: str, breaking: bool, detail: str) -> None:
        self.changes.append(Change(self.name, path, kind, breaking, detail))

    def _resolve(self, node: Any, side: int) -> tuple[Any, str]:
        ref = ""
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"schema {self.name}: only local $refs are supported: {ref}")
            target: Any = self.roots[side]
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node, ref

    def node(self, old: Any, new: Any, path: str) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            od, nd = old.get("default", _MISSING), new.get("default", _MISSING)
            if od != nd:
                self.add(path, "default.changed", True,
                         f"default {_show(od)} -> {_show(nd)}")
        old, oref = self._resolve(old, 0)
        new, nref = self._resolve(new, 1)
        guard = (oref, nref)
        if oref and nref:
            if guard in self._active:
                return
            self._active.add(guard)
        try:
            self._compare(old, new, path)
        finally:
            self._active.discard(guard)

    def _compare(self, old: Any, new: Any, path: str) -> None:
        olds, news = _alternatives(old), _alternatives(new)
        if len(olds) > 1 or len(news) > 1:
            self._union(olds, news, path)
            return
        ok, nk = _kind(old), _kind(new)
        if ok != nk:
            self.add(path, "type.changed", True, f"type {ok} -> {nk}")
            return
        if old.get("format") != new.get("format"):
            self.add(path, "type.changed", True,
                     f"format {_show(old.get('format'))} -> {_show(new.get('format'))}")
        if ok == "enum":
            self._enum(old, new, path)
        for key in _CONSTRAINTS:
            ov, nv = old.get(key, _MISSING), new.get(key, _MISSING)
            if ov != nv:
                self.add(path, "constraint.changed", True, f"{key} {_show(ov)} -> {_show(nv)}")
        if ok == "object":
            self._object(old, new, path)
        elif ok == "array":
            self.node(old.get("items", {}), new.get("items", {}), path + "[]")

    def _enum(self, old: Schema, new: Schema, path: str) -> None:
        ov, nv = old["enum"], new["enum"]
        removed = [v for v in ov if v not in nv]
        added = [v for v in nv if v not in ov]
        if removed or added:
            parts = ([f"removed {removed}"] if removed else []) + (
                [f"added {added}"] if added else [])
            self.add(path, "enum.changed", True, "values " + ", ".join(parts))

    def _object(self, old: Schema, new: Schema, path: str) -> None:
        op, np_ = old.get("properties", {}), new.get("properties", {})
        oreq, nreq = set(old.get("required", ())), set(new.get("required", ()))
        for key in op:
            if key not in np_:
                self.add(f"{path}.{key}", "field.removed", True, "field removed")
        for key in np_:
            if key not in op:
                if key in nreq:
                    self.add(f"{path}.{key}", "field.added_required", True,
                             "new required field (messages already written lack it)")
                else:
                    self.add(f"{path}.{key}", "field.added", False, "new optional field")
        for key in op:
            if key not in np_:
                continue
            if key in nreq and key not in oreq:
                self.add(f"{path}.{key}", "field.now_required", True,
                         "optional field became required")
            elif key in oreq and key not in nreq:
                self.add(f"{path}.{key}", "field.now_optional", True,
                         "required field became optional (older readers still require it)")
            self.node(op[key], np_[key], f"{path}.{key}")

    def _union(self, olds: list[Any], news: list[Any], path: str) -> None:
        om = {self._signature(a, 0): a for a in olds}
        nm = {self._signature(a, 1): a for a in news}
        for sig, alt in om.items():
            if sig in nm:
                self.node(alt, nm[sig], path)
            else:
                self.add(path, "type.changed", True, f"alternative {sig} removed")
        for sig in nm:
            if sig not in om:
                self.add(path, "type.changed", True, f"alternative {sig} added")

    def _signature(self, alt: Any, side: int) -> str:
        node, _ = self._resolve(alt, side)
        kind = _kind(node)
        if kind == "object":
            for prop in node.get("properties", {}).values():
                if isinstance(prop, dict) and len(prop.get("enum", ())) == 1:
                    return f"object<{prop['enum'][0]}>"
        return kind


def _alternatives(node: Any) -> list[Any]:
    if isinstance(node, dict):
        for key in ("anyOf", "oneOf"):
            if key in node:
                return list(node[key])
    return [node]


def _kind(node: Any) -> str:
    if not isinstance(node, dict):
        return "any"
    if "enum" in node:
        return "enum"
    if "const" in node:
        return "const"
    t = node.get("type")
    if isinstance(t, list):
        return "|".join(sorted(t))
    if isinstance(t, str):
        return t
    if "properties" in node:
        return "object"
    return "any"


def _show(value: Any) -> str:
    return "(none)" if value is _MISSING or value is None else repr(value)


def compare(old: Mapping[str, Schema], new: Mapping[str, Schema]) -> Report:
    """Every change from schema set ``old`` to schema set ``new`` (both keyed by message
    name, as ``json_schemas()`` or an export directory gives them). Pure.

    Raises ``ValueError`` for a schema with a non-local ``$ref``.
    """
    changes: list[Change] = []
    for name in sorted(old):
        if name not in new:
            changes.append(Change(name, "$", "message.removed", True, "message removed"))
    for name in sorted(new):
        if name not in old:
            changes.append(Change(name, "$", "message.added", False, "new message"))
    for name in sorted(set(old) & set(new)):
        d = _Differ(name, old[name], new[name])
        osub = old[name].get("x-erpgw", {}).get("subject")
        nsub = new[name].get("x-erpgw", {}).get("subject")
        if osub != nsub:
            d.add("$", "subject.changed", True, f"subject {_show(osub)} -> {_show(nsub)}")
        d.node(old[name], new[name], "$")
        changes.extend(d.changes)
    return Report(changes)


def format_report(report: Report, against: str = "") -> str:
    """The human-readable diff ``erpgw schema check`` prints."""
    where = f" against {against}" if against else ""
    lines = [f"schema check{where}: {len(report.breaking)} breaking, "
             f"{len(report.additive)} additive change(s)"]
    for c in sorted(report.changes, key=lambda c: (not c.breaking, c.schema, c.path)):
        label = "BREAKING" if c.breaking else "additive"
        lines.append(f"  {label:8}  {c.schema}  {c.path}  {c.kind}: {c.detail}")
    lines.append("FAIL: incompatible change; publish it as a new version (a new type tag) "
                 "instead" if report.breaking else "OK: compatible")
    return "\n".join(lines)
