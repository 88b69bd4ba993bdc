"""Outbound HTTP to the platforms: one aiohttp session, errors translated into our tree.

A platform answer is sorted once, here, by what the caller should do:

- 2xx: returned as ``HttpResponse``;
- 429 and 503 with ``Retry-After``: ``Retryable`` with ``retry_after`` (never retry earlier);
- other 5xx, connection errors: ``Retryable`` (``http.server_error`` / ``http.connection``);
- a timeout after the request was sent: ``Ambiguous``: the platform may have committed the
  write, so the caller must retry with the same idempotency key (never treat it as failed);
- other 4xx: ``Permanent`` (``http.rejected``) with the platform's body for the dead letter.

The base URL comes from configuration only; the client never dials a host taken from a
payload (SSRF), and refuses any path that is not relative to its base.

TLS: an ``https`` base URL is always verified — the certificate chain against the system's trust
store plus the CAs of ``ca_file`` (a private CA allowed), and the host name; TLS 1.2 or newer.
There is no setting that turns verification off. A certificate refused is
``PlatformUnavailable`` with code ``http.certificate`` (retryable: nothing was sent, and a
fixed certificate or setting lets the traffic resume); another TLS failure (a plaintext server
behind an ``https`` URL) is ``http.tls``.

Credentials: a client built with ``signer`` asks it for the authentication headers of every
request immediately before sending (OAuth 1.0a signs method, URL and a fresh nonce; a bearer
token may be refreshed), so no request of that client can leave without them.

Tracing: made inside a traced hop (``actors.otel``), a request is a client span of its own and
carries that span's W3C ``traceparent`` header; outside a trace, or with tracing off, it is sent
as it was given.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from yarl import URL

from contracts import GatewayError, Permanent, Retryable

from .. import otel

__all__ = ["Ambiguous", "ClientTlsError", "HttpClient", "HttpResponse", "PlatformRejected",
           "PlatformUnavailable", "RequestObserver", "RequestSigner", "client_tls"]

# (platform, method, path, status or "timeout"/"connection_error", seconds): one request.
RequestObserver = Callable[[str, str, str, str, float], None]


class RequestSigner(Protocol):
    """What adds a platform's credentials to one request (``actors.platforms.auth``)."""

    async def headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]: ...


class PlatformUnavailable(Retryable):
    code = "http.unavailable"


class Ambiguous(Retryable):
    """The request may or may not have taken effect; retry with the same idempotency key."""

    code = "http.ambiguous"


