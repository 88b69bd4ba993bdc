"""HTTPS for the gateway's listeners: ``http.tls`` (webhooks, usage) and ``admin.tls``.

A listener serves TLS only when its ``cert`` (a PEM chain: the server certificate first) and
``key`` (its PEM private key, mode 0600 or stricter) are both set; it then serves nothing in
plaintext. TLS 1.2 is the oldest version offered. A bad setting stops the start with an error
naming it (``http.tls.key: ...``), code ``config.invalid``.
"""

from __future__ import annotations

import ssl

import msgspec

from contracts import GatewayError

from ..infra.secret_file import read_secret_file

__all__ = ["TlsError", "TlsFiles", "server_tls"]


class TlsError(GatewayError):
    code = "config.invalid"


class TlsFiles(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A listener's certificate chain and private key (PEM files); off when both are empty."""

    cert: str = ""
    key: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key)


def server_tls(files: TlsFiles, where: str) -> ssl.SSLContext | None:
    """The server context of ``files`` (``None``: plaintext); ``where`` is the setting's
    dotted name (``http.tls``) for errors.

    Raises ``TlsError`` naming the setting: one of the two files missing, a key readable by
    others, files that are not a matching PEM certificate and key."""
    if not files.enabled:
        return None
    for name in ("cert", "key"):
        if not getattr(files, name):
            raise TlsError(f"{where}.{name}: required when {where} is set (both cert and key)")
    read_secret_file(files.key, f"{where}.key", lambda _, message: TlsError(message))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:  # an OSError too: first
        raise TlsError(f"{where}: {files.cert} and {files.key} are not a matching PEM "
                       f"certificate chain and private key ({exc.reason})") from exc
    except OSError as exc:
        raise TlsError(f"{where}.cert: cannot read {files.cert}: {exc.strerror}") from exc
    return ctx
