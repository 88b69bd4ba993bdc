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
from ._fx import parse_rate
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


class PostJournalEntry(msgspec.Struct, frozen=True, tag="erp.journal.post.v1", tag_field="type",
                       omit_defaults=True):
    """A command to the ERP adapter: post this balanced entry exactly once.

    ``idempotency_key`` is derived from the business key of the source document, so every
    attempt to post the same document, from any process, carries the same key.

    Entities and currencies (optional, omitted when unset, so a command without them encodes
    as before): ``entity`` is the legal entity (the ERP's subsidiary) the entry is posted
    for; ``functional_currency`` that entity's currency when it is not ``currency`` (the
    transaction currency the lines are in), with ``exchange_rate``, the exact decimal string
    of functional major units per transaction major unit the document was booked at.
    """

    idempotency_key: Annotated[str, msgspec.Meta(min_length=8, max_length=64)]
    external_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    posting_date: date
    currency: Currency
    memo: str
    lines: Annotated[list[JournalLine], msgspec.Meta(min_length=2, max_length=1000)]
    entity: Annotated[str, msgspec.Meta(min_length=1, max_length=50)] | None = None
    functional_currency: Currency | None = None
    exchange_rate: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] | None = None

    def __post_init__(self) -> None:
        if self.currency not in CURRENCY_EXPONENTS:
            require_known_currency(self.currency)
        if self.functional_currency is not None or self.exchange_rate is not None:
            self._check_fx()
        debits = sum(line.debit for line in self.lines)
        credits = sum(line.credit for line in self.lines)
        if debits != credits:
            raise violation("journal.unbalanced",
                            f"debits {debits} != credits {credits} {self.currency}", "lines")

    def _check_fx(self) -> None:
        if self.functional_currency is None or self.functional_currency == self.currency:
            raise violation("fx.invalid_rate", "an exchange rate needs a functional currency "
                            f"other than the transaction currency {self.currency}",
                            "functional_currency")
        require_known_currency(self.functional_currency, "functional_currency")
        if self.exchange_rate is None:
            raise violation("fx.missing_rate", f"{self.currency} in a "
                            f"{self.functional_currency} entity needs an exchange rate",
                            "exchange_rate")
        try:
            parse_rate(self.exchange_rate)
        except ValueError as exc:
            raise violation("fx.invalid_rate", str(exc).partition(": ")[2],
                            "exchange_rate") from None

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
