"""The bus: NATS JetStream behind our own small interface.

Theory of operation: one ``NatsBus`` per process holds one NATS connection (reconnecting
forever, pinging every 10 s so a dead link is noticed) and one JetStream context. Streams and
durable pull consumers are created or updated idempotently at start from ``StreamSettings`` /
``ConsumerSettings`` (file storage, ``discard=new``, a dedupe window, deny delete/purge,
explicit acks, bounded ``max_deliver`` and ``max_ack_pending``).

Publishing always waits for the PubAck and always carries a ``Nats-Msg-Id``: the id is the
caller's deterministic id, so a retry after a crash or timeout is deduplicated by the stream.
``publish_batch`` pipelines many publishes and waits for all their acks (one round trip of
latency for the whole batch instead of one per message).
A publish refused or unanswered for a retryable reason (in a cluster: a stream leader being
elected) is sent again with the same ids for up to ``election_retry_s`` before the caller
sees ``BrokerUnavailable``; a message sent again may land after others of its batch.

``add_service`` registers a request/reply service with nats-py's ``nats.micro`` (the NATS
services protocol, discoverable on ``$SRV.>``); its endpoints hand requests to the caller's
handler through ``ServiceRequest``, so no nats type leaves this module.

Errors: every nats-py exception is translated here. ``BrokerUnavailable`` (retryable) covers
timeouts, reconnects and a closed connection; ``BrokerRejected`` (permanent) covers a publish the
server refused for good (no stream for the subject, payload too large).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
import nats.micro
import nats.micro.request
import nats.micro.service
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from contracts import Permanent, Retryable, new_id

from . import pull

__all__ = [
    "BrokerRejected",
    "BrokerUnavailable",
    "ConsumerSettings",
    "Delivery",
    "NatsAuth",
    "NatsBus",
    "OutMsg",
    "PullConsumer",
    "ServiceEndpoint",
    "ServiceHandle",
    "ServiceRequest",
    "StoredMsg",
    "StreamSettings",
    "client_tls",
    "mask_url",
    "server_list",
]

log = logging.getLogger("erpgw.bus")

# The server answers this error code when a stream exists with another configuration.
_STREAM_NAME_IN_USE = 10058
# Largest atomic batch nats-server accepts (a larger one is refused with 10199).
MAX_ATOMIC = 1000
# Smallest batch worth an atomic commit. nats-server 2.15 answers an atomic batch's commit in
# about 8 ms whatever its size (2-core box, ``sync_interval: always``), and a pipelined publish
# in about 0.7 ms each; they cross near 12 messages (docs/benchmarks.md, "Small batches"). A
# smaller batch (the common case at light load) is published message by message, pipelined:
# same per-message outcomes, same ids, so nothing else changes for the caller.
ATOMIC_FROM = 9
# An atomic batch holding an id the stream already stored (or one id twice) is refused whole.
_ATOMIC_DUPLICATE = 10201
# The stream reached max_bytes / max_msgs with discard=new: it refuses new messages.
_STORAGE_FULL = frozenset({10077, 10078})
# How long a publish refused or unanswered (a stream leader election in a cluster: no
# responders, a timeout, "JetStream not current") is sent again, with the same ids.
ELECTION_RETRY_S = 10.0


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAckBody(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    error: _ApiError | None = None


_pub_ack = msgspec.json.Decoder(_PubAckBody)


class BrokerUnavailable(Retryable):
    code = "broker.unavailable"


class BrokerRejected(Permanent):
    code = "broker.rejected"


def client_tls(ca: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    """A client TLS context that always verifies the server (``ca``: its CA bundle; empty:
    the system's trust store) and the hostname; ``cert`` + ``key``: the client's certificate
    for mutual TLS. Verification cannot be turned off here, by design."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key or None)
    return ctx


def mask_url(url: str) -> str:
    """``url`` with any password (or token) in its user-info replaced by ``***``."""
    out = []
    for part in url.split(","):
        try:
            parsed = urllib.parse.urlsplit(part)
        except ValueError:
            out.append("***")
            continue
        if parsed.password is not None or (parsed.username and "@" in parsed.netloc):
            host = parsed.netloc.rpartition("@")[2]
            user = parsed.username if parsed.password is not None else ""
            netloc = f"{user}:***@{host}" if user else f"***@{host}"
            part = urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
        out.append(part)
    return ",".join(out)


_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})


