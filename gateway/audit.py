"""The audit key and ``erpgw audit verify``: the keyed chain checked against its anchors.

The key (S19) is ``audit.key`` (or ``ERPGW_AUDIT_KEY``), else the file ``audit.key_file``
(default ``<data_dir>/audit.key``), which ``erpgw up`` creates on first start (mode 0600, 32
random bytes as hex) like the broker's seeds. A key file others may read is refused. Whoever
edits the ledger offline without the key cannot re-chain the rows after the edit; whoever
truncates the tail (or re-chains with the key) disagrees with an anchor on the audit stream.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from actors.audit import Anchor, anchor_mac, decode_anchor
from actors.infra.bus import NatsAuth, NatsBus
from actors.infra.ledger import AuditBreak, Ledger
from actors.infra.secret_file import SecretFileProblem, read_secret_file
from contracts import GatewayError, Subjects
from contracts.platforms.signing import same_secret

from .config import Config

__all__ = ["AuditError", "AuditReport", "audit_key", "identity_of", "key_path", "verify"]

KEY_FILE = "audit.key"
MIN_KEY_CHARS = 32


class AuditError(GatewayError):
    code = "audit.key"


def key_path(cfg: Config) -> Path:
    """Where the audit key file is: ``audit.key_file``, else ``<data_dir>/audit.key``."""
    return Path(cfg.audit.key_file) if cfg.audit.key_file else cfg.data_path / KEY_FILE


def _audit_key_error(kind: SecretFileProblem, message: str) -> AuditError:
    code = {"mode": "audit.key_mode", "missing": "audit.key_missing"}.get(kind, "config.invalid")
    return AuditError(message, code=code)


def audit_key(cfg: Config, *, create: bool = False) -> bytes:
    """The audit chain's HMAC key. ``create``: write a new key file when there is none (the
    gateway's first start). Raises ``AuditError`` naming the setting: a missing or short key,
    a key file others may read."""
    if cfg.audit.key:
        if len(cfg.audit.key) < MIN_KEY_CHARS:
            raise AuditError(f"audit.key: at least {MIN_KEY_CHARS} characters",
                             code="config.invalid")
        return cfg.audit.key.encode()
    path = key_path(cfg)
    if not path.exists():
        if not create:
            raise AuditError(f"audit.key_file {path} does not exist (point --data-dir at the "
                             "gateway's data directory, or set audit.key_file)",
                             code="audit.key_missing")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    value = read_secret_file(path, "audit.key_file", _audit_key_error)
    if len(value) < MIN_KEY_CHARS:
        raise AuditError(f"audit.key_file {path}: at least {MIN_KEY_CHARS} characters",
                         code="config.invalid")
    return value.encode()


def identity_of(auth: NatsAuth | None) -> str:
    """How an audit row names the broker identity of ``auth``: the NKey's public key (``U…``),
    ``user:<name>``, ``creds:<file name>`` or ``anonymous``. Never a secret."""
    if auth is None:
        return "anonymous"
    if auth.seed_file:
        from .identities import public_key

        return public_key(Path(auth.seed_file))
    if auth.user:
        return f"user:{auth.user}"
    if auth.creds_file:
        return f"creds:{Path(auth.creds_file).name}"
    return "anonymous"


@dataclass
class AuditReport:
    """What ``verify`` found. ``ok`` only when the chain verifies and agrees with every anchor
    read (and at least one anchor was read, unless anchors were not asked for)."""

    rows: int = 0
    head_seq: int = 0
    keyed_from: int | None = None
    anchors: int = 0
    last_anchor_seq: int | None = None
    bad_row: AuditBreak | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.bad_row is None and not self.problems

    def to_builtins(self) -> dict[str, object]:
        return {"ok": self.ok, "rows": self.rows, "head_seq": self.head_seq,
                "keyed_from": self.keyed_from, "anchors": self.anchors,
                "last_anchor_seq": self.last_anchor_seq,
                "bad_row": msgspec.to_builtins(self.bad_row) if self.bad_row else None,
                "problems": self.problems}


async def read_anchors(bus: NatsBus, subjects: Subjects, limit: int) -> list[tuple[int, bytes]]:
    """``(stream seq, payload)`` of the newest anchors on the audit stream, at most ``limit``
    (the newest one always: it is what shows a truncated tail). Raises ``BrokerUnavailable``."""
    last = await bus.last_seq(subjects.audit_stream)
    start = max(1, last - 2 * limit + 1)  # anchors and (rarer) actions share the stream
    msgs = await bus.scan(subjects.audit_stream, subject=subjects.audit_anchor,
                          start_seq=start, limit=2 * limit)
    return [(m.seq, m.data) for m in msgs[-limit:]]


async def verify(ledger: Ledger, key: bytes, anchors: list[tuple[int, bytes]] | None
                 ) -> AuditReport:
    """Check the chain (``Ledger.check_audit`` with ``key``) and, when ``anchors`` is given,
    that every anchor is authentic and the ledger holds its row with its hash: a missing row
    is a truncation, another hash a rewritten chain."""
    check = await ledger.check_audit(key)
    report = AuditReport(rows=check.rows, head_seq=check.head_seq, keyed_from=check.keyed_from,
                         bad_row=check.broken)
    if anchors is None:
        return report
    if not anchors:
        report.problems.append("no anchor on the audit stream: truncation cannot be ruled out")
    for stream_seq, data in anchors:
        try:
            a: Anchor = decode_anchor(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            report.problems.append(f"anchor #{stream_seq} is not an anchor record")
            continue
        report.anchors += 1
        if not same_secret(a.mac, anchor_mac(key, a.seq, a.hash, a.at)):
            report.problems.append(f"anchor #{stream_seq} (row {a.seq}) is not signed with "
                                   "the audit key")
            continue
        report.last_anchor_seq = max(report.last_anchor_seq or 0, a.seq)
        if a.seq == 0:
            continue
        held = await ledger.audit_hash_at(a.seq)
        if held is None:
            report.problems.append(
                f"row {a.seq} was anchored (anchor #{stream_seq}) but is missing: the audit "
                f"trail was truncated after row {check.head_seq}")
        elif not same_secret(held, a.hash):
            report.problems.append(f"row {a.seq} differs from anchor #{stream_seq}: the chain "
                                   "was rewritten")
    return report


def render(report: AuditReport) -> str:
    lines = [f"audit chain: {report.rows} rows, head {report.head_seq}, keyed from row "
             f"{report.keyed_from if report.keyed_from is not None else '- (not keyed)'}; "
             f"{report.anchors} anchors, last at row {report.last_anchor_seq}"]
    if (b := report.bad_row) is not None:
        lines.append(f"FIRST BAD ROW: seq {b.seq}, event {b.event!r}, key {b.key!r}: {b.reason}")
    lines += [f"PROBLEM: {p}" for p in report.problems]
    lines.append("OK" if report.ok else "FAILED")
    return "\n".join(lines)