class PlatformRejected(Permanent):
    code = "http.rejected"

    def __init__(self, message: str, *, status: int, body: str, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.body = body
        self.headers: Mapping[str, str] = headers or {}


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. a 202's Location


class ClientTlsError(GatewayError):
    code = "config.invalid"


def client_tls(ca_file: str = "", *, where: str = "platforms.ca_file") -> ssl.SSLContext:
    """The TLS context of every platform call: certificates and host names always verified,
    against the system's trust store plus the PEM CA bundle ``ca_file`` (if set).

    Raises ``ClientTlsError`` naming ``where`` when ``ca_file`` cannot be read or holds no
    PEM certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:  # an OSError too: first
            raise ClientTlsError(f"{where}: {ca_file} is not a PEM CA bundle "
                                 f"({exc.reason})") from exc
        except OSError as exc:
            raise ClientTlsError(f"{where}: cannot read {ca_file}: {exc.strerror}") from exc
    # What create_default_context promises, checked: verification is never off.
    if ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname:
        raise ClientTlsError(f"{where}: this Python's default TLS context does not verify")
    return ctx


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class HttpClient:
    """A keep-alive client for one platform base URL."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, max_connections: int = 16,
                 platform: str = "platform", signer: RequestSigner | None = None,
                 ca_file: str = "") -> None:
        self._base = base_url.rstrip("/")
        # Made now: a bad CA file stops the start naming the setting (``ClientTlsError``).
        self._tls = client_tls(ca_file)
        self._signer = signer
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self.platform = platform
        # Told of every request once it is answered or failed (monitoring); never raises.
        self.observer: RequestObserver | None = None

    def url(self, path: str) -> str:
        """The absolute URL ``path`` is sent to (what request signatures cover)."""
        return self._base + path

    async def __aenter__(self) -> HttpClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._tls),
            timeout=self._timeout,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, path: str, body: bytes, *,
                   headers: dict[str, str] | None = None) -> HttpResponse:
        """POST ``body`` (JSON) to ``base + path``; see the module docstring for what raises."""
        return await self.request("POST", path, body, headers=headers)

    async def get(self, path: str, *, headers: dict[str, str] | None = None) -> HttpResponse:
        """GET ``base + path``; see the module docstring for what raises."""
        return await self.request("GET", path, None, headers=headers)

    @property
    def base_url(self) -> str:
        return self._base

    @property
    def timeout_s(self) -> float:
        return float(self._timeout.total or 0.0)

    async def request(self, method: str, path: str, body: bytes | None, *,
                      headers: dict[str, str] | None = None) -> HttpResponse:
        """Send one request; see the module docstring for what raises. Inside a trace
        (``actors.otel``) it is a client span whose context goes out as ``traceparent``."""
        with otel.hop(f"{method} {self.platform}", kind="client", only_in_trace=True,
                      attributes={"http.request.method": method, "url.path": path,
                                  "erpgw.platform": self.platform}) as span:
            if span.traceparent is not None:
                headers = {**(headers or {}), "traceparent": span.traceparent}
            try:
                resp = await self._request(method, path, body, headers=headers)
            except PlatformRejected as err:
                span.set("http.response.status_code", err.status)
                raise
            span.set("http.response.status_code", resp.status)
            return resp

    async def _request(self, method: str, path: str, body: bytes | None, *,
                       headers: dict[str, str] | None = None) -> HttpResponse:
        if not path.startswith("/") or "://" in path:
            raise ValueError(f"path must be relative to the platform base URL: {path!r}")
        if self._session is None:
            raise RuntimeError("HttpClient used outside 'async with'")
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        if headers:
            hdrs.update(headers)
        # The URL as it goes on the wire: aiohttp re-quotes what it is given (yarl decodes a
        # percent-encoded character a path may hold as is, e.g. ``%3A`` to ``:``), and a
        # signature over the URL (OAuth 1.0a's base string) must be over that very URL.
        # Parsed once here and handed to aiohttp as is.
        url = URL(self._base + path)
        if self._signer is not None:
            hdrs.update(await self._signer.headers(method, str(url), body))
        started = time.monotonic()
        outcome: str | None = "connection_error"
        try:
            async with self._session.request(method, url, data=body, headers=hdrs) as resp:
                data = await resp.read()
                status = resp.status
                outcome = str(status)
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                location = resp.headers.get("Location")
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            outcome = "timeout"
            raise Ambiguous(f"{self.platform}: no answer within {self._timeout.total} s "
                            "(the write may have happened)") from exc
        except aiohttp.ServerDisconnectedError as exc:
            outcome = "disconnected"
            raise Ambiguous(f"{self.platform}: disconnected before answering") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            # Refused before anything was sent: the platform's certificate (or our CA setting)
            # must be fixed; retried meanwhile, never sent unverified.
            raise PlatformUnavailable(f"{self.platform}: TLS certificate refused: {exc}",
                                      code="http.certificate") from exc
        except aiohttp.ClientSSLError as exc:
            raise PlatformUnavailable(f"{self.platform}: TLS handshake failed: {exc}",
                                      code="http.tls") from exc
        except aiohttp.ClientConnectionError as exc:
            raise PlatformUnavailable(f"{self.platform}: cannot connect: {exc}",
                                      code="http.connection") from exc
        except aiohttp.ClientError as exc:
            raise PlatformUnavailable(f"{self.platform}: {exc!r}") from exc
        except BaseException:
            outcome = None  # cancelled: not the platform's doing, not observed
            raise
        finally:
            if self.observer is not None and outcome is not None:
                self.observer(self.platform, method, path, outcome,
                              time.monotonic() - started)
        kept = {"Location": location} if location else {}
        if 200 <= status < 300:
            return HttpResponse(status, data, kept)
        text = data[:2000].decode(errors="replace")
        if status == 429:
            raise PlatformUnavailable(f"{self.platform}: rate limited (429)",
                                      code="http.rate_limited", retry_after=retry_after)
        if status >= 500:
            raise PlatformUnavailable(f"{self.platform}: server error {status}",
                                      code="http.server_error", retry_after=retry_after)
        raise PlatformRejected(f"{self.platform}: request rejected with {status}",
                               status=status, body=text, headers=kept)
