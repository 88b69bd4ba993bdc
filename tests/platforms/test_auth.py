"""Platform credentials: settings, secret sources, masking and each auth type's headers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from actors.platforms.auth import (
    AuthError,
    AuthSettings,
    OAuth1Tba,
    OAuth2ClientCredentials,
    Secret,
    TokenUnavailable,
    load_auth,
    netsuite_token_url,
)
from sim._netsuite_tba import DEMO_TBA, TbaVerifier

URL = "http://127.0.0.1:8700/services/rest/record/v1/journalEntry/eid:in_000001"


def tba_settings(**kw: str) -> AuthSettings:
    base = {"type": "oauth1_tba", "account": DEMO_TBA.account,
            "consumer_key": DEMO_TBA.consumer_key, "consumer_secret": DEMO_TBA.consumer_secret,
            "token_id": DEMO_TBA.token_id, "token_secret": DEMO_TBA.token_secret}
    base.update(kw)
    return msgspec.convert(base, AuthSettings)


def test_secret_is_masked_everywhere_but_reveal() -> None:
    s = Secret("hunter2")
    assert str(s) == "***" and repr(s) == "Secret('***')" and f"{s}" == "***"
    assert "hunter2" not in repr([s]) and s.reveal() == "hunter2"


def test_settings_repr_and_public_mask_literal_secrets() -> None:
    st = tba_settings()
    text = repr(st) + json.dumps(st.public())
    for secret in (DEMO_TBA.consumer_secret, DEMO_TBA.token_secret, DEMO_TBA.token_id,
                   DEMO_TBA.consumer_key):
        assert secret not in text
    assert st.public()["token_secret"] == "***"
    assert st.public()["account"] == DEMO_TBA.account
    auth = load_auth(st, environ={})
    assert DEMO_TBA.token_secret not in repr(auth)


def test_unknown_setting_is_refused_by_the_decoder() -> None:
    with pytest.raises(msgspec.ValidationError, match="tokn"):
        msgspec.convert({"type": "bearer", "tokn": "x"}, AuthSettings)


async def test_oauth1_header_verifies_with_oauthlib_server_side() -> None:
    auth = load_auth(tba_settings(), environ={})
    assert isinstance(auth, OAuth1Tba)
    verifier = TbaVerifier(DEMO_TBA)
    headers = await auth.headers("PUT", URL, b'{"memo": "x"}')
    value = headers["Authorization"]
    assert value.startswith("OAuth ")
    assert f'realm="{DEMO_TBA.account}"' in value
    assert 'oauth_signature_method="HMAC-SHA256"' in value
    assert verifier.verify("PUT", URL, headers)
    # The same header again is a replayed nonce; another method or URL breaks the signature.
    assert not verifier.verify("PUT", URL, headers)
    fresh = await auth.headers("PUT", URL, None)
    assert not verifier.verify("GET", URL, fresh)
    fresh = await auth.headers("PUT", URL, None)
    assert not verifier.verify("PUT", URL.replace("in_000001", "in_000002"), fresh)


async def test_oauth1_with_a_wrong_secret_or_realm_does_not_verify() -> None:
    verifier = TbaVerifier(DEMO_TBA)
    wrong = load_auth(tba_settings(token_secret="not-the-token-secret"), environ={})
    assert not verifier.verify("PUT", URL, await wrong.headers("PUT", URL, None))
    realm = load_auth(tba_settings(realm="OTHER_ACCOUNT"), environ={})
    assert not verifier.verify("PUT", URL, await realm.headers("PUT", URL, None))
    assert not verifier.verify("PUT", URL, {})


async def test_secret_from_env_and_from_a_0600_file(tmp_path: Path) -> None:
    path = tmp_path / "ts"
    path.write_text(DEMO_TBA.token_secret + "\n")
    path.chmod(0o600)
    st = tba_settings(token_secret=None, token_secret_file=str(path),  # type: ignore[arg-type]
                      consumer_secret=None, consumer_secret_env="NS_CS")  # type: ignore[arg-type]
    auth = load_auth(st, environ={"NS_CS": DEMO_TBA.consumer_secret})
    assert TbaVerifier(DEMO_TBA).verify("GET", URL, await auth.headers("GET", URL, None))


def test_secret_file_readable_by_others_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("abc")
    path.chmod(0o644)
    st = AuthSettings(type="bearer", token_file=str(path))
    with pytest.raises(AuthError) as err:
        load_auth(st, environ={}, where="erp.auth")
    assert err.value.code == "auth.file_mode"
    assert "erp.auth.token_file" in err.value.message and "0644" in err.value.message


@pytest.mark.parametrize(("settings", "code", "names"), [
    (AuthSettings(type="bearer"), "auth.missing_setting", "erp.auth.token"),
    (AuthSettings(type="bearer", token="a", token_env="B"), "auth.conflicting_secret",
     "erp.auth.token"),
    (AuthSettings(type="bearer", token_env="NOPE"), "auth.env_unset", "erp.auth.token_env"),
    (AuthSettings(type="bearer", token="a", username="u"), "auth.unexpected_setting",
     "erp.auth.username"),
    (AuthSettings(type="bearer", token_file="/nonexistent/x"), "auth.file_unreadable",
     "erp.auth.token_file"),
    (AuthSettings(type="oauth2_client_credentials", client_id="c", certificate_id="k",
                  private_key="not a key", token_url="http://127.0.0.1:1/t"),
     "auth.private_key_invalid", "erp.auth.private_key"),
])
def test_bad_settings_get_a_code_naming_the_setting(settings: AuthSettings, code: str,
                                                     names: str) -> None:
    with pytest.raises(AuthError) as err:
        load_auth(settings, environ={}, where="erp.auth")
    assert err.value.code == code
    assert names in err.value.message


async def test_bearer_basic_and_none() -> None:
    bearer = load_auth(AuthSettings(type="bearer", token_env="T"), environ={"T": "tok"})
    assert await bearer.headers("GET", URL, None) == {"Authorization": "Bearer tok"}
    basic = load_auth(AuthSettings(type="basic", username="u", password="p:w"), environ={})
    value = (await basic.headers("GET", URL, None))["Authorization"]
    assert base64.b64decode(value.removeprefix("Basic ")) == b"u:p:w"
    assert await load_auth(AuthSettings(), environ={}).headers("GET", URL, None) == {}


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.mark.parametrize("algorithm", ["PS256", "ES256"])
async def test_oauth2_assertion_is_signed_exchanged_and_cached(algorithm: str) -> None:
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
           if algorithm == "PS256" else ec.generate_private_key(ec.SECP256R1()))
    now = [1_000_000.0]
    seen: list[dict[str, str]] = []

    async def token_endpoint(url: str, body: bytes, headers: dict[str, str]
                             ) -> tuple[int, bytes]:
        from urllib.parse import parse_qsl
        form = dict(parse_qsl(body.decode()))
        seen.append(form)
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        claims = jwt.decode(form["client_assertion"], key.public_key(),
                            algorithms=[algorithm], audience=url,
                            options={"verify_exp": False, "verify_iat": False})
        assert claims["iss"] == "client-1" and claims["scope"] == "rest_webservices"
        assert claims["exp"] - claims["iat"] <= 3600
        header = jwt.get_unverified_header(form["client_assertion"])
        assert header["kid"] == "cert-1" and header["alg"] == algorithm
        return 200, json.dumps({"access_token": f"at-{len(seen)}", "expires_in": "3600",
                                "token_type": "bearer"}).encode()

    settings = AuthSettings(type="oauth2_client_credentials", account="1234567_SB1",
                            client_id="client-1", certificate_id="cert-1",
                            private_key=_pem(key), algorithm=algorithm)  # type: ignore[arg-type]
    auth = load_auth(settings, environ={}, transport=token_endpoint)
    assert isinstance(auth, OAuth2ClientCredentials)
    auth._clock = lambda: now[0]
    assert auth.token_url == netsuite_token_url("1234567_SB1")
    assert auth.token_url.startswith("https://1234567-sb1.suitetalk.api.netsuite.com/")
    assert await auth.headers("PUT", URL, None) == {"Authorization": "Bearer at-1"}
    assert seen[0]["grant_type"] == "client_credentials"
    assert seen[0]["client_assertion_type"].endswith(":client-assertion-type:jwt-bearer")
    now[0] += 3000  # still valid: cached
    assert await auth.headers("PUT", URL, None) == {"Authorization": "Bearer at-1"}
    now[0] += 560  # within the refresh margin of the expiry: a new exchange
    assert await auth.headers("PUT", URL, None) == {"Authorization": "Bearer at-2"}
    assert auth.exchanges == 2 and "at-2" not in repr(auth)


async def test_oauth2_refused_exchange_is_retryable_and_keeps_the_body_out() -> None:
    key = ec.generate_private_key(ec.SECP256R1())

    async def refuse(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        return 400, b'{"error": "invalid_grant", "echo": "' + body[:40] + b'"}'

    auth = load_auth(AuthSettings(type="oauth2_client_credentials", client_id="c",
                                  certificate_id="k", private_key=_pem(key), algorithm="ES256",
                                  token_url="http://127.0.0.1:9/token"),
                     environ={}, transport=refuse)
    with pytest.raises(TokenUnavailable) as err:
        await auth.headers("GET", URL, None)
    assert err.value.code == "auth.token_refused"
    assert "invalid_grant" not in err.value.message
