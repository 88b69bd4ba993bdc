"""Invoices (authority: the billing platform), in two versions.

``invoice.issued.v1`` is what the running gateway publishes; its fields never change. ``v2``
adds a tax breakdown as a *required* field, which an additive change within v1 could not do
(a new required field breaks v1 messages already in the stream). v2 keeps every v1 field with
the same name and type, so:

- a v2 reader accepts v1: decode with the ``InvoiceRead`` union and call ``invoice_v2()``
  (a v1 invoice becomes one tax line of unknown jurisdiction and rate);
- a v1 reader tolerates v2 fields: a v2 body read as v1 simply ignores ``tax_lines``, so while
  any v1 reader remains a producer publishes ``InvoiceIssuedV2.to_v1()`` on the v1 subject
  (or both), and moves to v2 alone once every reader is upgraded. A v1 reader that receives
  the v2 *tag* rejects it (``contract.invalid_value`` at ``$.payload.type``): a type it does
  not know is never silently misread.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

from ._fields import Amount, Id, Quantity, RateBp, SignedAmount, Text, Timestamp
from ._invariants import (
    require_known_currency,
    require_lines_sum,
    require_non_negative,
    require_ordered,
    violation,
)
from ._money import CURRENCY_EXPONENTS, Currency, allocate

__all__ = ["InvoiceIssued", "InvoiceIssuedV2", "InvoiceLine", "InvoiceRead", "TaxLine",
           "invoice_v2"]

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class InvoiceLine(msgspec.Struct, frozen=True):
    """One charge on an invoice: ``quantity`` x ``unit_amount`` == ``amount``."""

    line_id: Id
    product_id: Id
    description: str
    quantity: NonNegative
    unit_amount: NonNegative
    amount: NonNegative

    def __post_init__(self) -> None:
        # Inline fast path: this runs for every line of every invoice on the hot path.
        if self.quantity < 0 or self.unit_amount < 0 or self.amount < 0:
            require_non_negative(self, "quantity", "unit_amount", "amount")
        if self.quantity * self.unit_amount != self.amount:
            raise violation(
                "invoice.line_amount_mismatch",
                f"quantity {self.quantity} x unit_amount {self.unit_amount} != amount "
                f"{self.amount}", "amount")


def _check_invoice(inv: InvoiceIssued | InvoiceIssuedV2) -> None:
    """The invariants every invoice version shares (inline fast paths: hot)."""
    if inv.currency not in CURRENCY_EXPONENTS:
        require_known_currency(inv.currency)
    if inv.subtotal < 0 or inv.tax < 0 or inv.total < 0:
        require_non_negative(inv, "subtotal", "tax", "total")
    if inv.period_start > inv.period_end:
        raise violation(
            "invoice.period_reversed",
            f"period_start {inv.period_start} is after period_end {inv.period_end}",
            "period_end")
    line_sum = sum(line.amount for line in inv.lines)
    if line_sum != inv.subtotal:
        raise violation("invoice.lines_total_mismatch",
                        f"lines sum to {line_sum}, subtotal is {inv.subtotal}", "subtotal")
    if inv.subtotal + inv.tax != inv.total:
        raise violation("invoice.total_mismatch",
                        f"subtotal {inv.subtotal} + tax {inv.tax} != total {inv.total}",
                        "total")


class InvoiceIssued(msgspec.Struct, frozen=True, tag="invoice.issued.v1", tag_field="type"):
    """An invoice the billing platform finalised. Amounts are minor units of ``currency``."""

    invoice_id: Id
    number: str
    customer_id: Id
    currency: Currency
    issued_at: datetime
    period_start: date
    period_end: date
    lines: Annotated[list[InvoiceLine], msgspec.Meta(min_length=1, max_length=1000)]
    subtotal: NonNegative
    tax: NonNegative
    total: NonNegative

    def __post_init__(self) -> None:
        _check_invoice(self)


class TaxLine(msgspec.Struct, frozen=True, kw_only=True):
    """One tax charged on an invoice: who levies it, at what rate, on what base."""

    jurisdiction: Annotated[str, msgspec.Meta(
        min_length=1, max_length=100,
        description='where the tax is due, e.g. "US-CA", "DE"; "unknown" when upgraded from v1')]
    kind: Literal["vat", "gst", "sales", "withholding", "other"] = "other"
    rate_bp: RateBp | None = None
    taxable_amount: Amount
    amount: Amount

    def __post_init__(self) -> None:
        require_non_negative(self, "taxable_amount", "amount")


class InvoiceIssuedV2(msgspec.Struct, frozen=True, tag="invoice.issued.v2", tag_field="type"):
    """An invoice the billing platform finalised, with its tax broken down by jurisdiction.

    Every v1 field, same name and type, plus ``tax_lines`` (required) summing to ``tax``.
    """

    invoice_id: Id
    number: str
    customer_id: Id
    currency: Currency
    issued_at: datetime
    period_start: date
    period_end: date
    lines: Annotated[list[InvoiceLine], msgspec.Meta(min_length=1, max_length=1000)]
    subtotal: NonNegative
    tax: NonNegative
    total: NonNegative
    tax_lines: Annotated[tuple[TaxLine, ...], msgspec.Meta(max_length=100)]

    def __post_init__(self) -> None:
        _check_invoice(self)
        tax_sum = sum(t.amount for t in self.tax_lines)
        if tax_sum != self.tax:
            raise violation("invoice.tax_breakdown_mismatch",
                            f"tax_lines sum to {tax_sum}, tax is {self.tax}", "tax_lines")

    def to_v1(self) -> InvoiceIssued:
        """The same invoice as ``invoice.issued.v1`` (the tax breakdown is dropped), for
        readers not yet upgraded."""
        return InvoiceIssued(
            invoice_id=self.invoice_id, number=self.number, customer_id=self.customer_id,
            currency=self.currency, issued_at=self.issued_at, period_start=self.period_start,
            period_end=self.period_end, lines=self.lines, subtotal=self.subtotal, tax=self.tax,
            total=self.total)


InvoiceRead = InvoiceIssued | InvoiceIssuedV2
"""What a v2 invoice reader decodes: both versions (normalise with ``invoice_v2``)."""


def invoice_v2(inv: InvoiceIssued | InvoiceIssuedV2) -> InvoiceIssuedV2:
    """Upgrade a v1 invoice to v2 (the whole tax as one line of unknown jurisdiction and
    rate, on the subtotal); a v2 invoice is returned as is."""
    if isinstance(inv, InvoiceIssuedV2):
        return inv
    tax_lines = (TaxLine(jurisdiction="unknown", taxable_amount=inv.subtotal,
                         amount=inv.tax),) if inv.tax else ()
    return InvoiceIssuedV2(
        invoice_id=inv.invoice_id, number=inv.number, customer_id=inv.customer_id,
        currency=inv.currency, issued_at=inv.issued_at, period_start=inv.period_start,
        period_end=inv.period_end, lines=inv.lines, subtotal=inv.subtotal, tax=inv.tax,
        total=inv.total, tax_lines=tax_lines)


# -- v3: real billing platforms' invoices (Stripe) -------------------------------------------
#
# v1/v2 lines are ``quantity`` x ``unit_amount`` == ``amount`` >= 0, and the invoice is
# ``subtotal + tax``. Real invoices break both: tiered and volume prices (the amount is not
# quantity x a unit price), discounts per line and per invoice, negative lines (proration
# credits), several taxes per line (per jurisdiction, added to the price or included in it).
# Those are changes of meaning, so they are a new version with its own line struct.

__all__ += ["InvoiceIssuedV3", "InvoiceLineV3", "LineTax", "revenue_by_line", "tax_by_jurisdiction"]


class LineTax(msgspec.Struct, frozen=True, kw_only=True):
    """One tax on one invoice line. ``inclusive``: ``amount`` is already inside the line's
    ``amount`` (a gross price); otherwise it is added on top (exclusive). Signed: a proration
    credit line carries negative tax."""

    jurisdiction: Annotated[str, msgspec.Meta(
        min_length=1, max_length=100,
        description='where the tax is due ("US-CA", "DE"), or the tax rate id when the '
                    "platform names no jurisdiction")]
    kind: Literal["vat", "gst", "sales", "withholding", "other"] = "other"
    rate_bp: RateBp | None = None
    inclusive: bool = False
    taxable_amount: SignedAmount
    amount: SignedAmount


class InvoiceLineV3(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a real invoice. ``amount`` is what the price charges (any pricing: per unit,
    tiered, volume, flat; it need not be ``quantity`` x ``unit_amount``), before discounts and
    without exclusive tax; negative for a credit (a proration). ``discount_amount`` is the
    discount given on it (line and invoice discounts alike), ``taxes`` its taxes.
    ``net_amount`` (``amount - discount_amount -`` inclusive taxes) is the line's revenue."""

    line_id: Id
    product_id: Id
    description: Text = ""
    quantity: Quantity = 1
    unit_amount: SignedAmount | None = None
    amount: SignedAmount
    discount_amount: Amount = 0
    taxes: Annotated[tuple[LineTax, ...], msgspec.Meta(max_length=20)] = ()
    proration: bool = False
    subscription_id: Id | None = None
    period_start: date | None = None
    period_end: date | None = None

    def __post_init__(self) -> None:
        require_non_negative(self, "quantity", "discount_amount")
        require_ordered(self.period_start, self.period_end, "period_start", "period_end")

    @property
    def inclusive_tax(self) -> int:
        return sum(t.amount for t in self.taxes if t.inclusive)

    @property
    def exclusive_tax(self) -> int:
        return sum(t.amount for t in self.taxes if not t.inclusive)

    @property
    def net_amount(self) -> int:
        """The line's revenue: its amount less its discount and any tax included in it."""
        return self.amount - self.discount_amount - self.inclusive_tax


