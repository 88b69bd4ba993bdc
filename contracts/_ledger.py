"""General-ledger canonical messages (authority: the ERP).

``erp.journal.post.v1`` is a *command*: the gateway asks the ERP to post a balanced entry
exactly once. ``ledger.journal.posted.v1`` is the ERP's *event* that it did. An entry is in one
currency, so "balances per currency" is "debits equal credits".
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

import msgspec

from ._fields import Amount, Id, Timestamp
from ._invariants import require_known_currency, require_non_negative, violation
from ._money import CURRENCY_EXPONENTS, Currency

__all__ = ["JournalEntryPosted", "JournalLine", "PostJournalEntry"]

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class JournalLine(msgspec.Struct, frozen=True):
    """One side of a journal entry: exactly one of ``debit`` and ``credit`` is above zero."""

    account: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    debit: NonNegative = 0
    credit: NonNegative = 0
    memo: str = ""

    def __post_init__(self) -> None:
        if self.debit < 0 or self.credit < 0:
            require_non_negative(self, "debit", "credit")
        if (self.debit == 0) == (self.credit == 0):
            raise violation(
                "journal.line_sides",
                "a journal line has exactly one of debit or credit above zero", "debit")


class PostJournalEntry(msgspec.Struct, frozen=True, tag="erp.journal.post.v1", tag_field="type"):
    """A command to the ERP adapter: post this balanced entry exactly once.

    ``idempotency_key`` is derived from the business key of the source document, so every
    attempt to post the same document, from any process, carries the same key.
    """

    idempotency_key: Annotated[str, msgspec.Meta(min_length=8, max_length=64)]
    external_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    posting_date: date
    currency: Currency
    memo: str
    lines: Annotated[list[JournalLine], msgspec.Meta(min_length=2, max_length=1000)]

    def __post_init__(self) -> None:
        if self.currency not in CURRENCY_EXPONENTS:
            require_known_currency(self.currency)
        debits = sum(line.debit for line in self.lines)
        credits = sum(line.credit for line in self.lines)
        if debits != credits:
            raise violation("journal.unbalanced",
                            f"debits {debits} != credits {credits} {self.currency}", "lines")

    @property
    def amount(self) -> int:
        return sum(line.debit for line in self.lines)


class JournalEntryPosted(msgspec.Struct, frozen=True, kw_only=True,
                         tag="ledger.journal.posted.v1", tag_field="type"):
    """The ERP posted a journal entry (once, whatever the number of attempts).

    ``idempotency_key`` and ``external_id`` are those of the ``erp.journal.post.v1`` command;
    ``amount`` is the entry's debit total.
    """

    entry_id: Id
    idempotency_key: Annotated[str, msgspec.Meta(min_length=8, max_length=64)]
    external_id: Id
    posting_date: date
    posted_at: Timestamp
    currency: Currency
    amount: Amount

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "amount")
