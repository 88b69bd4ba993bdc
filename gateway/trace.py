"""Transaction lineage: follow one business transaction across systems, with timings.

The lineage is already recorded where the gateway keeps its durable state, so nothing extra is
written on the hot path: every hop is a message stored in a lane stream (with the time the
stream stored it) whose envelope carries the correlation id (the business transaction), the
causation id (the message that caused it) and the business key; the ledger records the ERP
outcome and its audit trail; the DLQ stream records failures. ``trace`` joins the three.

A query is a correlation id, a business key (``billing:in_000001:v1``) or an object id
(``in_000001``).

Across transactions: a payment is its own transaction, but it names the invoices it settles,
a commission names its invoice and a settlement its commissions. So the messages that match the
query directly name the objects of interest (their own and those they reference); every stored
message that references one of those objects joins the trace, transitively (a commission on a
paid invoice pulls in its settlement), and with it the rest of its transaction. References are
followed downstream only from what joined, so one settlement does not pull in every other
invoice it pays commission on. The revenue platform's lines come from the ledger's ``uploads``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from actors.infra import Ledger, NatsBus
from contracts import (
    LANES,
    ContractError,
    DeadLetter,
    Envelope,
    JsonCodec,
    MsgpackCodec,
    Subjects,
)

__all__ = ["Hop", "Trace", "references", "select_transactions", "trace"]

_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
_letters: JsonCodec[DeadLetter] = JsonCodec(DeadLetter)


class Hop(msgspec.Struct, frozen=True):
    at: float  # unix seconds
    system: str  # billing | gateway | erp | dlq
    step: str
    detail: str
    subject: str | None = None
    seq: int | None = None
    message_id: str | None = None
    caused_by: str | None = None


class Trace(msgspec.Struct, frozen=True):
    query: str
    correlation_ids: list[str]
    keys: list[str]
    hops: list[Hop]
    outcome: str  # posted | dead_lettered | in_flight | unknown


def _matches(env: Envelope, query: str) -> bool:
    return (query in (env.correlation_id, env.id, str(env.key), env.key.object_id))


# Fields naming another party, not a business object of the transaction: following them would
# join every transaction of a customer, partner or product.
_NOT_FOLLOWED = frozenset({"customer_id", "partner_id", "product_id", "line_id", "price_id",
                           "request_id", "quote_id"})
# How far references are followed (invoice → payment → commission → settlement is 3).
_MAX_ROUNDS = 4


def references(payload: Any) -> set[str]:
    """The ids of the business objects ``payload`` names: every ``*_id`` field, nested ones
    (a payment's applications, a settlement's lines) included, but parties and products."""
    out: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, str) and k.endswith("_id") and k not in _NOT_FOLLOWED and v:
                    out.add(v)
                elif isinstance(v, dict | list | tuple):
                    walk(v)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(msgspec.to_builtins(payload))
    return out


def select_transactions(envs: Sequence[Envelope], query: str) -> set[str]:
    """The correlation ids of the transactions ``query`` concerns (pure; see the module
    docstring): direct matches, then every message referencing an object already joined."""
    joined = [env for env in envs if _matches(env, query)]
    objects = {env.key.object_id for env in joined}
    for env in joined:
        objects |= references(env.payload)
    refs = [(env, references(env.payload)) for env in envs]
    correlations = {env.correlation_id for env in joined}
    for _ in range(_MAX_ROUNDS):
        grown = False
        for env, named in refs:
            if env.correlation_id not in correlations and named & objects:
                correlations.add(env.correlation_id)
                objects.add(env.key.object_id)
                grown = True
        if not grown:
            break
    return correlations


def _revenue_hops(rows: Iterable[Any]) -> list[Hop]:
    return [Hop(at=r.recorded_at, system="revenue", step=r.status,
                detail=f"line {r.line_id} {r.amount} {r.currency}"
                       + (f" batch {r.batch_id}" if r.batch_id else ""))
            for r in rows]


def _describe(env: Envelope) -> str:
    p = env.payload
    amount = getattr(p, "total", None)
    if amount is None and hasattr(p, "amount"):
        amount = p.amount
    currency = getattr(p, "currency", "")
    money = f" {amount} {currency}" if amount is not None else ""
    return f"{env.type} {env.key}{money}"


async def trace(bus: NatsBus, subjects: Subjects, query: str, *,
                ledger_path: Path | None = None, limit: int = 200_000) -> Trace:
    """Everything known about ``query``. Raises ``BrokerUnavailable`` / ``LedgerUnavailable``."""
    envs: list[tuple[Any, Envelope]] = []
    for lane in LANES:
        for m in await bus.scan(subjects.stream(lane), limit=limit):
            try:
                env = _codec.decode(m.data)
            except ContractError:
                continue
            envs.append((m, env))
    # Direct matches and what references them name the transactions; then everything in them.
    correlations = select_transactions([env for _, env in envs], query)
    hops: list[Hop] = []
    keys: set[str] = set()
    first_seen: set[str] = set()
    for m, env in envs:
        if env.correlation_id not in correlations:
            continue
        keys.add(str(env.key))
        if env.causation_id is None and env.id not in first_seen:
            first_seen.add(env.id)
            hops.append(Hop(at=env.occurred_at.timestamp(), system=env.source,
                            step="occurred", detail=f"{env.type} at the source platform",
                            message_id=env.id))
        hops.append(Hop(at=m.time, system="gateway", step="stored",
                        detail=_describe(env), subject=m.subject, seq=m.seq,
                        message_id=env.id, caused_by=env.causation_id))
    outcome = "in_flight" if hops else "unknown"
    for m in await bus.scan(subjects.dlq_stream, subject=subjects.dlq_letters, limit=limit):
        letter = _letters.decode(m.data)
        if letter.correlation_id in correlations or (
                letter.business_key and (letter.business_key in keys or query in
                                         letter.business_key)):
            hops.append(Hop(at=letter.failed_at.timestamp(), system="dlq",
                            step="dead_lettered",
                            detail=f"[{letter.code}] {letter.reason} "
                                   f"(after {letter.attempts} deliveries)",
                            subject=m.subject, seq=m.seq))
            outcome = "dead_lettered"
    if ledger_path is not None:  # the caller passes it only when the file exists
        ledger = await Ledger.open(ledger_path)
        try:
            rows: list[dict[str, Any]] = []
            for corr in correlations or {query}:
                rows += await ledger.find(correlation_id=corr)
            if not correlations:
                rows += await ledger.find(external_id=query)
            known = await ledger.lineage(correlations)
            invoices = {k.split(":")[1] for k in keys if k.startswith("billing:")}
            uploads = [u for inv in sorted(invoices or {query})
                       for u in await ledger.find_uploads("revenue", invoice_id=inv)]
        finally:
            await ledger.close()
        hops += _revenue_hops(uploads)
        hops += [Hop(at=at, system=system, step=step, detail=detail)
                 for at, system, step, detail in known]
        for row in rows:
            for a in row["audit"]:
                hops.append(Hop(at=float(a["at"]), system="erp", step=str(a["event"]),
                                detail=f"{row['amount']} {row['currency']} "
                                       f"external id {row['external_id']} {a['detail']}"))
            if row["status"] == "posted":
                outcome = "posted"
    hops.sort(key=lambda h: h.at)
    return Trace(query=query, correlation_ids=sorted(correlations), keys=sorted(keys),
                 hops=hops, outcome=outcome)


def render(t: Trace) -> str:
    if not t.hops:
        return f"nothing known about {t.query!r}"
    t0 = t.hops[0].at
    lines = [f"trace {t.query}  (transaction {', '.join(t.correlation_ids) or '?'})",
             f"  keys: {', '.join(t.keys) or '-'}"]
    start = datetime.fromtimestamp(t0).isoformat(timespec="milliseconds")
    lines.append(f"  start {start}")
    for h in t.hops:
        where = f"  [{h.subject} #{h.seq}]" if h.subject else ""
        lines.append(f"  +{(h.at - t0) * 1000:9.1f} ms  {h.system:<8} {h.step:<14} "
                     f"{h.detail}{where}")
    lines.append(f"  outcome: {t.outcome}")
    return "\n".join(lines)
