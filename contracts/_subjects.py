"""Subjects and streams: one prefix, one stream per lane (workload isolation).

A flood in one lane never queues work in another, because each lane has its own stream and
its own consumers. Subjects read ``<prefix>.<lane>.<evt|cmd>.<type>``:

======================================  ==========================================
``erpgw.billing.evt.invoice.issued.v1``  an invoice the billing platform issued
``erpgw.billing.cmd.erp.journal.v1``     a journal entry the ERP adapter must post
``erpgw.<lane>.evt.<type>``              any canonical message: ``for_type(type)``
``erpgw.dlq.<lane>.<code>``              dead letters (JSON)
``erpgw.dlq.resolved.<action>.<seq>``    a dead letter replayed or purged (JSON)
``erpgw.mon.metrics``                    1 s metric snapshots (core NATS, JSON)
``erpgw.audit.anchor``                   the audit chain's head (JSON, HMAC-signed)
``erpgw.audit.action.<role>.<action>``   an operator's or the reconciler's action (JSON)
``erpgw.sync.pricing.validate``          pricing validation (request/reply service, JSON)
``erpgw.sync.order.accept``              order acceptance (request/reply service, JSON)
``erpgw.commercial.sync.<area>.decided.v1``  final decision after a pending reply (JSON)
======================================  ==========================================

The sync lane has no stream: its requests are NATS service calls (``nats micro`` discovery on
``$SRV.>``). Only its follow-ups are stored, on the commercial stream but under
``commercial.sync.>``, never ``commercial.evt.>``: they are the gateway's JSON answers
(``contracts.SyncDecided``), not canonical envelopes, so envelope consumers filter
``commercial.evt.>`` and never see them.
"""

from __future__ import annotations

import msgspec

__all__ = ["LANES", "Subjects"]

# Durable lanes with a JetStream stream each. The sync lane is request/reply (no stream) and
# the mon lane is core NATS (at-most-once, for watching).
LANES: tuple[str, ...] = ("commercial", "billing", "usage", "revpartner")


_FOR_TYPE: dict[tuple[str, str], str] = {}  # (prefix, message type) -> subject


class Subjects(msgspec.Struct, frozen=True):
    prefix: str = "erpgw"

    def stream(self, lane: str) -> str:
        """JetStream stream name for a lane (``ERPGW_BILLING``)."""
        return f"{self.prefix.upper().replace('.', '_').replace('-', '_')}_{lane.upper()}"

    def lane_wildcard(self, lane: str) -> str:
        return f"{self.prefix}.{lane}.>"

    @property
    def invoice_issued(self) -> str:
        return f"{self.prefix}.billing.evt.invoice.issued.v1"

    @property
    def billing_events(self) -> str:
        return f"{self.prefix}.billing.evt.>"

    @property
    def erp_journal(self) -> str:
        return f"{self.prefix}.billing.cmd.erp.journal.v1"

    @property
    def billing_erp_commands(self) -> str:
        return f"{self.prefix}.billing.cmd.erp.>"

    def event(self, lane: str, type_: str) -> str:
        """``<prefix>.<lane>.evt.<type>``: an event of type ``type_`` on ``lane``."""
        return f"{self.prefix}.{lane}.evt.{type_}"

    def command(self, lane: str, type_: str) -> str:
        """``<prefix>.<lane>.cmd.<type>``: a command of type ``type_`` on ``lane``."""
        return f"{self.prefix}.{lane}.cmd.{type_}"

    def for_type(self, type_: str) -> str:
        """The subject of a canonical message type (``invoice.issued.v1``).

        Raises ``KeyError`` for a type that is not in the registry.
        """
        known = _FOR_TYPE.get((self.prefix, type_))
        if known is not None:  # asked for every message the gateway publishes
            return known
        from ._registry import MESSAGE_SPECS  # imported here: subjects stay self-contained

        spec = MESSAGE_SPECS[type_]
        name = spec.subject_type or spec.type
        subject = (self.event(spec.lane, name) if spec.kind == "evt"
                   else self.command(spec.lane, name))
        _FOR_TYPE[self.prefix, type_] = subject  # bounded: prefixes x registered types
        return subject

    def lane_commands(self, lane: str) -> str:
        return f"{self.prefix}.{lane}.cmd.>"

    @property
    def mon_wildcard(self) -> str:
        return f"{self.prefix}.mon.>"

    def dlq(self, lane: str, code: str) -> str:
        return f"{self.prefix}.dlq.{lane}.{code.replace('.', '_')}"

    @property
    def dlq_letters(self) -> str:
        """Every dead letter (exactly two tokens after ``dlq``: lane and code)."""
        return f"{self.prefix}.dlq.*.*"

    def dlq_resolved(self, action: str, seq: int) -> str:
        """Marker that dead letter ``seq`` was replayed or purged (kept: the stream denies
        deletes, so the history of every money event stays complete)."""
        return f"{self.prefix}.dlq.resolved.{action}.{seq}"

    @property
    def dlq_resolutions(self) -> str:
        return f"{self.prefix}.dlq.resolved.>"

    def lane_events(self, lane: str) -> str:
        return f"{self.prefix}.{lane}.evt.>"

    @property
    def advisory_stream(self) -> str:
        """Where the server's max-deliveries advisories for our streams are kept (they are
        core NATS, at most once: a stream keeps them until the DLQ worker has read them)."""
        return self.stream("advisories")

    def max_deliveries_advisories(self, lane: str) -> str:
        """The server's advisory subject for messages of ``lane``'s stream that ran out of
        deliveries (any consumer)."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream(lane)}.*"

    @property
    def dlq_stream(self) -> str:
        return self.stream("dlq")

    @property
    def dlq_wildcard(self) -> str:
        return f"{self.prefix}.dlq.>"

    # -- the audit trail's anchors and operator actions (gateway/audit.py) --------------------

    @property
    def audit_stream(self) -> str:
        """Anchors of the ledger's audit chain and audited actions (denies delete and purge)."""
        return self.stream("audit")

    @property
    def audit_wildcard(self) -> str:
        return f"{self.prefix}.audit.>"

    @property
    def audit_anchor(self) -> str:
        """The audit chain's head, published periodically (JSON, HMAC-signed)."""
        return f"{self.prefix}.audit.anchor"

    def audit_action(self, role: str, action: str) -> str:
        """An action to be audited, by broker identity ``role`` (only that role may publish
        under ``audit.action.<role>.>``, so the role in the subject is the broker's word)."""
        return f"{self.prefix}.audit.action.{role}.{action}"

    @property
    def audit_actions(self) -> str:
        return f"{self.prefix}.audit.action.>"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}.mon.metrics"

    def mon_event(self, kind: str) -> str:
        return f"{self.prefix}.mon.events.{kind}"

    # -- the synchronous lane (contracts._sync) ------------------------------------------------

    @property
    def sync_pricing_validate(self) -> str:
        """The pricing validation service's subject (request/reply)."""
        return f"{self.prefix}.sync.pricing.validate"

    @property
    def sync_order_accept(self) -> str:
        """The order acceptance service's subject (request/reply)."""
        return f"{self.prefix}.sync.order.accept"

    def sync_decided(self, operation: str) -> str:
        """Where the final decision of a pending ``operation`` (``pricing.validate`` or
        ``order.accept``) is published: ``<prefix>.commercial.sync.<pricing|order>.decided.v1``.
        """
        return f"{self.prefix}.commercial.sync.{operation.split('.', 1)[0]}.decided.v1"

    @property
    def sync_follow_ups(self) -> str:
        """Every follow-up of the sync lane (on the commercial stream)."""
        return f"{self.prefix}.commercial.sync.>"
