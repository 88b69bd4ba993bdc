"""Credentials at start: each platform's signer, and the refusal of what is unsafe off loopback.

Every platform section has an ``auth`` table (``actors.platforms.auth.AuthSettings``: bearer,
basic, NetSuite TBA, OAuth 2.0 client credentials; every secret as a value, ``*_env`` or a
``*_file`` of mode 0600). They are read once, here, before anything listens, so a bad setting
stops the start with an error naming it (``erp.auth.token_secret_file: …``) instead of failing
the first request.

The simulator's demo secrets (webhook signing secrets, the usage token, its test API keys and
NetSuite credentials) are public: they are accepted only while everything they guard is on
this machine. A platform URL off loopback needs credentials, and never the demo ones; a webhook
listener off loopback never accepts the demo webhook secrets or usage token.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec

from actors.platforms.auth import Auth, AuthError, AuthSettings, BearerAuth, Secret, load_auth
from contracts.platforms.signing import same_secret

from .config import Config

__all__ = ["DEMO_SECRETS", "admin_token", "is_loopback", "platform_credentials",
           "refuse_demo_secrets"]


def _demo_secrets() -> frozenset[str]:
    """Every secret the simulator and the default configuration publish."""
    from sim import DEMO_SECRETS as SIM_DEMO

    defaults = Config()
    return frozenset({*SIM_DEMO, *defaults.billing.webhook_secrets,
                      *defaults.partner.webhook_secrets, *defaults.usage.api_tokens})


DEMO_SECRETS = _demo_secrets()


def is_loopback(url_or_host: str) -> bool:
    """Whether a URL's host (or a bare host) is this machine: ``localhost`` or a loopback
    address. A name that is not an address is not loopback (it may resolve anywhere)."""
    host = urlsplit(url_or_host).hostname if "://" in url_or_host else url_or_host
    host = (host or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _platform_auth(name: str, url: str, settings: AuthSettings,
                   environ: Mapping[str, str] | None) -> Auth | None:
    remote = not is_loopback(url)
    if remote and settings.type == "none":
        raise AuthError(f"{name}.auth.type: the {name} platform at {url} is not on this "
                        f"machine and {name}.auth configures no credentials",
                        code="auth.missing_credentials")
    if settings.type == "none":
        return None
    return load_auth(settings, environ=environ, where=f"{name}.auth",
                     refused=DEMO_SECRETS if remote else ())


def platform_credentials(cfg: Config, *, environ: Mapping[str, str] | None = None
                         ) -> dict[str, Auth | None]:
    """Each platform's signer (None: no credentials, only for a platform on this machine).

    Raises ``AuthError`` naming the setting (docs/errors.md, ``auth.*``)."""
    refuse_demo_secrets(cfg)
    erp_auth = cfg.erp.auth
    if erp_auth.type == "oauth1_tba" and erp_auth.account is None and cfg.erp.account:
        erp_auth = msgspec.structs.replace(erp_auth, account=cfg.erp.account)
    return {
        "erp": _platform_auth("erp", cfg.erp.base_url, erp_auth, environ),
        "billing": _platform_auth("billing", cfg.billing_url, cfg.billing.auth, environ),
        "revenue": _platform_auth("revenue", cfg.revenue.base_url, cfg.revenue.auth, environ),
        "partner": _platform_auth("partner", cfg.partner.base_url, cfg.partner.auth, environ),
        "cpq": _platform_auth("cpq", cfg.cpq.base_url, cfg.cpq.auth, environ),
    }


def refuse_demo_secrets(cfg: Config) -> None:
    """A webhook listener off loopback must not accept the public demo secrets.

    Raises ``AuthError`` (``auth.demo_secret``) naming the setting."""
    if is_loopback(cfg.http.host):
        return
    for setting, values in (("billing.webhook_secrets", cfg.billing.webhook_secrets),
                            ("partner.webhook_secrets", cfg.partner.webhook_secrets),
                            ("usage.api_tokens", cfg.usage.api_tokens)):
        if any(same_secret(v, d) for v in values for d in DEMO_SECRETS):
            raise AuthError(f"{setting}: the simulator's public demo value is accepted only "
                            f"while the webhook listener is on loopback (http.host = "
                            f"{cfg.http.host}); set your own", code="auth.demo_secret")


def admin_token(cfg: Config, *, environ: Mapping[str, str] | None = None) -> Secret | None:
    """The bearer token the admin listener requires (``admin.token`` / ``token_env`` /
    ``token_file``, the last of mode 0600), or ``None`` (no token: loopback only).

    Raises ``AuthError`` naming the setting: ``auth.admin_token_missing`` when ``admin.host``
    is not loopback and no token is configured, and the ``auth.*`` errors of a secret that
    cannot be read (``auth.env_unset``, ``auth.file_mode``, ...)."""
    a = cfg.admin
    if a.token is None and a.token_env is None and a.token_file is None:
        if not is_loopback(a.host):
            raise AuthError(f"admin.token: the admin listener on {a.host} is not loopback, so "
                            "it needs a bearer token (admin.token_env or admin.token_file)",
                            code="auth.admin_token_missing")
        return None
    auth = load_auth(AuthSettings(type="bearer", token=a.token, token_env=a.token_env,
                                  token_file=a.token_file), environ=environ, where="admin")
    if not isinstance(auth, BearerAuth):  # type "bearer" always gives one
        raise AuthError("admin.token: not a bearer token", code="auth.invalid")
    return auth.token
