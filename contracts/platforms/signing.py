"""Webhook signatures in the ``t=<unix>,v1=<hex>`` scheme (HMAC-SHA256 over ``"{t}.{body}"``).

The same scheme Stripe uses, so its official verifier accepts our simulator's webhooks. The
signature covers the exact raw bytes received: verify before parsing, and never re-serialise.
Several ``v1`` values may appear (secret rotation); any match is enough. Comparison is constant
time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from .._errors import SignatureError

__all__ = ["DEFAULT_TOLERANCE_S", "SIGNATURE_HEADER", "same_secret", "sign", "verify"]

SIGNATURE_HEADER = "Billing-Signature"
DEFAULT_TOLERANCE_S = 300


def same_secret(a: str | bytes, b: str | bytes) -> bool:
    """Whether two secrets, tokens or digests are equal, in time that does not depend on
    where they differ. Text is compared as UTF-8 (``hmac.compare_digest`` refuses non-ASCII
    text), so any value a client sends is safe to pass."""
    return hmac.compare_digest(a.encode() if isinstance(a, str) else a,
                               b.encode() if isinstance(b, str) else b)


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    sigs: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError(
                "signature header items must be name=value", code="signature.malformed"
            )
        if name == "t":
            if not (value.isascii() and value.isdigit()) or len(value) > 12:
                raise SignatureError(
                    "signature timestamp t must be unix seconds", code="signature.malformed"
                )
            timestamp = int(value)
        elif name == "v1":
            if not value.isascii():  # a digest is hex; compare_digest refuses non-ASCII text
                raise SignatureError(
                    "signature v1 must be hexadecimal", code="signature.malformed"
                )
            sigs.append(value)
    if timestamp is None:
        raise SignatureError("signature header has no t=", code="signature.malformed")
    if not sigs:
        raise SignatureError("signature header has no v1=", code="signature.malformed")
    return timestamp, sigs


def verify(
    header: str | None,
    body: bytes,
    secrets: Iterable[str],
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_S,
    header_name: str = SIGNATURE_HEADER,
) -> int:
    """Check ``header`` against ``body``; return the signed timestamp.

    Raises ``SignatureError`` with code ``signature.missing``, ``signature.malformed``,
    ``signature.stale`` (outside ``tolerance`` seconds of ``now``, either direction) or
    ``signature.mismatch``. The timestamp is checked before any digest is computed.
    ``header_name`` only names the header in errors (``Stripe-Signature`` for Stripe's
    webhooks: the same scheme; names other than ``t`` and ``v1``, such as ``v0``, are ignored).
    """
    if not header:
        raise SignatureError(f"missing {header_name} header", code="signature.missing")
    if len(header) > 2048:
        raise SignatureError("signature header too long", code="signature.malformed")
    timestamp, sigs = _parse(header)
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"signature timestamp is {int(now - timestamp)} s from now "
            f"(tolerance {int(tolerance)} s)",
            code="signature.stale",
        )
    for secret in secrets:
        expected = _digest(secret, timestamp, body)
        for sig in sigs:
            if hmac.compare_digest(expected, sig):
                return timestamp
    raise SignatureError("no v1 signature matches the body", code="signature.mismatch")
