"""HTTPS for the simulator: its own listener, and the check of the gateway's certificate on
every webhook it delivers.

``SimConfig.tls_cert`` + ``tls_key`` (PEM files, both or neither) make every simulated
platform answer over HTTPS only; ``webhook_ca_file`` is the CA bundle the webhook sender
trusts (empty: the system's trust store). Certificates are always verified, host name
included: there is no setting to turn that off.
"""

from __future__ import annotations

import ssl

from ._config import SimConfig

__all__ = ["server_context", "webhook_context"]


def server_context(cfg: SimConfig) -> ssl.SSLContext | None:
    """The listener's TLS context (TLS 1.2 at least), or None when ``tls_cert`` and
    ``tls_key`` are both empty. Raises ``ValueError`` naming the setting when only one is
    set or the files are not a matching PEM certificate chain and key."""
    if not cfg.tls_cert and not cfg.tls_key:
        return None
    if not (cfg.tls_cert and cfg.tls_key):
        missing = "tls_key" if cfg.tls_cert else "tls_cert"
        raise ValueError(f"{missing}: required with {'tls_cert' if cfg.tls_cert else 'tls_key'}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls_cert/tls_key ({cfg.tls_cert}, {cfg.tls_key}): {exc}") from exc
    return ctx


def webhook_context(cfg: SimConfig) -> ssl.SSLContext:
    """The webhook sender's TLS context: verifies the receiver's certificate and host name
    against ``webhook_ca_file`` (empty: the system's trust store). Raises ``ValueError``
    naming the setting when the file is not a readable PEM CA bundle."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=cfg.webhook_ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"webhook_ca_file ({cfg.webhook_ca_file}): {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
