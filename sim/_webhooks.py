"""Webhook fault payloads (pure): mangled signatures, drifted schemas, shadow ids, reordering.

A *mangled* or *drifted* delivery is an extra request next to an event's genuine delivery. It
must be refused by a correct receiver, and if one is wrongly processed the posting must be
attributable: so, except for the ``unknown_field`` drift (which a tolerant reader accepts and
which therefore carries the genuine event), they carry a *shadow* copy of the event: the same
invoice with its id (and the event id) suffixed ``~<mode>``. Nothing was issued under a shadow
id, so a posting for one is both ``unexpected`` in the audit and counted against its mode.

Everything here is pure: bytes and values in, bytes and header values out.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec

from contracts.platforms.billing import BillingEvent, BillingInvoice, EventData
from contracts.platforms.signing import sign

__all__ = [
    "SHADOW_SEP",
    "WRONG_SECRET",
    "alter_one_byte",
    "drift_body",
    "mangled_request",
    "shadow_event",
    "shadow_mode",
    "shuffle_window",
]

SHADOW_SEP = "~"
WRONG_SECRET = "whsec_not_the_shared_secret"  # noqa: S105 - deliberately wrong, not a secret

_ENCODER = msgspec.json.Encoder()
_GENERIC = msgspec.json.Decoder()


def shadow_event(event: BillingEvent, mode: str) -> BillingEvent:
    """``event`` with its invoice id and event id suffixed ``~mode`` (a look-alike)."""
    inv = event.data.object
    shadow: BillingInvoice = msgspec.structs.replace(inv, id=f"{inv.id}{SHADOW_SEP}{mode}")
    return msgspec.structs.replace(
        event, id=f"{event.id}{SHADOW_SEP}{mode}", data=EventData(object=shadow)
    )


def shadow_mode(business_id: str) -> str | None:
    """The mode a shadow id was made for (``"in_000001~wrong_secret"`` → ``"wrong_secret"``),
    ``None`` for an ordinary id."""
    base, sep, mode = business_id.rpartition(SHADOW_SEP)
    return mode if sep and base and mode else None


def alter_one_byte(body: bytes) -> bytes:
    """``body`` with the first digit of the invoice ``"total"`` changed (one byte, so the
    signature no longer matches and the amount is wrong). Falls back to the last digit of the
    body, then to flipping the last byte. Raises nothing."""
    at = body.rfind(b'"total":')
    pos = -1
    if at >= 0:
        pos = at + len(b'"total":')
    else:
        for i in range(len(body) - 1, -1, -1):
            if 48 <= body[i] <= 57:
                pos = i
                break
    if 0 <= pos < len(body) and 48 <= body[pos] <= 57:
        digit = body[pos] - 48
        new = 48 + (digit % 9) + 1  # 0→1 … 8→9, 9→1: always another digit, never a leading 0
        return body[:pos] + bytes([new]) + body[pos + 1:]
    if not body:
        return b" "
    return body[:-1] + bytes([body[-1] ^ 0x01])


def mangled_request(
    mode: str, body: bytes, secret: str, timestamp: int
) -> tuple[bytes, str | None]:
    """The body and signature header value of a ``mode`` mangled delivery of ``body``.

    ``None`` as the header means "send no signature header". Raises ``ValueError`` for an
    unknown mode.
    """
    if mode == "wrong_secret":
        return body, sign(WRONG_SECRET if secret != WRONG_SECRET else secret + "x", body,
                          timestamp)
    if mode == "body_byte":
        return alter_one_byte(body), sign(secret, body, timestamp)
    if mode == "header_missing":
        return body, None
    if mode == "header_garbled":
        good = sign(secret, body, timestamp)
        # Separators swapped and the digest truncated: no name=value items survive parsing.
        return body, good.replace("=", ":").replace(",", ";")[:40]
    if mode == "v0_only":
        return body, sign(secret, body, timestamp).replace("v1=", "v0=")
    raise ValueError(f"unknown mangle mode {mode!r}")


def drift_body(mode: str, event: BillingEvent) -> bytes:
    """The body of a ``mode`` schema-drifted delivery of ``event``.

    ``unknown_field``: the genuine event with an extra field in the invoice and at the top
    level; the others drift the shadow copy: ``missing_field`` drops the invoice ``total``,
    ``int_to_string`` sends it as a string, ``renamed_enum`` renames the event type
    (``invoice.finalized`` → ``invoice.finalised``), ``nested_type_change`` sends the invoice
    ``lines`` as a bare array instead of a list object. Raises ``ValueError`` for an unknown
    mode.
    """
    doc: dict[str, Any] = _GENERIC.decode(_ENCODER.encode(
        event if mode == "unknown_field" else shadow_event(event, mode)))
    inv: dict[str, Any] = doc["data"]["object"]
    if mode == "unknown_field":
        inv["x_loyalty_tier"] = {"tier": "gold", "since": inv["created"]}
        doc["api_version"] = "2099-01-01"
    elif mode == "missing_field":
        del inv["total"]
    elif mode == "int_to_string":
        inv["total"] = str(inv["total"])
    elif mode == "renamed_enum":
        doc["type"] = str(doc["type"]).replace("finalized", "finalised")
    elif mode == "nested_type_change":
        inv["lines"] = inv["lines"]["data"]
    else:
        raise ValueError(f"unknown drift mode {mode!r}")
    return _ENCODER.encode(doc)


def shuffle_window(items: list[Any], seed: int, first_index: int) -> int:
    """Shuffle ``items`` in place, seeded by ``seed`` and the window's ``first_index``;
    return how many items left their position. Raises nothing."""
    if len(items) < 2:
        return 0
    before = list(items)
    random.Random(f"{seed}/reorder/{first_index}").shuffle(items)
    return sum(a is not b for a, b in zip(before, items, strict=True))
