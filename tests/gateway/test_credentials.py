"""Platform credentials at start-up: refused off loopback without credentials or with the
simulator's demo secrets, each error naming the setting; masked in --print-config; every
request of a platform's pool signed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.platforms.auth import AuthError
from gateway.config import load_config
from gateway.credentials import platform_credentials
from sim._netsuite_tba import DEMO_TBA

from .._http import serving


def tba(url: str, **secrets: str) -> dict[str, object]:
    auth = {"type": "oauth1_tba", "consumer_key": DEMO_TBA.consumer_key,
            "consumer_secret": DEMO_TBA.consumer_secret, "token_id": DEMO_TBA.token_id,
            "token_secret": DEMO_TBA.token_secret, **secrets}
    return {"erp": {"dialect": "netsuite", "base_url": url, "account": DEMO_TBA.account,
                    "auth": auth}}


def test_remote_erp_without_credentials_is_refused() -> None:
    cfg = load_config(env={}, overrides={"erp": {"base_url": "https://1234567.suitetalk.api"
                                                 ".netsuite.com", "dialect": "netsuite"}})
    with pytest.raises(AuthError) as err:
        platform_credentials(cfg, environ={})
    assert err.value.code == "auth.missing_credentials" and "erp.auth.type" in err.value.message


def test_remote_erp_with_the_demo_secrets_is_refused() -> None:
    cfg = load_config(env={}, overrides=tba("https://1234567.suitetalk.api.netsuite.com"))
    with pytest.raises(AuthError) as err:
        platform_credentials(cfg, environ={})
    assert err.value.code == "auth.demo_secret"
    assert err.value.message.startswith("erp.auth.consumer_key")


def test_loopback_demo_secrets_build_a_netsuite_client_and_print_masked() -> None:
    cfg = load_config(env={}, overrides=tba("http://127.0.0.1:8700"))
    assert platform_credentials(cfg, environ={})["erp"] is not None
    printed = json.dumps(cfg.public())
    assert DEMO_TBA.token_secret not in printed and DEMO_TBA.consumer_secret not in printed
    assert cfg.public()["erp"]["auth"]["token_secret"] == "***"
    assert DEMO_TBA.token_secret not in repr(cfg)


def test_remote_erp_with_env_secrets_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(env={}, overrides=tba(
        "https://1234567.suitetalk.api.netsuite.com", consumer_key="ck-real-0000000001",
        consumer_secret="cs-real", token_id="ti-real-0000000001", token_secret=None,
        token_secret_env="NS_TS"))  # type: ignore[arg-type]
    signer = platform_credentials(cfg, environ={"NS_TS": "ts-real"})["erp"]
    assert signer is not None


@pytest.mark.parametrize("platform", ["billing", "revenue", "partner"])
def test_every_remote_platform_needs_credentials(platform: str) -> None:
    url = f"https://{platform}.example.com"
    section = {"base_url": url}
    cfg = load_config(env={}, overrides={platform: section})
    with pytest.raises(AuthError) as err:
        platform_credentials(cfg, environ={})
    assert err.value.code == "auth.missing_credentials"
    assert err.value.message.startswith(f"{platform}.auth.type")


def test_a_remote_billing_platform_with_a_bearer_key_from_a_file(tmp_path: Path) -> None:
    key = tmp_path / "stripe_key"
    key.write_text("sk_live_canary_0001\n")
    key.chmod(0o600)
    cfg = load_config(env={}, overrides={"billing": {
        "base_url": "https://api.stripe.com",
        "auth": {"type": "bearer", "token_file": str(key)}}})
    signer = platform_credentials(cfg, environ={})["billing"]
    assert signer is not None
    assert "sk_live_canary_0001" not in json.dumps(cfg.public()) + repr(cfg)
    key.chmod(0o644)
    with pytest.raises(AuthError) as err:
        platform_credentials(cfg, environ={})
    assert err.value.code == "auth.file_mode" and "billing.auth.token_file" in err.value.message


@pytest.mark.parametrize("setting", [
    {"billing": {"webhook_secrets": ["whsec_demo"]}},
    {"partner": {"webhook_secrets": ["whsec_partner_demo"]}},
    {"usage": {"api_tokens": ["usage_demo_token"]}},
])
def test_a_public_listener_refuses_the_demo_secrets(setting: dict[str, object]) -> None:
    mine = {"billing": {"webhook_secrets": ["whsec_mine_0001"]},
            "partner": {"webhook_secrets": ["whsec_mine_0002"]},
            "usage": {"api_tokens": ["usage_mine_0003"]}}
    cfg = load_config(env={}, overrides={"http": {"host": "0.0.0.0"}, **mine, **setting})
    with pytest.raises(AuthError) as err:
        platform_credentials(cfg, environ={})
    section = next(iter(setting))
    assert err.value.code == "auth.demo_secret" and err.value.message.startswith(section)
    # The same on loopback is the demo, and starts.
    local = load_config(env={}, overrides={**mine, **setting})
    assert platform_credentials(local, environ={})["erp"] is None


async def test_every_request_of_a_signed_pool_carries_the_credentials() -> None:
    """The pool signs every request just before it leaves: a flow cannot forget."""
    from aiohttp import web

    from actors.infra.http import HttpClient
    from actors.platforms.auth import AuthSettings, load_auth

    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({})

    signer = load_auth(AuthSettings(type="bearer", token="tok_0001"), environ={})
    async with serving(handler) as url, HttpClient(url, signer=signer) as http:
        await http.get("/a")
        await http.post("/b", b"{}")
        await http.request("PUT", "/c", b"{}")
    assert seen == ["Bearer tok_0001"] * 3


async def test_a_tba_signature_covers_the_path_as_sent() -> None:
    """NetSuite's record paths name journal entries by external id (``eid:in_1:v2``): the
    percent-encoded ``:`` leaves as ``:`` (aiohttp re-quotes the path), so the OAuth 1.0a
    signature must be over that URL. Checked by the simulator's oauthlib verifier, over the
    path as the server received it: signed over the quoted path, it was refused (401) for
    every amendment, reversal and close entry."""
    from aiohttp import web

    from actors.infra.http import HttpClient
    from actors.platforms.auth import AuthSettings, load_auth
    from contracts.platforms.netsuite import journal_path
    from sim._netsuite_tba import DEMO_TBA, TbaVerifier

    verifier = TbaVerifier(DEMO_TBA)
    verdicts: list[tuple[str, bool]] = []

    async def handler(request: web.Request) -> web.Response:
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        verdicts.append((request.raw_path, verifier.verify(request.method, url,
                                                           dict(request.headers))))
        return web.json_response({})

    signer = load_auth(AuthSettings(
        type="oauth1_tba", account=DEMO_TBA.account, consumer_key=DEMO_TBA.consumer_key,
        consumer_secret=DEMO_TBA.consumer_secret, token_id=DEMO_TBA.token_id,
        token_secret=DEMO_TBA.token_secret), environ={})
    async with serving(handler) as url, HttpClient(url, signer=signer) as http:
        for ext in ("in_000001", "in_000001:v2", "in_000001:reversal"):
            await http.request("PUT", journal_path(ext), b"{}")
    assert [ok for _, ok in verdicts] == [True, True, True], verdicts
    assert verdicts[1][0].endswith("/eid:in_000001:v2")
