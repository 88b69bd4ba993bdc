"""Broker identities: one NKey user per role, and what each role may publish and subscribe.

Theory of operation: the embedded broker accepts only the NKey users written into its config;
an anonymous client, or one presenting a key the config does not name, is refused
(``Authorization Violation``). ``ensure_seeds`` creates one Ed25519 seed per role in the
identities directory on first start (directory 0700, each seed file 0600; existing seeds are
kept, so clients configured earlier keep working) and returns the public keys;
``authorization_block`` renders the server's ``authorization { users = [...] }`` with every
role's allow-lists, built from the subjects and the durable consumers the gateway provisions.

Least privilege, per role (see docs/security.md for the table):

* every role receives replies only on its own inbox prefix ``_INBOX.<role>.>`` (its client is
  connected with that ``inbox_prefix``), so no role can read another's replies or deliveries;
* a consuming role may fetch (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>``), read the info
  of and ack (``$JS.ACK.<stream>.<durable>.>``) its own durable consumers only;
* only ``admin`` may create, update, delete or purge streams and consumers or delete
  messages (the whole ``$JS.API.>``); the gateway provisions with it, then closes it;
* ``monitor`` may only subscribe to ``<prefix>.mon.>`` (and its inbox) and publish nothing.

Seeds never leave the identities directory: the server's config holds only public keys.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nkeys

from actors.infra.bus import NatsAuth, client_tls
from actors.infra.kv import bucket_stream
from actors.infra.secret_file import SecretFileProblem, read_secret_file
from actors.infra.state import bucket_name
from contracts import LANES, GatewayError, Subjects

from .config import Config

__all__ = [
    "ACTOR_ROLE",
    "CONSUMER_ROLE",
    "ROLES",
    "IdentityError",
    "Permissions",
    "auth_for",
    "authorization_block",
    "ensure_seeds",
    "gateway_consumers",
    "identities_dir",
    "inbox_prefix",
    "role_auth",
    "role_permissions",
    "seed_path",
]

# Every identity of the embedded broker. The gateway process holds the first ones, one
# connection each; `operator` is the CLI's (dlq, replay, reconcile, trace), `monitor` the
# dashboard's, `admin` provisioning's (and the bench's raw baselines').
ROLES: tuple[str, ...] = (
    "ingress", "sync", "router", "erp", "revenue", "usage", "partner", "commercial",
    "deadletter", "telemetry", "reconciler", "close", "auditor", "limits", "operator",
    "monitor", "sync-client", "admin",
)

# Which role fetches from each durable consumer (its name as provisioned by the gateway).
CONSUMER_ROLE: Mapping[str, str] = {
    "invoice-router": "router",
    "credit-router": "router",
    "payment-router": "router",
    "commission-router": "router",
    "erp-journal": "erp",
    "revenue-billing": "revenue",
    "usage-aggregator": "usage",
    "partner-settlement": "partner",
    "deal-saga": "commercial",
    "subscription-sync": "commercial",
    "dlq-advisories": "deadletter",
    "audit-actions": "auditor",
    "audit-letters": "auditor",
}

# Which role's connection each child of the gateway's supervision tree runs on.
ACTOR_ROLE: Mapping[str, str] = {
    **CONSUMER_ROLE,
    "billing-ingress": "ingress",
    "usage-intake": "ingress",
    "sync-lane": "sync",
    "metrics": "telemetry",
    "reconciler": "reconciler",
    # Reads the DLQ stream only (letters and resolution markers), as the reconciler does.
    "dlq-expiry": "reconciler",
    "revenue-gl": "close",
    "audit-anchors": "auditor",
    "rate-limiter": "limits",
}

SEED_SUFFIX = ".nk"


class IdentityError(GatewayError):
    code = "broker.identity"


@dataclass(frozen=True)
class Permissions:
    """A role's allow-lists (``publish_deny`` is checked after ``publish``)."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    allow_responses: bool = False
    unrestricted: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)


def inbox_prefix(role: str) -> str:
    """The inbox prefix of ``role``'s connection: replies and pull deliveries land under it."""
    return f"_INBOX.{role}"


def seed_path(identities_dir: Path, role: str) -> Path:
    return identities_dir / f"{role}{SEED_SUFFIX}"


def _read_seed(path: Path) -> str:
    """The seed in ``path``, refused when others may read it (S15)."""
    return read_secret_file(path, "broker identity seed", lambda kind, message: IdentityError(
        message, code="broker.identity_mode" if kind == "mode" else "broker.identity_invalid"))


