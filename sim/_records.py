"""The records the simulated platforms keep: what billing issued and what the ERP posted.

They are the inputs of the audit (``sim._audit``), kept apart from the services so that the
audit stays a pure function over plain values.
"""

from __future__ import annotations

import msgspec

__all__ = ["IssuedInvoice", "Posting"]


class IssuedInvoice(msgspec.Struct, frozen=True):
    """An invoice billing issued: its business key (``invoice_id``), money and issue time.

    ``currency`` is upper-case ISO-4217 (the ERP's spelling), although the webhook carries it
    lower-case as billing platforms do. ``issued_at`` is unix seconds (``time.time()``).
    """

    invoice_id: str
    currency: str
    total: int
    issued_at: float


class Posting(msgspec.Struct, frozen=True, rename="camel"):
    """One journal entry the ERP committed (append-only; never changed once written).

    Encoded as JSON it is also the item shape of ``GET /erp/v1/journal-entries`` (camelCase,
    like the rest of the ERP API). ``amount`` is the sum of the entry's debits in minor units.
    """

    seq: int
    id: str
    idempotency_key: str
    external_id: str
    currency: str
    amount: int
    accepted_at: float
