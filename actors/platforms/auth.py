"""Credentials for outbound platform requests: one ``Auth`` per platform, built from settings.

Configuration (``[<platform>.auth]``, an ``AuthSettings``) names a ``type`` and the fields that
type needs. Every secret field can be given three ways, exactly one of them: the value itself
(``token_secret = "..."``, fine for a demo, not for production), the name of an environment
variable (``token_secret_env = "NS_TOKEN_SECRET"``) or a file path (``token_secret_file =
"/run/secrets/ns_token_secret"``, refused unless its mode is 0600 or stricter). Secrets become
``Secret`` values whose ``str``/``repr`` are ``***``: they never reach a log, an error body or
``--print-config`` by accident; ``.reveal()`` is the one deliberate way out.

The types:

- ``none``: no credentials (the default, for a loopback simulator);
- ``bearer``: ``Authorization: Bearer <token>``;
- ``basic``: ``Authorization: Basic base64(username:password)``;
- ``oauth1_tba``: NetSuite Token-Based Authentication, OAuth 1.0a signed by ``oauthlib`` with
  HMAC-SHA256; ``realm`` is the NetSuite account id (``account`` unless ``realm`` is given);
  ``consumer_key``/``consumer_secret`` come from the integration record, ``token_id``/
  ``token_secret`` from the access token. Each request gets a fresh nonce and timestamp;
- ``oauth2_client_credentials``: NetSuite's OAuth 2.0 client credentials (machine to machine)
  flow: a JWT assertion (header ``kid`` = ``certificate_id``; claims ``iss`` = ``client_id``,
  ``scope``, ``aud`` = the token URL, ``iat``, ``exp`` at most one hour later) signed with the
  certificate's private key by ``PyJWT`` (``PS256`` by default), exchanged at ``token_url`` for
  an access token that is cached until ``refresh_margin_s`` before it expires.

All errors are ``AuthError`` (a ``GatewayError``) with stable codes (docs/errors.md):
``auth.*`` for settings, ``auth.token_*`` for the token exchange (retryable: the work waits).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlencode

import anyio
import jwt
import msgspec
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, SIGNATURE_TYPE_AUTH_HEADER
from oauthlib.oauth1 import Client as OAuth1Client

from contracts import GatewayError, Retryable

from ..infra.secret_file import SecretFileProblem, read_secret_file

__all__ = [
    "SECRET_FIELDS",
    "Auth",
    "AuthError",
    "AuthSettings",
    "AuthType",
    "BasicAuth",
    "BearerAuth",
    "NoAuth",
    "OAuth1Tba",
    "OAuth2ClientCredentials",
    "Secret",
    "TokenUnavailable",
    "load_auth",
    "netsuite_token_url",
]

_T = TypeVar("_T")

AuthType = Literal["none", "bearer", "basic", "oauth1_tba", "oauth2_client_credentials"]

# The fields that hold secrets; each may instead be given as ``<field>_env`` or ``<field>_file``.
SECRET_FIELDS: tuple[str, ...] = ("token", "password", "consumer_key", "consumer_secret",
                                  "token_id", "token_secret", "private_key")

# What each type needs (secret or not); anything else set for the type is refused.
_NEEDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "bearer": ("token",),
    "basic": ("username", "password"),
    "oauth1_tba": ("account", "consumer_key", "consumer_secret", "token_id", "token_secret"),
    "oauth2_client_credentials": ("client_id", "certificate_id", "private_key"),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "oauth1_tba": ("realm",),
    "oauth2_client_credentials": ("account", "token_url", "scope", "algorithm",
                                  "refresh_margin_s"),
}


class AuthError(GatewayError):
    """Credentials are misconfigured or could not be obtained."""

    code = "auth.invalid"


class TokenUnavailable(Retryable):
    """The OAuth 2.0 token endpoint did not hand out an access token (yet): the request that
    needed it is not sent; retry later (the work waits in its stream)."""

    code = "auth.token_unavailable"


class Secret:
    """A credential: ``str``/``repr`` show ``***``; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:  # never pickled into a crash dump by accident
        raise TypeError("a Secret cannot be pickled")


class AuthSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[<platform>.auth]``: see the module docstring and docs/configuration.md."""

    type: AuthType = "none"
    # bearer
    token: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    # basic
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    # oauth1_tba (and the account of oauth2_client_credentials' default token URL)
    account: str | None = None
    realm: str | None = None
    consumer_key: str | None = None
    consumer_key_env: str | None = None
    consumer_key_file: str | None = None
    consumer_secret: str | None = None
    consumer_secret_env: str | None = None
    consumer_secret_file: str | None = None
    token_id: str | None = None
    token_id_env: str | None = None
    token_id_file: str | None = None
    token_secret: str | None = None
    token_secret_env: str | None = None
    token_secret_file: str | None = None
    # oauth2_client_credentials
    client_id: str | None = None
    certificate_id: str | None = None
    private_key: str | None = None  # PEM
    private_key_env: str | None = None
    private_key_file: str | None = None
    token_url: str | None = None
    scope: str = "rest_webservices"
    algorithm: Literal["PS256", "PS384", "PS512", "ES256", "ES384", "ES512"] = "PS256"
    refresh_margin_s: float = 60.0

    def public(self) -> dict[str, Any]:
        """The settings as plain data with every literal secret masked (``--print-config``);
        ``*_env`` and ``*_file`` names are not secrets and are shown."""
        doc: dict[str, Any] = {k: v for k, v in msgspec.to_builtins(self).items()
                               if v is not None}
        for name in SECRET_FIELDS:
            if doc.get(name) is not None:
                doc[name] = "***"
        return doc

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.public().items())
        return f"AuthSettings({shown})"


class Auth(Protocol):
    """Credentials for one platform: the headers to add to one request."""

    async def headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        """Headers for ``method url`` with ``body`` (the full URL, query included).
        Raises ``TokenUnavailable`` when a token cannot be had right now."""
        ...


class NoAuth:
    async def headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        return {}

    def __repr__(self) -> str:
        return "NoAuth()"


class BearerAuth:
    def __init__(self, token: Secret) -> None:
        self._token = token

    @property
    def token(self) -> Secret:
        return self._token

    async def headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.reveal()}"}

    def __repr__(self) -> str:
        return "BearerAuth(token=***)"


class BasicAuth:
    def __init__(self, username: str, password: Secret) -> None:
        self.username = username
        self._password = password

    async def headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        raw = f"{self.username}:{self._password.reveal()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=***)"


class OAuth1Tba:
    """NetSuite TBA: OAuth 1.0a, HMAC-SHA256, ``realm`` = account id, signed by oauthlib.

    Only the method, the URL (with its query) and the OAuth parameters are signed: a JSON body
    is not part of an OAuth 1.0a signature base string (only form-encoded bodies are).
    """

    def __init__(self, *, realm: str, consumer_key: Secret, consumer_secret: Secret,
                 token_id: Secret, token_secret: Secret) -> None:
        self.realm = realm
        self._client = OAuth1Client(
            consumer_key.reveal(), client_secret=consumer_secret.reveal(),
            resource_owner_key=token_id.reveal(), resource_owner_secret=token_secret.reveal(),
            signature_method=SIGNATURE_HMAC_SHA256,
            signature_type=SIGNATURE_TYPE_AUTH_HEADER, realm=realm)

    async def headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        _, signed, _ = self._client.sign(url, http_method=method.upper())
        return {"Authorization": signed["Authorization"]}

    def __repr__(self) -> str:
        return f"OAuth1Tba(realm={self.realm!r}, keys=***)"


# (url, form-encoded body, headers) -> (status, body): how the token exchange reaches the
# token endpoint. The default opens a short-lived aiohttp session (one exchange an hour).
TokenTransport = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, bytes]]]


async def _aiohttp_transport(url: str, body: bytes,
                             headers: dict[str, str]) -> tuple[int, bytes]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise TokenUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from exc


class _TokenAnswer(msgspec.Struct):
    access_token: str
    expires_in: int | str = 3600
    token_type: str = "bearer"  # noqa: S105 (a token type, not a secret)


_token_dec = msgspec.json.Decoder(_TokenAnswer)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def netsuite_token_url(account: str) -> str:
    """NetSuite's OAuth 2.0 token endpoint for ``account`` (``1234567_SB1`` is served as
    ``1234567-sb1.suitetalk.api.netsuite.com``)."""
    host = account.lower().replace("_", "-")
    return f"https://{host}.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token"


class OAuth2ClientCredentials:
    """OAuth 2.0 client credentials with a signed JWT assertion; the access token is cached
    and shared by concurrent requests (one exchange at a time)."""

    def __init__(self, *, client_id: str, certificate_id: str, private_key: Secret,
                 token_url: str, scope: str = "rest_webservices", algorithm: str = "PS256",
                 refresh_margin_s: float = 60.0, transport: TokenTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client_id = client_id
        self.certificate_id = certificate_id
        self.token_url = token_url
        self.scope = scope
        self.algorithm = algorithm
        self.refresh_margin_s = refresh_margin_s
        self._key = private_key
        self._transport = transport or _aiohttp_transport
        self._clock = clock
        self._token: Secret | None = None
        self._expires_at = 0.0
        self._lock = anyio.Lock()
        self.exchanges = 0

    def assertion(self) -> str:
        """The signed JWT the token endpoint is sent (valid for one hour)."""
        now = int(self._clock())
        claims = {"iss": self.client_id, "scope": self.scope, "aud": self.token_url,
                  "iat": now, "exp": now + 3600}
        try:
            return jwt.encode(claims, self._key.reveal(), algorithm=self.algorithm,
                              headers={"kid": self.certificate_id, "typ": "JWT"})
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise AuthError(f"private_key cannot sign {self.algorithm}: {type(exc).__name__}",
                            code="auth.private_key_invalid") from exc

    async def access_token(self) -> Secret:
        """The cached access token, fetched again ``refresh_margin_s`` before it expires."""
        async with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
            body = urlencode({"grant_type": "client_credentials",
                              "client_assertion_type": ASSERTION_TYPE,
                              "client_assertion": self.assertion()}).encode()
            self.exchanges += 1
            status, data = await self._transport(
                self.token_url, body, {"Content-Type": "application/x-www-form-urlencoded"})
            if status != 200:
                # The body may echo the assertion: keep it out of the message.
                raise TokenUnavailable(f"token endpoint answered {status}",
                                       code="auth.token_refused" if 400 <= status < 500
                                       else "auth.token_unavailable")
            try:
                answer = _token_dec.decode(data)
                expires_in = float(answer.expires_in)
            except (msgspec.DecodeError, ValueError) as exc:
                raise TokenUnavailable("token endpoint answer is not a token",
                                       code="auth.token_unavailable") from exc
            self._token = Secret(answer.access_token)
            self._expires_at = self._clock() + max(0.0, expires_in - self.refresh_margin_s)
            return self._token

    async def headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        token = await self.access_token()
        return {"Authorization": f"Bearer {token.reveal()}"}

    def __repr__(self) -> str:
        return (f"OAuth2ClientCredentials(client_id={self.client_id!r}, "
                f"token_url={self.token_url!r}, key=***)")


def _secret(settings: AuthSettings, name: str, where: str,
            environ: Mapping[str, str]) -> Secret | None:
    """The secret ``name`` from its literal, ``_env`` or ``_file`` form (at most one given)."""
    literal = getattr(settings, name)
    env_name = getattr(settings, f"{name}_env")
    file_name = getattr(settings, f"{name}_file")
    given = [n for n, v in ((name, literal), (f"{name}_env", env_name),
                            (f"{name}_file", file_name)) if v is not None]
    if len(given) > 1:
        raise AuthError(f"{where}.{name}: give only one of {', '.join(given)}",
                        code="auth.conflicting_secret")
    if literal is not None:
        return Secret(literal)
    if env_name is not None:
        value = environ.get(env_name)
        if not value:
            raise AuthError(f"{where}.{name}_env: environment variable {env_name} is not set",
                            code="auth.env_unset")
        return Secret(value)
    if file_name is not None:
        return Secret(read_secret_file(file_name, f"{where}.{name}_file", _auth_file_error))
    return None


def _auth_file_error(kind: SecretFileProblem, message: str) -> AuthError:
    return AuthError(message, code="auth.file_mode" if kind == "mode" else "auth.file_unreadable")


def _is_set(settings: AuthSettings, name: str) -> bool:
    if name in SECRET_FIELDS:
        return any(getattr(settings, n) is not None
                   for n in (name, f"{name}_env", f"{name}_file"))
    value = getattr(settings, name)
    defaults = AuthSettings()
    return value is not None and value != getattr(defaults, name)


def load_auth(settings: AuthSettings, *, environ: Mapping[str, str] | None = None,
              where: str = "auth", transport: TokenTransport | None = None,
              refused: Collection[str] = ()) -> Auth:
    """The ``Auth`` that ``settings`` describe; ``where`` is the settings' dotted name
    (``erp.auth``) used in error messages. Secrets are read now (env, files), once.

    Raises ``AuthError``: ``auth.missing_setting`` (a field the type needs is absent),
    ``auth.unexpected_setting`` (a field of another type is set), ``auth.conflicting_secret``,
    ``auth.env_unset``, ``auth.file_unreadable``, ``auth.file_mode``,
    ``auth.private_key_invalid``, ``auth.demo_secret`` (a secret's value is one of
    ``refused``: the simulator's public demo credentials outside the loopback).
    """
    env = os.environ if environ is None else environ
    kind = settings.type
    needs = _NEEDS[kind]
    allowed = set(needs) | set(_OPTIONAL.get(kind, ()))
    everything = set(SECRET_FIELDS) | {n for ns in _NEEDS.values() for n in ns} | {
        n for ns in _OPTIONAL.values() for n in ns}
    for name in sorted(everything - allowed):
        if _is_set(settings, name):
            raise AuthError(f"{where}.{name}: not used by auth type {kind!r}",
                            code="auth.unexpected_setting")
    for name in needs:
        if not _is_set(settings, name):
            hint = (f" (or {name}_env / {name}_file)" if name in SECRET_FIELDS else "")
            raise AuthError(f"{where}.{name}: required by auth type {kind!r}{hint}",
                            code="auth.missing_setting")
    s = {name: _secret(settings, name, where, env) for name in SECRET_FIELDS
         if name in allowed}
    for name, secret in s.items():
        if secret is not None and secret.reveal() in refused:
            raise AuthError(f"{where}.{name}: is the simulator's public demo credential; "
                            "it is accepted only for a loopback platform URL",
                            code="auth.demo_secret")
    if kind == "none":
        return NoAuth()
    if kind == "bearer":
        return BearerAuth(_need(s["token"]))
    if kind == "basic":
        return BasicAuth(_need(settings.username), _need(s["password"]))
    if kind == "oauth1_tba":
        return OAuth1Tba(realm=settings.realm or _need(settings.account),
                         consumer_key=_need(s["consumer_key"]),
                         consumer_secret=_need(s["consumer_secret"]),
                         token_id=_need(s["token_id"]), token_secret=_need(s["token_secret"]))
    token_url = settings.token_url
    if token_url is None:
        if settings.account is None:
            raise AuthError(f"{where}.token_url: required when {where}.account is not set",
                            code="auth.missing_setting")
        token_url = netsuite_token_url(settings.account)
    key = _need(s["private_key"])
    try:
        jwt.algorithms.get_default_algorithms()[settings.algorithm].prepare_key(key.reveal())
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise AuthError(f"{where}.private_key: not a PEM private key usable for "
                        f"{settings.algorithm}", code="auth.private_key_invalid") from exc
    return OAuth2ClientCredentials(
        client_id=_need(settings.client_id), certificate_id=_need(settings.certificate_id),
        private_key=key, token_url=token_url, scope=settings.scope,
        algorithm=settings.algorithm, refresh_margin_s=settings.refresh_margin_s,
        transport=transport)


def _need(value: _T | None) -> _T:
    assert value is not None  # checked by load_auth's required-field pass
    return value
