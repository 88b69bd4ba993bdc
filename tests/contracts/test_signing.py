"""Webhook signature scheme: S1-S8 of the security checks, as pure tests."""

from __future__ import annotations

import pytest

from contracts import SignatureError
from contracts.platforms.signing import sign, verify

BODY = b'{"id":"evt_1","type":"invoice.finalized"}'
NOW = 1_800_000_000


def test_valid_signature_accepted() -> None:
    assert verify(sign("s3cret", BODY, NOW), BODY, ["s3cret"], now=NOW) == NOW


@pytest.mark.parametrize(
    ("header", "body", "code"),
    [
        (None, BODY, "signature.missing"),
        ("", BODY, "signature.missing"),
        ("garbage", BODY, "signature.malformed"),
        (f"v1={'0' * 64}", BODY, "signature.malformed"),
        (f"t={NOW}", BODY, "signature.malformed"),
        (f"t=abc,v1={'0' * 64}", BODY, "signature.malformed"),
        (sign("wrong", BODY, NOW), BODY, "signature.mismatch"),
        (sign("s3cret", BODY, NOW), BODY[:-1] + b" ", "signature.mismatch"),
        (sign("s3cret", BODY, NOW).replace("v1=", "v0="), BODY, "signature.malformed"),
        (sign("s3cret", BODY, NOW - 301), BODY, "signature.stale"),
        (sign("s3cret", BODY, NOW + 301), BODY, "signature.stale"),
        # Text no digest or timestamp can be: refused as malformed, never a TypeError.
        (f"t={NOW},v1={'é' * 64}", BODY, "signature.malformed"),
        (f"t={NOW},v1=\udcff\udcfe", BODY, "signature.malformed"),
        (f"t=\u00b2,v1={'0' * 64}", BODY, "signature.malformed"),
        (f"t=\u0663,v1={'0' * 64}", BODY, "signature.malformed"),
    ],
)
def test_rejections(header: str | None, body: bytes, code: str) -> None:
    with pytest.raises(SignatureError) as info:
        verify(header, body, ["s3cret"], now=NOW)
    assert info.value.code == code


def test_inside_tolerance_both_directions() -> None:
    for skew in (-300, -240, 240, 300):
        assert verify(sign("k", BODY, NOW + skew), BODY, ["k"], now=NOW) == NOW + skew


def test_rotation_any_secret_matches() -> None:
    header = sign("old", BODY, NOW) + "," + sign("new", BODY, NOW).split(",")[1]
    assert verify(header, BODY, ["new"], now=NOW) == NOW
    assert verify(sign("old", BODY, NOW), BODY, ["new", "old"], now=NOW) == NOW
    with pytest.raises(SignatureError):
        verify(sign("old", BODY, NOW), BODY, ["new"], now=NOW)


def test_reserialised_body_does_not_verify() -> None:
    header = sign("k", BODY, NOW)
    respaced = BODY.replace(b",", b", ")
    with pytest.raises(SignatureError):
        verify(header, respaced, ["k"], now=NOW)