class InvoiceIssuedV3(msgspec.Struct, frozen=True, kw_only=True, tag="invoice.issued.v3",
                      tag_field="type"):
    """An invoice the billing platform finalised, as real platforms issue them (signed lines,
    discounts, taxes per line and jurisdiction). Minor units of ``currency``.

    ``subtotal`` = the lines' amounts; ``discount`` = their discounts; ``tax`` = every tax
    (inclusive and exclusive); ``total`` = ``subtotal - discount +`` exclusive tax (negative
    when credits outweigh charges).
    """

    invoice_id: Id
    number: Annotated[str, msgspec.Meta(max_length=200)]
    customer_id: Id
    currency: Currency
    issued_at: Timestamp
    period_start: date
    period_end: date
    lines: Annotated[tuple[InvoiceLineV3, ...], msgspec.Meta(min_length=1, max_length=1000)]
    subtotal: SignedAmount
    discount: Amount = 0
    tax: SignedAmount = 0
    total: SignedAmount
    source_status: Annotated[str, msgspec.Meta(max_length=50)] = ""

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "discount")
        require_ordered(self.period_start, self.period_end, "period_start", "period_end",
                        code="invoice.period_reversed")
        require_lines_sum((ln.amount for ln in self.lines), self.subtotal, "subtotal",
                          code="invoice.lines_total_mismatch")
        require_lines_sum((ln.discount_amount for ln in self.lines), self.discount, "discount",
                          code="invoice.discount_mismatch")
        tax = sum(t.amount for ln in self.lines for t in ln.taxes)
        if tax != self.tax:
            raise violation("invoice.tax_breakdown_mismatch",
                            f"line taxes sum to {tax}, tax is {self.tax}", "tax")
        exclusive = sum(ln.exclusive_tax for ln in self.lines)
        if self.subtotal - self.discount + exclusive != self.total:
            raise violation("invoice.total_mismatch",
                            f"subtotal {self.subtotal} - discount {self.discount} + exclusive "
                            f"tax {exclusive} != total {self.total}", "total")

    @property
    def net_revenue(self) -> int:
        """The invoice's revenue: ``total`` less every tax."""
        return sum(ln.net_amount for ln in self.lines)