def server_list(url: str | Sequence[str]) -> list[str]:
    """The seed servers of ``url``: a list, or one string of comma-separated URLs, each
    ``nats://``, ``tls://``, ``ws://`` or ``wss://`` with a host (blanks around commas ignored).

    nats-py takes a list of servers; a comma-separated string would be parsed as one URL.
    Raises ``ValueError`` naming the offending entry (masked) when one is not a server URL.
    """
    parts = url.split(",") if isinstance(url, str) else list(url)
    out: list[str] = []
    for raw in parts:
        one = raw.strip()
        if not one:
            continue
        try:
            parsed = urllib.parse.urlsplit(one)
            _port = parsed.port  # a port that is not a number raises here
        except ValueError as exc:
            raise ValueError(f"{mask_url(one)!r} is not a server URL ({exc})") from None
        if parsed.scheme not in _SCHEMES or not parsed.hostname:
            raise ValueError(f"{mask_url(one)!r} is not a server URL (want "
                             "nats://host:port, tls://, ws:// or wss://)")
        out.append(one)
    if not out:
        raise ValueError("no server URL given")
    return out


@dataclass(frozen=True)
class NatsAuth:
    """How a connection proves who it is (at most one of seed, creds, user/password), its
    inbox prefix and its TLS context. ``repr`` never shows the password."""

    seed_file: str = ""  # an NKey seed file (``S…``)
    creds_file: str = ""  # a JWT + NKey credentials file
    user: str = ""
    password: str = ""
    inbox_prefix: str = ""  # replies land under it (per-role prefixes; see gateway/identities)
    tls: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        kind = ("seed " + self.seed_file if self.seed_file else
                "creds " + self.creds_file if self.creds_file else
                f"user {self.user} (password hidden)" if self.user else "anonymous")
        return f"NatsAuth({kind}, inbox={self.inbox_prefix or '_INBOX'}, tls={bool(self.tls)})"

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.seed_file:
            opts["nkeys_seed"] = self.seed_file
        if self.creds_file:
            opts["user_credentials"] = self.creds_file
        if self.user:
            opts["user"] = self.user
            opts["password"] = self.password
        if self.inbox_prefix:
            opts["inbox_prefix"] = self.inbox_prefix
        if self.tls is not None:
            opts["tls"] = self.tls
        return opts


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Stream settings for money subjects (RELIABILITY.md (c))."""

    replicas: int = 1
    duplicate_window_s: float = 600.0
    max_age_s: float = 14 * 24 * 3600.0
    max_bytes: int = 1024**3  # per stream; the embedded server lets all reserve 16 GB
    max_msg_size: int = 256 * 1024


class ConsumerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Durable pull consumer settings (RELIABILITY.md (c)).

    No server-side ``backoff``: it would silently override ``ack_wait`` with its first value.
    Retries are spaced by ``nak(delay)`` from the actor's own backoff policy instead.
    """

    ack_wait_s: float = 30.0
    max_deliver: int = 8
    # In-flight (unacknowledged) messages per consumer. 512: the ERP poster holds up to
    # three batches of 100 (``actors.erp.poster``, "Batches in flight"), the router one of
    # 256.
    max_ack_pending: int = 512
    # Per durable consumer (its name), instead of ``max_ack_pending``: the limit is the
    # consumer's, shared by every process that fetches from it, so with N processes it should
    # be at least N times what one of them holds (its largest batch; three for the ERP
    # poster's).
    max_ack_pending_by: dict[str, int] = msgspec.field(default_factory=dict)

    def ack_pending_of(self, durable: str) -> int:
        return self.max_ack_pending_by.get(durable, self.max_ack_pending)


