"""NetSuite Token-Based Authentication as the simulated account checks it (oauthlib's server).

A request must carry ``Authorization: OAuth realm="<account>", oauth_consumer_key=…,
oauth_token=…, oauth_signature_method="HMAC-SHA256", oauth_nonce, oauth_timestamp,
oauth_version="1.0", oauth_signature`` signed with the consumer secret and the token secret.
Verification is oauthlib's ``ResourceEndpoint`` with a validator that knows one integration
record and one access token: the consumer key, the token id, their secrets, the realm (the
account id), a timestamp within ``timestamp_lifetime`` seconds and a nonce not seen before.

The demo credentials below are loopback-only demo secrets (the gateway refuses them for a
non-loopback ERP URL); they exist so ``erpgw demo --dialects netsuite`` signs for real.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, RequestValidator, ResourceEndpoint

from contracts.platforms.signing import same_secret

__all__ = ["DEMO_TBA", "TbaCredentials", "TbaVerifier"]


@dataclass(frozen=True, slots=True)
class TbaCredentials:
    """One integration record + access token of one account."""

    account: str
    consumer_key: str
    consumer_secret: str
    token_id: str
    token_secret: str


# Loopback-only demo secrets (never valid anywhere but the simulator).
DEMO_TBA = TbaCredentials(
    account="TSTDRV0000001",
    consumer_key="demo-consumer-key-00000000000000000000000000000000000000000000001",
    consumer_secret="demo-consumer-secret-000000000000000000000000000000000000000000001",  # noqa: S106
    token_id="demo-token-id-0000000000000000000000000000000000000000000000000001",  # noqa: S106
    token_secret="demo-token-secret-00000000000000000000000000000000000000000000001",  # noqa: S106
)


class _Validator(RequestValidator):  # type: ignore[misc]
    """What oauthlib asks about the one integration record and token of the account."""

    def __init__(self, creds: TbaCredentials, *, nonces: int = 100_000) -> None:
        super().__init__()
        self.creds = creds
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._max_nonces = nonces

    @property
    def enforce_ssl(self) -> bool:
        return False  # the simulator serves plain HTTP on loopback

    @property
    def allowed_signature_methods(self) -> tuple[str, ...]:
        return (SIGNATURE_HMAC_SHA256,)

    @property
    def safe_characters(self) -> set[str]:
        return set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")

    @property
    def client_key_length(self) -> tuple[int, int]:
        return 8, 128

    @property
    def access_token_length(self) -> tuple[int, int]:
        return 8, 128

    @property
    def nonce_length(self) -> tuple[int, int]:
        return 6, 64

    @property
    def dummy_client(self) -> str:
        return "dummy-consumer-key-000"

    @property
    def dummy_access_token(self) -> str:
        return "dummy-token-id-0000000"

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return same_secret(client_key, self.creds.consumer_key)

    def validate_access_token(self, client_key: str, token: str, request: Any) -> bool:
        return same_secret(token, self.creds.token_id)

    def get_client_secret(self, client_key: str, request: Any) -> str:
        return (self.creds.consumer_secret if same_secret(client_key, self.creds.consumer_key)
                else "dummy-secret")

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        return (self.creds.token_secret if same_secret(token, self.creds.token_id)
                else "dummy-secret")

    def validate_timestamp_and_nonce(self, client_key: str, timestamp: str, nonce: str,
                                     request: Any, request_token: str | None = None,
                                     access_token: str | None = None) -> bool:
        key = (client_key, timestamp, nonce)
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > self._max_nonces:
            self._seen.popitem(last=False)
        return True

    def validate_realms(self, client_key: str, token: str, request: Any,
                        uri: str | None = None, realms: Any = None) -> bool:
        return bool(getattr(request, "realm", None) == self.creds.account)


class TbaVerifier:
    """``verify(method, url, headers)`` is True when the request is signed for the account."""

    def __init__(self, creds: TbaCredentials = DEMO_TBA) -> None:
        self.creds = creds
        self._endpoint = ResourceEndpoint(_Validator(creds))

    def verify(self, method: str, url: str, headers: dict[str, str]) -> bool:
        auth = headers.get("Authorization") or headers.get("authorization")
        if not auth or not auth.startswith("OAuth "):
            return False
        ok, _ = self._endpoint.validate_protected_resource_request(
            url, http_method=method.upper(), body=None, headers={"Authorization": auth})
        return bool(ok)