def tax_by_jurisdiction(inv: InvoiceIssuedV3) -> dict[str, int]:
    """Every tax of ``inv`` summed per jurisdiction, in order of first appearance."""
    out: dict[str, int] = {}
    for ln in inv.lines:
        for t in ln.taxes:
            out[t.jurisdiction] = out.get(t.jurisdiction, 0) + t.amount
    return out


def revenue_by_line(inv: InvoiceIssuedV3) -> list[int]:
    """The revenue each line of ``inv`` credits, in minor units (pure).

    A line's revenue is its ``net_amount`` (amount less discounts and included tax). Credit
    lines (negative: prorations) reduce the revenue of the invoice's positive lines, in
    proportion (``allocate``: nothing lost or created), so that a proration never posts as a
    debit to deferred revenue while the invoice as a whole bills revenue. The parts sum to
    ``inv.net_revenue`` exactly; when that is negative (credits outweigh charges) every line
    keeps its own net amount.
    """
    nets = [ln.net_amount for ln in inv.lines]
    credit = sum(n for n in nets if n < 0)
    if credit == 0 or sum(nets) < 0:
        return nets
    positive = [max(n, 0) for n in nets]
    taken = allocate(-credit, positive)
    return [p - t for p, t in zip(positive, taken, strict=True)]