@dataclass(frozen=True, slots=True)
class OutMsg:
    """One message to publish: ``msg_id`` must be deterministic (see ``contracts.derive_id``)."""

    subject: str
    data: bytes
    msg_id: str
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """A message as the stream stores it (for tools: DLQ, trace, replay)."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time: float  # unix seconds the stream stored it


def delivery_of(msg: Msg) -> tuple[int, int]:
    """``(times delivered, stream sequence)`` of a message fetched from a consumer, read from
    its ack subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
    seq>.<time>.<pending>``, or the newer form with ``<domain>.<account hash>`` after
    ``$JS.ACK`` (and possibly a token more). nats-py's ``msg.metadata`` reads the same
    subject into a dataclass with a ``datetime``, at every fetch of every message (1.5 % of
    the gateway's samples at max); anything else goes through it, and so raises as it does."""
    tokens = (msg.reply or "").split(".")
    if (len(tokens) == 9 or len(tokens) >= 11) and tokens[0] == "$JS" and tokens[1] == "ACK":
        at = 4 if len(tokens) == 9 else 6
        delivered, seq = tokens[at], tokens[at + 1]
        if delivered.isdigit() and seq.isdigit():
            return int(delivered) or 1, int(seq)
    md = msg.metadata
    return md.num_delivered or 1, md.sequence.stream if md.sequence else 0


class Delivery:
    """A message fetched from a pull consumer, with its ack verbs.

    Ack verbs never raise: an ack lost to a broken connection only causes a redelivery, which
    the ledger and the platforms' idempotency keys make harmless. They return False when the
    ack could not be sent.
    """

    __slots__ = ("_msg", "num_delivered", "settled", "stream_seq")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.settled = False
        self.num_delivered, self.stream_seq = delivery_of(msg)

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def headers(self) -> dict[str, str]:
        return self._msg.headers or {}

    async def _verb(self, name: str, coro: Any) -> bool:
        if name != "in_progress":
            self.settled = True
        try:
            await coro
            return True
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.debug("%s of seq %s not sent: %r", name, self.stream_seq, exc)
            return False

    async def ack(self) -> bool:
        return await self._verb("ack", self._msg.ack())

    async def nak(self, delay: float | None = None) -> bool:
        return await self._verb("nak", self._msg.nak(delay=delay))

    async def term(self) -> bool:
        return await self._verb("term", self._msg.term())

    async def in_progress(self) -> bool:
        return await self._verb("in_progress", self._msg.in_progress())


class PullConsumer:
    """A bound durable pull consumer."""

    def __init__(self, bus: NatsBus, sub: JetStreamContext.PullSubscription, stream: str,
                 durable: str) -> None:
        self._bus = bus
        self._sub = sub
        self.stream = stream
        self.durable = durable
        # A batch taken from the subscription's queue in one go (``actors.infra.pull``), or
        # nats-py's own fetch where its internals are not what that reads.
        self._drained = pull.supported(sub)

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages, waiting at most ``timeout`` s; ``[]`` when none arrived.

        Raises ``BrokerUnavailable`` when the connection is down (the caller waits and retries).
        """
        try:
            msgs = (await pull.fetch(self._sub, batch, timeout) if self._drained
                    else await self._sub.fetch(batch, timeout=timeout))
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                nats.errors.NoServersError, nats.errors.StaleConnectionError) as exc:
            raise BrokerUnavailable(f"fetch from {self.durable}: {exc!r}") from exc
        except nats.js.errors.APIError as exc:
            raise BrokerUnavailable(f"fetch from {self.durable}: {exc}") from exc
        except nats.errors.Error as exc:
            raise BrokerUnavailable(f"fetch from {self.durable}: {exc!r}") from exc
        return [Delivery(m) for m in msgs]

    async def pending(self) -> tuple[int, int]:
        """``(num_pending, num_ack_pending)`` of this consumer; raises ``BrokerUnavailable``."""
        return await self._bus.consumer_pending(self.stream, self.durable)


class ServiceRequest:
    """One request to a service endpoint (see ``NatsBus.add_service``).

    ``respond`` never raises: a reply lost to a broken connection is the requester's timeout.
    """

    __slots__ = ("_req",)

    def __init__(self, req: nats.micro.request.Request) -> None:
        self._req = req

    @property
    def subject(self) -> str:
        return self._req.subject

    @property
    def headers(self) -> Mapping[str, str]:
        return self._req.headers or {}

    @property
    def data(self) -> bytes:
        return self._req.data

    async def respond(self, data: bytes, *, headers: Mapping[str, str] | None = None) -> bool:
        """Send the reply; False when it could not be sent (no reply subject, connection)."""
        try:
            await self._req.respond(data, headers=dict(headers) if headers else None)
            return True
        except (ValueError, nats.errors.Error, OSError) as exc:
            log.debug("reply on %s not sent: %r", self.subject, exc)
            return False


ServiceHandler = Callable[[ServiceRequest], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """An endpoint of a NATS service: requests on ``subject`` go to ``handler``.

    ``handler`` runs in the endpoint subscription's own task (nats-py delivers one message at
    a time per subscription), so it must only hand the request over (a bounded stream) and
    return; anything it raises is logged and answered with a generic service error.
    """

    name: str
    subject: str
    handler: ServiceHandler
    metadata: Mapping[str, str] | None = None


class ServiceHandle:
    """A running NATS service (``NatsBus.add_service``): its identity, and ``stop``."""

    def __init__(self, service: nats.micro.service.Service) -> None:
        self._service = service

    @property
    def id(self) -> str:
        return self._service.id

    def info(self) -> dict[str, Any]:
        """What ``$SRV.INFO`` answers (name, id, version, endpoints)."""
        info: dict[str, Any] = self._service.info().to_dict()
        return info

    async def stop(self) -> None:
        """Unsubscribe every endpoint and the ``$SRV`` subjects. Never raises."""
        try:
            await self._service.stop()
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.debug("stopping service %s: %r", self._service.id, exc)


class NatsBus:
    """One NATS connection with JetStream; see the module docstring."""

    def __init__(self, nc: Client, *, publish_timeout: float = 5.0,
                 election_retry_s: float = ELECTION_RETRY_S) -> None:
        self.atomic_commits = 0
        self.atomic_fallbacks = 0
        self.election_retries = 0  # publishes sent again after a retryable failure
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=publish_timeout)
        self._publish_timeout = publish_timeout
        self._election_retry_s = election_retry_s

    @classmethod
    async def connect(cls, url: str | Sequence[str], *, name: str = "erpgw",
                      connect_timeout: float = 5.0,
                      publish_timeout: float = 5.0, wait_for_server: float = 30.0,
                      auth: NatsAuth | None = None,
                      election_retry_s: float = ELECTION_RETRY_S,
                      ping_interval: float = 10.0) -> NatsBus:
        """Connect with ``auth`` (anonymous without) to one of the seed servers of ``url`` (a
        list, or comma-separated: see ``server_list``), waiting up to ``wait_for_server`` s for
        one to come up; once connected, reconnect forever (to any server of the cluster).

        Raises ``BrokerRejected`` (``broker.auth``) when the server refuses the credentials
        (``broker.url`` when ``url`` holds something that is not a server URL),
        ``BrokerUnavailable`` when it cannot be reached. A password in ``url`` is never shown.
        The client pings every ``ping_interval`` s and drops a link that left three unanswered.
        """
        connected = False
        try:
            servers = server_list(url)
        except ValueError as exc:
            raise BrokerRejected(f"nats.url: {exc}", code="broker.url") from None
        shown = mask_url(",".join(servers))
        refused: list[str] = []
        refused_evt = asyncio.Event()

        async def _error(exc: Exception) -> None:
            text = str(exc)
            if "authorization violation" in text.lower() and not connected:
                refused.append(text)
                refused_evt.set()
            # nats-py hands a JetStream error answer to a pipelined publish (e.g. 10158, "duplicate
            # message id is in process", while a stream leader is being elected) to this
            # callback instead of to the publish's future, which then times out and is retried
            # with the same id (_through_election): not worth a warning per message
            # (nats-io/nats.py issue 985: ``APIError.from_error`` raises instead of returning).
            quiet = not connected or isinstance(exc, nats.js.errors.APIError)
            log.log(logging.DEBUG if quiet else logging.WARNING, "nats: %s", exc)

        async def _disconnected() -> None:
            if connected and not nc_ref[0].is_closed and not nc_ref[0].is_draining:
                log.warning("nats: disconnected from %s; reconnecting", shown)

        async def _reconnected() -> None:
            log.info("nats: reconnected to %s", shown)

        nc_ref: list[Client] = []
        client = Client()
        # nats-py annotates some float options as int: pass them through one mapping.
        options: dict[str, Any] = {
            "name": name, "connect_timeout": connect_timeout, "allow_reconnect": True,
            "max_reconnect_attempts": -1, "reconnect_time_wait": 0.25,
            "ping_interval": ping_interval, "max_outstanding_pings": 3,
            "pending_size": 64 * 1024 * 1024, "error_cb": _error,
            "disconnected_cb": _disconnected, "reconnected_cb": _reconnected,
            **(auth.options() if auth else {})}
        attempt = asyncio.ensure_future(client.connect(servers, **options))
        # A refused credential stays refused: give up at the first refusal, not at the
        # end of `wait_for_server` (the client would retry it until then).
        gave_up = asyncio.ensure_future(refused_evt.wait())
        try:
            await asyncio.wait({attempt, gave_up}, timeout=wait_for_server,
                               return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            attempt.cancel()
            raise
        finally:
            gave_up.cancel()
        if not attempt.done():
            attempt.cancel()
        try:
            await attempt
            nc = client
        except (nats.errors.Error, OSError, TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(Exception):
                await client.close()  # the refused attempt's socket
            if refused or "authorization violation" in str(exc).lower():
                raise BrokerRejected(
                    f"NATS at {shown} refused the credentials ({auth or NatsAuth()!r}): "
                    "Authorization Violation", code="broker.auth") from exc
            raise BrokerUnavailable(f"cannot connect to NATS at {shown} "
                                    f"(waited {wait_for_server:g} s): {exc!r}") from exc
        nc_ref.append(nc)
        connected = True
        return cls(nc, publish_timeout=publish_timeout, election_retry_s=election_retry_s)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def jetstream(self) -> JetStreamContext:
        """The connection's JetStream context (for ``actors.infra.kv``)."""
        return self._js

    async def ensure_kv(self, config: api.KeyValueConfig) -> None:
        """Create the KV bucket ``config`` describes, or leave the existing one as it is.
        Raises ``BrokerUnavailable``."""
        try:
            await self._js.create_key_value(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise BrokerUnavailable(f"KV bucket {config.bucket}: {exc!r}") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"KV bucket {config.bucket}: {exc!r}") from exc

    # -- provisioning -------------------------------------------------------------------------

    async def ensure_stream(self, name: str, subjects: Sequence[str],
                            settings: StreamSettings) -> None:
        """Create the stream, or update it when it exists with other (editable) settings."""
        cfg = api.StreamConfig(
            name=name,
            subjects=list(subjects),
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.NEW,
            num_replicas=settings.replicas,
            duplicate_window=settings.duplicate_window_s,
            max_age=settings.max_age_s,
            max_bytes=settings.max_bytes,
            max_msg_size=settings.max_msg_size,
            deny_delete=True,
            deny_purge=True,
            allow_rollup_hdrs=False,
            allow_atomic=True,  # group commit: one fsync for a whole batch (publish_atomic)
        )
        try:
            try:
                await self._js.add_stream(cfg)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _STREAM_NAME_IN_USE:
                    raise
                await self._js.update_stream(cfg)
        except nats.js.errors.APIError as exc:
            raise BrokerRejected(f"stream {name}: {exc}", code="broker.stream_config") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"stream {name}: {exc!r}") from exc

    async def ensure_consumer(self, stream: str, durable: str,
                              filter_subject: str | tuple[str, ...],
                              settings: ConsumerSettings) -> None:
        """Create or update a durable pull consumer with explicit acks, filtering one subject
        or several (a tuple)."""
        several = isinstance(filter_subject, tuple) and len(filter_subject) > 1
        cfg = api.ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject=None if several else (
                filter_subject[0] if isinstance(filter_subject, tuple) else filter_subject),
            filter_subjects=list(filter_subject) if several else None,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            max_ack_pending=settings.ack_pending_of(durable),
            replay_policy=api.ReplayPolicy.INSTANT,
        )
        try:
            await self._js.add_consumer(stream, cfg)
        except nats.js.errors.APIError as exc:
            raise BrokerRejected(f"consumer {stream}/{durable}: {exc}",
                                 code="broker.consumer_config") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"consumer {stream}/{durable}: {exc!r}") from exc

    async def pull(self, stream: str, durable: str) -> PullConsumer:
        """Bind to an existing durable consumer (see ``ensure_consumer``)."""
        try:
            sub = await self._js.pull_subscribe_bind(durable=durable, stream=stream,
                                                     pending_msgs_limit=4096)
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"bind {stream}/{durable}: {exc!r}") from exc
        return PullConsumer(self, sub, stream, durable)

    async def consumer_pending(self, stream: str, durable: str) -> tuple[int, int]:
        try:
            info = await self._js.consumer_info(stream, durable, timeout=2.0)
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"consumer info {stream}/{durable}: {exc!r}") from exc
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

    async def stream_messages(self, stream: str, subject: str | None = None) -> int:
        """How many messages ``stream`` holds (on ``subject`` only, if given).

        Raises ``BrokerUnavailable``.
        """
        try:
            info = await self._js.stream_info(stream, subjects_filter=subject)
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"stream info {stream}: {exc!r}") from exc
        if subject is None:
            return int(info.state.messages)
        return sum((info.state.subjects or {}).values())

    async def last_seq(self, stream: str) -> int:
        """The sequence of the last message ``stream`` stored (0: none). Raises
        ``BrokerUnavailable``."""
        try:
            info = await self._js.stream_info(stream)
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"stream info {stream}: {exc!r}") from exc
        return int(info.state.last_seq or 0)

    async def get_stored(self, stream: str, seq: int) -> StoredMsg | None:
        """Message ``seq`` of ``stream``, or None when it is gone. Raises ``BrokerUnavailable``."""
        try:
            raw = await self._js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"read {stream}#{seq}: {exc!r}") from exc
        return StoredMsg(seq=seq, subject=raw.subject or "", data=raw.data or b"",
                         headers=dict(raw.headers or {}),
                         time=raw.time.timestamp() if raw.time else 0.0)

    async def read_stream(self, stream: str, limit: int = 10_000) -> list[bytes]:
        """The payloads of the first ``limit`` messages of ``stream`` (for tools and reports)."""
        return [m.data for m in await self.scan(stream, limit=limit)]

    async def scan(self, stream: str, *, subject: str | None = None, start_seq: int = 1,
                   limit: int = 10_000) -> list[StoredMsg]:
        """Stored messages of ``stream`` from ``start_seq`` on, optionally only ``subject``
        (wildcards allowed), at most ``limit``. For tools (DLQ, trace, replay), not hot paths.

        Raises ``BrokerUnavailable``.
        """
        out: list[StoredMsg] = []
        seq = max(1, start_seq)
        try:
            while len(out) < limit:
                try:
                    raw = await self._js.get_msg(stream, seq, subject=subject or ">", next=True)
                except nats.js.errors.NotFoundError:
                    break
                if raw.seq is None:
                    break
                out.append(StoredMsg(seq=raw.seq, subject=raw.subject or "",
                                     data=raw.data or b"", headers=dict(raw.headers or {}),
                                     time=raw.time.timestamp() if raw.time else 0.0))
                seq = raw.seq + 1
        except (TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"read {stream}: {exc!r}") from exc
        return out

    # -- publishing ---------------------------------------------------------------------------

    @staticmethod
    def _headers(m: OutMsg) -> dict[str, str]:
        hdrs = {"Nats-Msg-Id": m.msg_id}
        if m.headers:
            hdrs.update(m.headers)
        return hdrs

    @staticmethod
    def _translate(exc: BaseException, subject: str) -> Exception:
        if isinstance(exc, (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError)):
            return BrokerUnavailable(f"no stream answered for {subject}",
                                     code="broker.no_stream")
        if isinstance(exc, nats.errors.MaxPayloadError):
            return BrokerRejected(f"message for {subject} exceeds the server payload limit",
                                  code="broker.payload_too_large")
        if isinstance(exc, nats.js.errors.APIError) and exc.err_code in _STORAGE_FULL:
            return BrokerUnavailable(
                f"stream for {subject} is full ({exc.description}); nothing was stored",
                code="broker.storage_full", retry_after=5.0)
        if isinstance(exc, nats.js.errors.ServiceUnavailableError):
            return BrokerUnavailable(f"JetStream unavailable for {subject}: {exc}")
        if isinstance(exc, nats.js.errors.APIError):
            desc = str(exc)
            if "maximum message size" in desc or "message size exceeds" in desc:
                return BrokerRejected(f"{subject}: {desc}", code="broker.payload_too_large")
            return BrokerUnavailable(f"publish to {subject}: {desc}", code="broker.api_error")
        return BrokerUnavailable(f"publish to {subject}: {exc!r}")

    async def publish(self, m: OutMsg, *, timeout: float | None = None) -> bool:
        """Publish and wait for the PubAck; returns True when the stream saw a duplicate id.

        A publish refused or unanswered for a retryable reason (a leader election) is sent
        again with the same ``msg_id`` for up to ``election_retry_s`` (``_through_election``).
        Raises ``BrokerUnavailable`` (retry with the same ``msg_id``) or ``BrokerRejected``.
        """
        try:
            ack = await self._js.publish(m.subject, m.data, headers=self._headers(m),
                                         timeout=timeout or self._publish_timeout)
            return bool(ack.duplicate)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            err = self._translate(exc, m.subject)
            err.__cause__ = exc
            first: Exception | bool = err
        (outcome,) = await self._through_election([m], [first], timeout=timeout)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _retryable(self, outcome: Exception | bool) -> bool:
        return (isinstance(outcome, BrokerUnavailable) and outcome.code != "broker.storage_full"
                and not self._nc.is_closed)

    async def _through_election(self, msgs: Sequence[OutMsg], out: list[Exception | bool], *,
                                timeout: float | None) -> list[Exception | bool]:
        """Send the messages whose outcome is retryable again, one by one with their own ids
        (the stream's dedupe window stores each once, so a publish that did land before its
        ack was lost comes back as a duplicate), backing off from 0.1 s to 1 s, until none is
        left or ``election_retry_s`` has passed. A cluster elects a new stream leader within a
        few seconds; until then publishes find no responder or time out.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._election_retry_s
        delay = 0.1
        while True:
            todo = [i for i, r in enumerate(out) if self._retryable(r)]
            if not todo or loop.time() + delay > deadline:
                return out
            log.debug("%d publish(es) to %s not stored (%s); again in %.1f s", len(todo),
                      msgs[todo[0]].subject, out[todo[0]], delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            self.election_retries += len(todo)
            again = await self._publish_each([msgs[i] for i in todo], timeout=timeout)
            for i, outcome in zip(todo, again, strict=True):
                out[i] = outcome

    async def publish_batch(self, msgs: Sequence[OutMsg], *,
                            timeout: float | None = None) -> list[Exception | None]:
        """Pipeline ``msgs`` and wait for every PubAck; one result per message, in order.

        ``None`` means stored (or already stored: a duplicate id); an exception is the
        translated error for that message. Never raises for a single message's failure.
        """
        if not msgs:
            return []
        first = await self._publish_each(msgs, timeout=timeout)
        return [r if isinstance(r, Exception) else None
                for r in await self._through_election(msgs, first, timeout=timeout)]

    async def publish_atomic(self, msgs: Sequence[OutMsg], *,
                             timeout: float | None = None) -> list[Exception | bool]:
        """Store ``msgs`` (all bound for one stream) with a single commit, or none of them;
        a batch of fewer than ``ATOMIC_FROM`` is published message by message instead,
        pipelined (faster below that size; callers read per-message outcomes either way).

        One result per message, in order: ``False`` stored, ``True`` already stored (a
        duplicate id), or the translated error. Why: with ``sync_interval: always`` every
        stored message costs the server an fsync; an atomic batch (``Nats-Batch-Id``,
        ``-Sequence``, ``-Commit``) costs one for the whole batch.

        The server refuses a whole batch that holds an id it has already stored (or the same
        id twice); then, and on any other failure of the commit, the batch is published again
        message by message with the same ids, which the dedupe window sorts out; what is still
        not stored for a retryable reason (a leader election) is sent again, same ids, for up
        to ``election_retry_s``. Never raises for a single message's failure.
        """
        if len(msgs) < ATOMIC_FROM:  # a small batch is faster pipelined (``ATOMIC_FROM``)
            if not msgs:
                return []
            each = await self._publish_each(msgs, timeout=timeout)
            return await self._through_election(msgs, each, timeout=timeout)
        if len(msgs) > MAX_ATOMIC:
            head = await self.publish_atomic(msgs[:MAX_ATOMIC], timeout=timeout)
            return head + await self.publish_atomic(msgs[MAX_ATOMIC:], timeout=timeout)
        first = await self._atomic_once(msgs, timeout=timeout)
        return await self._through_election(msgs, first, timeout=timeout)

    async def _atomic_once(self, msgs: Sequence[OutMsg], *,
                           timeout: float | None) -> list[Exception | bool]:
        batch_id = new_id()
        try:
            for seq, m in enumerate(msgs[:-1], 1):
                await self._nc.publish(m.subject, m.data, headers=self._headers(m) | {
                    "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(seq)})
            last = msgs[-1]
            reply = await self._nc.request(
                last.subject, last.data, timeout=timeout or self._publish_timeout,
                headers=self._headers(last) | {"Nats-Batch-Id": batch_id,
                                               "Nats-Batch-Sequence": str(len(msgs)),
                                               "Nats-Batch-Commit": "1"})
            ack = _pub_ack.decode(reply.data)
        except (nats.errors.Error, TimeoutError, OSError, msgspec.DecodeError) as exc:
            log.debug("atomic batch of %d not committed (%r); publishing one by one",
                      len(msgs), exc)
            ack = None
        if ack is not None and ack.error is None:
            self.atomic_commits += 1
            return [False] * len(msgs)
        if ack is not None and ack.error is not None:
            if ack.error.err_code in _STORAGE_FULL:
                full = BrokerUnavailable(
                    f"stream for {msgs[0].subject} is full ({ack.error.description}); "
                    "nothing was stored", code="broker.storage_full", retry_after=5.0)
                return [full] * len(msgs)
            log.debug("atomic batch of %d refused (%s); publishing one by one", len(msgs),
                      ack.error)
        self.atomic_fallbacks += 1
        return await self._publish_each(msgs, timeout=timeout)

    async def _publish_each(self, msgs: Sequence[OutMsg], *,
                            timeout: float | None) -> list[Exception | bool]:
        """Every message published on its own, all at once (each its own request and PubAck);
        one outcome per message, never raising for one message.

        Not nats-py's ``publish_async``: its reply handler raises, instead of failing the
        future, on an error the server answers with status 503 (a full stream, ``10077``), so
        such a publish went unanswered until the timeout and was then sent again as if lost
        (``tests/integration/test_storage_full.py``)."""
        wait = timeout or self._publish_timeout

        async def one(m: OutMsg) -> Exception | bool:
            try:
                ack = await self._js.publish(m.subject, m.data, headers=self._headers(m),
                                             timeout=wait)
            except (TimeoutError, nats.errors.TimeoutError):
                return BrokerUnavailable(f"no PubAck for {m.subject} in time",
                                         code="broker.timeout")
            except (nats.errors.Error, OSError) as exc:
                return self._translate(exc, m.subject)
            return bool(ack.duplicate)

        return list(await asyncio.gather(*(one(m) for m in msgs)))

    async def add_service(self, name: str, version: str, endpoints: Sequence[ServiceEndpoint],
                          *, description: str = "",
                          metadata: Mapping[str, str] | None = None,
                          stats: Callable[[str], dict[str, object]] | None = None,
                          ) -> ServiceHandle:
        """Register a NATS service (``nats.micro``: discoverable on ``$SRV.PING|INFO|STATS``)
        with ``endpoints``; returns its handle (``stop()`` on shutdown). ``stats(endpoint
        name)`` adds the caller's own figures to each endpoint's ``$SRV.STATS`` data.

        Raises ``BrokerUnavailable`` when the subscriptions cannot be made.
        """

        def wrap(ep: ServiceEndpoint) -> Callable[[nats.micro.request.Request], Awaitable[None]]:
            async def handler(req: nats.micro.request.Request) -> None:
                try:
                    await ep.handler(ServiceRequest(req))
                except Exception:
                    log.exception("service endpoint %s failed", ep.name)
                    try:
                        await req.respond_error("500", "internal error")
                    except (ValueError, nats.errors.Error, OSError) as exc:
                        log.debug("error reply on %s not sent: %r", ep.subject, exc)
            return handler

        try:
            service = await nats.micro.add_service(
                self._nc, name=name, version=version, description=description,
                metadata=dict(metadata or {}),
                stats_handler=(lambda es: stats(es.name)) if stats else None)
            for ep in endpoints:
                await service.add_endpoint(name=ep.name, subject=ep.subject,
                                           handler=wrap(ep), metadata=dict(ep.metadata or {}))
            # The server has every endpoint's subscription before the caller says "ready".
            await self._nc.flush(timeout=max(1, int(self._publish_timeout)))
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"service {name}: {exc!r}") from exc
        return ServiceHandle(service)

    async def subscribe(self, subject: str, handler: Callable[[bytes], Awaitable[None]]
                        ) -> Callable[[], Awaitable[None]]:
        """A core NATS subscription (at most once: messages published while this connection is
        away are not seen); ``handler`` gets each message's data. Returns the unsubscribe
        (never raises). Raises ``BrokerUnavailable``."""
        async def deliver(msg: Msg) -> None:
            await handler(msg.data)

        try:
            sub = await self._nc.subscribe(subject, cb=deliver)
            # The server has the subscription before the caller goes on.
            await self._nc.flush(timeout=max(1, int(self._publish_timeout)))
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"subscribe {subject}: {exc!r}") from exc

        async def unsubscribe() -> None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

        return unsubscribe

    async def emit(self, subject: str, data: bytes) -> None:
        """Core NATS publish (at most once) for monitoring subjects. Never raises."""
        try:
            await self._nc.publish(subject, data)
        except (nats.errors.Error, OSError) as exc:
            log.debug("emit %s dropped: %r", subject, exc)

    async def close(self) -> None:
        """Flush what is buffered (acks, publishes), then close. Never raises.

        Not ``drain()``: the actors have already finished and acked their batches, and a pull
        subscription's prefetched-but-unread messages would keep a drain waiting in vain
        (they are redelivered to whoever fetches next).
        """
        if self._nc.is_closed:
            return
        try:
            if self._nc.is_connected:
                await self._nc.flush(timeout=5)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.debug("flush before close: %r", exc)
        finally:
            if not self._nc.is_closed:
                await self._nc.close()