def ensure_seeds(identities_dir: Path, roles: Iterable[str] = ROLES) -> dict[str, str]:
    """Create the missing seeds (dir 0700, files 0600); ``{role: public key}``.

    Raises ``IdentityError`` when a seed file is unreadable, invalid or open to others.
    """
    identities_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(identities_dir, 0o700)  # also tighten a directory made earlier
    out: dict[str, str] = {}
    for role in roles:
        path = seed_path(identities_dir, role)
        if not path.exists():
            seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(seed + b"\n")
        out[role] = public_key(path)
    return out


def public_key(path: Path) -> str:
    """The public key (``U…``) of the seed in ``path``; raises ``IdentityError``."""
    seed = _read_seed(path)
    try:
        kp = nkeys.from_seed(bytearray(seed.encode()))
    except (nkeys.NkeysError, ValueError) as exc:
        raise IdentityError(f"{path}: not a readable NKey seed ({type(exc).__name__})",
                            code="broker.identity_invalid") from exc
    try:
        return str(kp.public_key.decode())
    finally:
        kp.wipe()


def _consumer_rights(stream: str, durable: str) -> list[str]:
    return [f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>"]


def _kv_rights(subjects: Subjects, kind: str, *, write: bool = True) -> list[str]:
    """Read (direct gets, the bucket's key listing) and, with ``write``, conditional writes
    on one shared bucket (``actors.infra.state``); never delete or purge the bucket."""
    bucket = bucket_name(subjects, kind)
    stream = bucket_stream(bucket)
    # ``.>``: one key's direct get; the bare subject: a batched direct get of many keys.
    rights = [f"$JS.API.DIRECT.GET.{stream}.>", f"$JS.API.DIRECT.GET.{stream}",
              f"$JS.API.STREAM.INFO.{stream}"]
    return [*rights, f"$KV.{bucket}.>"] if write else rights


def role_permissions(subjects: Subjects,
                     consumers: Iterable[tuple[str, str]]) -> dict[str, Permissions]:
    """Every role's permissions; ``consumers`` are the ``(stream, durable)`` pairs provisioned.

    Raises ``IdentityError`` for a consumer no role is assigned to (a new consumer must be
    given its role here, never left to a catch-all).
    """
    p = subjects.prefix
    mon = f"{p}.mon.>"
    letters = f"{p}.dlq.*.*"
    resolved = f"{p}.dlq.resolved.>"
    streams = [subjects.stream(lane) for lane in LANES]
    every_stream = [*streams, subjects.dlq_stream, subjects.advisory_stream,
                    subjects.audit_stream]
    owned: dict[str, list[str]] = {}
    for stream, durable in consumers:
        role = CONSUMER_ROLE.get(durable)
        if role is None:
            raise IdentityError(f"consumer {durable} of {stream} has no broker role; add it to "
                                "gateway/identities.py CONSUMER_ROLE", code="broker.identity")
        owned.setdefault(role, []).extend(_consumer_rights(stream, durable))

    def actor(role: str, *publish: str, reads: Iterable[str] = (), dlq: bool = True,
              subscribe: Iterable[str] = (), responses: bool = False) -> Permissions:
        pub = [*publish, mon, *owned.get(role, []), *reads]
        if dlq:
            pub.append(letters)
        return Permissions(publish=tuple(pub),
                           subscribe=(f"{inbox_prefix(role)}.>", *subscribe),
                           publish_deny=(resolved,), allow_responses=responses)

    msg_get = [f"$JS.API.STREAM.MSG.GET.{s}" for s in streams]
    return {
        # Webhooks and the usage intake: canonical events onto the lanes, never commands.
        "ingress": actor("ingress", subjects.billing_events, subjects.lane_events("commercial"),
                         subjects.lane_events("usage")),
        # The synchronous lane: a NATS service (its requests, $SRV discovery, the replies) and
        # its follow-up decisions on the commercial stream.
        "sync": actor("sync", subjects.sync_follow_ups, dlq=False,
                      subscribe=(f"{p}.sync.>", "$SRV.>"), responses=True),
        # Routers turn events into platform commands (ERP journal, commissions).
        "router": actor("router", subjects.lane_commands("billing"),
                        subjects.lane_events("revpartner"),
                        *_kv_rights(subjects, "versions", write=False),
                        *_kv_rights(subjects, "parked")),
        # Platform adapters: their own consumers, and the events they announce.
        "erp": actor("erp", subjects.event("billing", "ledger.>"),
                     *_kv_rights(subjects, "versions")),
        "revenue": actor("revenue", subjects.lane_events("revpartner"),
                         *_kv_rights(subjects, "uploads")),
        "usage": actor("usage", subjects.lane_events("revpartner"),
                       *_kv_rights(subjects, "uploads")),
        "partner": actor("partner", subjects.lane_events("revpartner")),
        "commercial": actor("commercial", subjects.lane_events("commercial"),
                            subjects.lane_events("revpartner"), *_kv_rights(subjects, "sagas")),
        # Max-deliveries advisories → dead letters: reads the message the server gave up on.
        "deadletter": actor("deadletter", reads=msg_get),
        # The metrics publisher: lag of every consumer, DLQ counts, the mon subjects.
        "telemetry": actor("telemetry", dlq=False, reads=[
            *(f"$JS.API.CONSUMER.INFO.{s}.*" for s in every_stream),
            f"$JS.API.STREAM.INFO.{subjects.dlq_stream}"]),
        # The reconciler: reads the DLQ and the billing lane; repairs by replaying the ERP
        # command of a posting proven missing, or an invoice's issued event (revenue leg).
        # Runs only while it holds its lease (``leases`` bucket).
        "reconciler": actor("reconciler", subjects.billing_erp_commands, subjects.invoice_issued,
                            subjects.audit_action("reconciler", ">"),
                            *_kv_rights(subjects, "leases"), dlq=False, reads=[
            f"$JS.API.STREAM.MSG.GET.{subjects.dlq_stream}",
            f"$JS.API.STREAM.MSG.GET.{subjects.stream('billing')}"]),
        # Revenue to the GL on a schedule: the ERP journal commands of a close run, no more;
        # only while it holds its lease (``leases`` bucket).
        "close": actor("close", subjects.erp_journal, *_kv_rights(subjects, "leases"),
                       dlq=False, reads=_kv_rights(subjects, "versions", write=False)),
        # The rate limiter's link to the other processes: its membership key (``leases``
        # bucket) and the 429 holds they tell each other (core subject, no stream).
        "limits": actor("limits", f"{p}.limits.>", *_kv_rights(subjects, "leases"), dlq=False,
                        subscribe=[f"{p}.limits.>"]),
        # The audit trail: anchors of the ledger's chain; the audited actions it records.
        "auditor": actor("auditor", subjects.audit_anchor, dlq=False),
        # The operator's CLI: reads every stream; replays onto the lanes; resolution markers;
        # the audit records of its actions.
        "operator": Permissions(
            publish=(*(subjects.lane_wildcard(lane) for lane in LANES), resolved, mon,
                     subjects.audit_action("operator", ">"),
                     *(f"$JS.API.STREAM.INFO.{s}" for s in every_stream),
                     *(f"$JS.API.STREAM.MSG.GET.{s}" for s in every_stream),
                     *(f"$JS.API.CONSUMER.INFO.{s}.*" for s in every_stream),
                     *_kv_rights(subjects, "versions", write=False)),
            subscribe=(f"{inbox_prefix('operator')}.>",)),
        # A caller of the synchronous lane from outside the gateway (pricing validation,
        # order acceptance): requests, service discovery, and the follow-up decisions (core).
        "sync-client": Permissions(
            publish=(f"{p}.sync.>", "$SRV.>"),
            subscribe=(f"{inbox_prefix('sync-client')}.>", subjects.sync_follow_ups)),
        # The dashboard: read-only on the mon subjects.
        "monitor": Permissions(subscribe=(mon, f"{inbox_prefix('monitor')}.>"),
                               publish_deny=(">",)),
        "admin": Permissions(unrestricted=True),
    }


def _quote(items: Iterable[str]) -> str:
    return "[" + ", ".join(f'"{s}"' for s in items) + "]"


def authorization_block(public_keys: Mapping[str, str],
                        permissions: Mapping[str, Permissions]) -> str:
    """The server config's ``authorization`` block: one NKey user per role."""
    lines = ["authorization {", "  users = ["]
    for role, key in public_keys.items():
        perm = permissions[role]
        if perm.unrestricted:
            lines.append(f'    {{ nkey: "{key}" }}  # {role}')
            continue
        parts = []
        pub = []
        if perm.publish:
            pub.append(f"allow: {_quote(perm.publish)}")
        if perm.publish_deny:
            pub.append(f"deny: {_quote(perm.publish_deny)}")
        parts.append("publish: { " + ", ".join(pub) + " }")
        parts.append(f"subscribe: {{ allow: {_quote(perm.subscribe)} }}")
        if perm.allow_responses:
            parts.append("allow_responses: true")
        lines.append(f'    {{ nkey: "{key}", permissions: {{ {", ".join(parts)} }} }}  # {role}')
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def gateway_consumers(subjects: Subjects) -> list[tuple[str, str]]:
    """``(stream, durable)`` of every consumer the gateway provisions (``gateway.app``)."""
    from .app import (  # app imports broker -> us
        ADVISORY_CONSUMER,
        AUDIT_CONSUMER,
        CONSUMERS,
        LETTER_AUDIT_CONSUMER,
    )

    return [*((subjects.stream(lane), durable) for lane, durable, _ in CONSUMERS),
            (subjects.advisory_stream, ADVISORY_CONSUMER),
            (subjects.audit_stream, AUDIT_CONSUMER),
            (subjects.dlq_stream, LETTER_AUDIT_CONSUMER)]


def _identity_file_error(kind: SecretFileProblem, message: str) -> IdentityError:
    return IdentityError(message, code="broker.identity_mode" if kind == "mode"
                         else "broker.identity_missing")


def _read_secret(path: str, what: str) -> str:
    return read_secret_file(path, what, _identity_file_error)


def identities_dir(cfg: Config) -> Path:
    """Where the role seeds are: ``nats.identities_dir``, else ``<data_dir>/identities``."""
    return Path(cfg.nats.identities_dir) if cfg.nats.identities_dir else \
        cfg.data_path / "identities"


def auth_for(cfg: Config, role: str, *, required: bool = True) -> NatsAuth | None:
    """The credentials (see ``_credential``) and TLS (``nats.tls``) of a ``role`` connection."""
    auth = _credential(cfg, role, required=required)
    t = cfg.nats.tls
    if not t.enabled:
        return auth
    try:
        ctx = client_tls(t.ca, t.cert, t.key)
    except (OSError, ssl.SSLError) as exc:
        raise IdentityError(f"nats.tls: {exc}", code="config.invalid") from exc
    return dataclasses.replace(auth or NatsAuth(), tls=ctx)


def _credential(cfg: Config, role: str, *, required: bool = True) -> NatsAuth | None:
    """The credentials a connection of ``role`` presents to the broker of ``cfg``.

    An external broker's single credential (``nats.creds``, ``nats.nkey_seed_file`` or
    ``nats.user`` + password) wins; otherwise ``role``'s seed in the identities directory.
    With neither: ``None`` (anonymous) unless ``required``, else ``IdentityError`` naming the
    missing seed file. The embedded broker always requires the seed.
    """
    n = cfg.nats
    kinds = [k for k, v in (("nats.creds", n.creds), ("nats.nkey_seed_file", n.nkey_seed_file),
                            ("nats.user", n.user)) if v]
    if len(kinds) > 1:
        raise IdentityError(f"set only one of {', '.join(kinds)}", code="config.invalid")
    if n.creds:
        _read_secret(n.creds, "nats.creds")
        return NatsAuth(creds_file=n.creds)
    if n.nkey_seed_file:
        _read_secret(n.nkey_seed_file, "nats.nkey_seed_file")
        return NatsAuth(seed_file=n.nkey_seed_file)
    if n.user:
        password = n.password or (_read_secret(n.password_file, "nats.password_file")
                                  if n.password_file else "")
        if not password:
            raise IdentityError("nats.user is set but no password: set ERPGW_NATS_PASSWORD or "
                                "nats.password_file", code="config.invalid")
        return NatsAuth(user=n.user, password=password)
    directory = identities_dir(cfg)
    if seed_path(directory, role).exists() or required or not n.url:
        return role_auth(role, directory)
    return None


def role_auth(role: str, identities_dir: Path) -> NatsAuth:
    """The credentials of ``role`` from ``identities_dir``; raises ``IdentityError`` naming the
    missing seed file."""
    path = seed_path(identities_dir, role)
    if not path.is_file():
        raise IdentityError(
            f"no credential for the broker's {role} identity: {path} does not exist "
            "(point --data-dir at the data directory of the `erpgw up` that owns the broker, "
            "or configure nats.creds / nats.nkey_seed_file / nats.user)",
            code="broker.identity_missing")
    _read_seed(path)
    return NatsAuth(seed_file=str(path), inbox_prefix=inbox_prefix(role))
