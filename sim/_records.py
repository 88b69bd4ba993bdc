"""The records the simulated platforms keep: what billing issued and what the ERP posted.

They are the inputs of the audit (``sim._audit``), kept apart from the services so that the
audit stays a pure function over plain values.
"""

from __future__ import annotations

import re

import msgspec

from contracts.platforms.erp import JournalEntryRecord

__all__ = ["IssuedInvoice", "Posting", "split_external_id"]

# One journal entry the ERP committed (append-only; never changed once written). Encoded as
# JSON it is the item shape of ``GET /erp/v1/journal-entries`` (camelCase, like the rest of
# the ERP API); ``version`` is set when the external id names one.
Posting = JournalEntryRecord

_VERSIONED = re.compile(r"^(?P<base>.+):v(?P<version>[0-9]{1,9})$")


def split_external_id(external_id: str) -> tuple[str, int | None]:
    """``"in_000001:v3"`` → ``("in_000001", 3)``; an id without ``:v<n>`` → ``(id, None)``."""
    m = _VERSIONED.match(external_id)
    if m is None:
        return external_id, None
    return m.group("base"), int(m.group("version"))


class IssuedInvoice(msgspec.Struct, frozen=True):
    """An invoice billing issued: its business key (``invoice_id``), money and issue time.

    ``currency`` is upper-case ISO-4217 (the ERP's spelling), although the webhook carries it
    lower-case as billing platforms do. ``issued_at`` is unix seconds (``time.time()``).
    ``version`` is the invoice's latest version (2 for an amended invoice, whose ``total`` is
    then the amended total).
    """

    invoice_id: str
    currency: str
    total: int
    issued_at: float
    version: int = 1
