"""General-ledger canonical messages (authority: the ERP)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import msgspec

from ._money import Currency, check_currency

__all__ = ["JournalLine", "PostJournalEntry"]

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class JournalLine(msgspec.Struct, frozen=True):
    account: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    debit: NonNegative = 0
    credit: NonNegative = 0
    memo: str = ""

    def __post_init__(self) -> None:
        if (self.debit == 0) == (self.credit == 0):
            raise ValueError(
                "journal.line_sides: a journal line has exactly one of debit or credit above zero"
            )


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
        check_currency(self.currency)
        debits = sum(line.debit for line in self.lines)
        credits = sum(line.credit for line in self.lines)
        if debits != credits:
            raise ValueError(
                f"journal.unbalanced: debits {debits} != credits {credits} {self.currency}"
            )

    @property
    def amount(self) -> int:
        return sum(line.debit for line in self.lines)
