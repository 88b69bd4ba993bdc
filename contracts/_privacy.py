"""Personal data in canonical messages, and how to show a message without it.

Dead letters keep the original bytes (a replay must re-send exactly what arrived), so the
redaction happens where a message is *shown*: ``erpgw dlq show`` prints the decoded message
with these fields masked unless the operator asks for them (``--reveal``). Logs never print
payloads at all.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PERSONAL_BY_TYPE", "PERSONAL_FIELDS", "redact"]

# Field names that hold personal data anywhere in the model (add new ones here).
PERSONAL_FIELDS = frozenset({"tax_id", "billing_email", "email", "phone", "iban", "address",
                             "prospect_name"})
# Field names that hold personal data in the payloads of one type only (``name`` is a
# customer's name in ``customer.upserted.v1``, a product's in ``product.upserted.v1``).
PERSONAL_BY_TYPE = {"customer.upserted.v1": frozenset({"name"})}


def _mask(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return "***" if value is not None else None
    if "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    return "***" + value[-2:] if len(value) > 4 else "***"


def redact(doc: Any) -> Any:
    """A copy of ``doc`` (decoded JSON-like data) with every personal field masked."""
    if isinstance(doc, dict):
        kind = doc.get("type")
        personal = PERSONAL_FIELDS | PERSONAL_BY_TYPE.get(kind, frozenset()) \
            if isinstance(kind, str) else PERSONAL_FIELDS
        return {k: _mask(v) if k in personal else redact(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [redact(v) for v in doc]
    return doc
