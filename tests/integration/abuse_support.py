"""The webhook listener as the gateway serves it (billing and partner webhooks, the usage
intake) over a real broker, without the rest of the gateway; and a raw HTTP/1.1 client that
sends exactly the bytes it is given (no library would send a 100 KiB header or a non-UTF-8
token)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

from actors.infra import NatsBus
from actors.ingress import PostRoute, WebhookIngress
from actors.platforms.billing import billing_source
from actors.platforms.partner import partner_source
from actors.usage import UsageDoor, UsageIntake
from contracts import LANES, Subjects
from gateway.app import provision
from gateway.broker import EmbeddedBroker, free_port
from gateway.config import Config, load_config

from .conftest import SECRET

TOKEN = "usage_test_token"


@dataclass
class Front:
    cfg: Config
    bus: NatsBus
    subjects: Subjects
    ingress: WebhookIngress
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stored(self) -> int:
        """Messages stored on every lane (what the listener published)."""
        return sum([await self.bus.stream_messages(self.subjects.stream(lane))
                    for lane in LANES])


@contextlib.asynccontextmanager
async def webhook_listener(broker: EmbeddedBroker, *, extra_routes: Mapping[str, PostRoute]
                           | None = None, **http: Any) -> AsyncIterator[Front]:
    """The listener on a free port with ``http`` settings over the test defaults."""
    port = free_port()
    cfg = load_config(env={}, overrides={
        "http": {"port": port, "max_body_bytes": 64 * 1024, **http},
        "billing": {"webhook_secrets": [SECRET]},
        "partner": {"webhook_secrets": [SECRET]},
        "usage": {"api_tokens": [TOKEN]},
    })
    bus = await NatsBus.connect(broker.url, auth=broker.auth())
    try:
        subjects = await provision(bus, cfg)
        door = UsageDoor()
        intake = UsageIntake("usage-intake", bus=bus, subjects=subjects, door=door,
                             api_tokens=cfg.usage.api_tokens)
        ingress = WebhookIngress(
            "billing-ingress", bus=bus, subjects=subjects, settings=cfg.http,
            sources=[billing_source(cfg.http.path, cfg.billing.webhook_secrets),
                     partner_source(cfg.partner.webhook_path, cfg.partner.webhook_secrets)],
            extra_post_routes={**door.routes(), **(extra_routes or {})})
        async with anyio.create_task_group() as tg:
            await tg.start(intake.run)
            await tg.start(ingress.run)
            try:
                yield Front(cfg, bus, subjects, ingress, port)
            finally:
                ingress.request_stop()
                intake.request_stop()
    finally:
        await bus.close()


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    doc: dict[str, Any] = field(default_factory=dict)


def parse_answer(data: bytes) -> RawAnswer:
    """One HTTP/1.1 answer (read to the connection's end). Raises ``AssertionError`` on
    anything that is not a complete answer with a JSON object body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete answer: {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    body = body[:length]
    doc = msgspec.json.decode(body)
    assert isinstance(doc, dict), body
    return RawAnswer(status, headers, body, doc)


def answered(data: bytes) -> bool:
    """``data`` holds a whole answer: its head and as many body bytes as it announced."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or b"0")
    return False


def raw_exchange(port: int, request: bytes, *, guard_s: float = 60.0,
                 until_answered: bool = False) -> RawAnswer:
    """Send ``request`` on a fresh connection, read until the server closes it (the requests
    carry ``Connection: close``; ``guard_s`` only guards against a hang). ``until_answered``:
    stop reading once the whole answer is in. After answering a request whose body it did not
    read to the end (a refusal, a body timeout), the server keeps the connection open for a
    while to drain it before closing; a caller that only judges the answer need not wait."""
    with socket.create_connection(("127.0.0.1", port), timeout=guard_s) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if until_answered and answered(b"".join(chunks)):
                break
    return parse_answer(b"".join(chunks))


def request_bytes(path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A POST with exactly these header lines (plus Host, Content-Length and Connection:
    close unless given)."""
    names = {n.lower() for n, _ in headers}
    lines = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [n + b": " + v for n, v in headers]
    if b"content-length" not in names and b"transfer-encoding" not in names:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if b"connection" not in names:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
