"""Invoice router: ``invoice.issued.v1`` → one balanced ERP journal entry command.

The accounting is plain and pure (``journal_for_invoice``): debit accounts receivable with the
total, credit deferred revenue with the subtotal and tax payable with the tax. Revenue is
recognised later by the revenue platform, not here.

The actor processes whole fetched batches: decode every message, plan its output, publish all
outputs pipelined and wait for their PubAcks, then ack the inputs whose outputs are stored.
Output ids are derived from (input id, step), so a redelivered batch republishes the same ids
and the stream drops the duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec

from contracts import (
    ContractError,
    Envelope,
    InvoiceIssued,
    InvoiceIssuedV3,
    JournalLine,
    MsgpackCodec,
    PostJournalEntry,
    Subjects,
    contract_error,
    derive_id,
    make_envelope,
    revenue_by_line,
    tax_by_jurisdiction,
)

from ..deadletter import DeadLetterSink
from ..erp.ordering import versioned_external_id
from ..infra.bus import Delivery, OutMsg
from ..worker import BatchWorker

__all__ = ["AccountMap", "InvoiceRouter", "journal_command", "journal_for_invoice",
           "journal_for_invoice_v3", "plan_invoice"]

log = logging.getLogger("erpgw.router.invoices")
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)


class AccountMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ERP accounts the invoice posting uses (configurable per company)."""

    receivable: str = "1200"
    deferred_revenue: str = "2400"
    tax_payable: str = "2200"
    # Flow 3: the bank account a payment is applied to, and the expense account of partner
    # commissions (the lines of a settlement's vendor bill).
    cash: str = "1000"
    partner_commission: str = "6100"
    # Tax payable per tax jurisdiction ("DE", "US-CA"); a jurisdiction not listed posts to
    # ``tax_payable``. Empty (the default): one tax account for every jurisdiction.
    tax_payable_by_jurisdiction: dict[str, str] = {}
    # Revenue to the GL (``actors.close``): the account credited with recognised revenue, and
    # one per product line where it differs ({"prod_seat": "4010"}); deferred revenue is debited.
    revenue: str = "4000"
    revenue_by_product: dict[str, str] = {}

    def tax_account(self, jurisdiction: str) -> str:
        return self.tax_payable_by_jurisdiction.get(jurisdiction, self.tax_payable)

    def revenue_account(self, product: str) -> str:
        return self.revenue_by_product.get(product, self.revenue)


def erp_idempotency_key(env: Envelope) -> str:
    """The ERP idempotency key of the posting for ``env``'s business object version."""
    k = env.key
    return derive_id("erp.journal", k.source, k.object_id, str(k.version))


def journal_for_invoice(inv: InvoiceIssued, key: str, accounts: AccountMap,
                        version: int = 1) -> PostJournalEntry:
    """The balanced journal entry for version ``version`` of an issued invoice (requires
    ``inv.total > 0``). Its external id is the invoice id, with ``:v<n>`` from version 2 on
    (an amendment; the ERP poster orders versions and reverses the one it replaces)."""
    memo = f"Invoice {inv.number} ({inv.invoice_id}) customer {inv.customer_id}"
    if version > 1:
        memo += f" version {version}"
    lines = [JournalLine(account=accounts.receivable, debit=inv.total, memo=memo)]
    if inv.subtotal:
        lines.append(JournalLine(account=accounts.deferred_revenue, credit=inv.subtotal,
                                 memo="deferred revenue"))
    if inv.tax:
        lines.append(JournalLine(account=accounts.tax_payable, credit=inv.tax, memo="tax"))
    return PostJournalEntry(
        idempotency_key=key,
        external_id=versioned_external_id(inv.invoice_id, version),
        posting_date=inv.issued_at.date(),
        currency=inv.currency,
        memo=memo,
        lines=lines,
    )


def _side(account: str, amount: int, memo: str, *, credit: bool) -> JournalLine:
    """``amount`` on the credit (``credit``) or debit side; a negative amount on the other."""
    if (amount > 0) == credit:
        return JournalLine(account=account, credit=abs(amount), memo=memo)
    return JournalLine(account=account, debit=abs(amount), memo=memo)


def journal_for_invoice_v3(inv: InvoiceIssuedV3, key: str, accounts: AccountMap,
                           version: int = 1) -> PostJournalEntry:
    """The balanced journal entry of a real platform's invoice (``invoice.issued.v3``).

    Debit receivable ``total``; credit deferred revenue per line with the line's revenue net
    of its discounts and included tax (``revenue_by_line``; zero lines omitted); credit tax
    payable per jurisdiction (``AccountMap.tax_account``) with every tax of that
    jurisdiction, inclusive and exclusive. Negative amounts go to the other side. Credits less
    debits: net revenue + tax = subtotal - discount + exclusive tax = total, so the entry
    balances to the minor unit. Raises ``ValueError`` (``journal.*``) only when every line
    is zero (nothing to post; ``plan_invoice`` skips a zero total first).
    """
    memo = f"Invoice {inv.number or inv.invoice_id} ({inv.invoice_id}) customer {inv.customer_id}"
    if version > 1:
        memo += f" version {version}"
    lines = [_side(accounts.receivable, inv.total, memo, credit=False)] if inv.total else []
    for ln, amount in zip(inv.lines, revenue_by_line(inv), strict=True):
        if amount:
            what = "proration" if ln.proration else "deferred revenue"
            lines.append(_side(accounts.deferred_revenue, amount,
                               f"{what} {ln.line_id} {ln.product_id}"[:200], credit=True))
    for jurisdiction, amount in tax_by_jurisdiction(inv).items():
        if amount:
            lines.append(_side(accounts.tax_account(jurisdiction), amount,
                               f"tax {jurisdiction}", credit=True))
    return PostJournalEntry(
        idempotency_key=key,
        external_id=versioned_external_id(inv.invoice_id, version),
        posting_date=inv.issued_at.date(),
        currency=inv.currency,
        memo=memo,
        lines=lines,
    )


def plan_invoice(env: Envelope, subjects: Subjects, accounts: AccountMap) -> OutMsg | None:
    """What to publish for one inbound envelope; None when there is nothing to post.

    Raises ``ContractError`` for an envelope that is not an issued invoice.
    """
    inv = env.payload
    if isinstance(inv, InvoiceIssuedV3):
        if inv.total == 0:
            return None  # nothing to post for a zero invoice
        try:
            entry = journal_for_invoice_v3(inv, erp_idempotency_key(env), accounts,
                                           env.key.version)
        except ValueError as exc:
            raise contract_error(exc) from exc
        return journal_command(env, entry, subjects)
    if not isinstance(inv, InvoiceIssued):
        raise ContractError(f"invoice router cannot handle {env.type}",
                            code="route.unexpected_type", path="$.payload.type")
    if inv.total == 0:
        return None  # nothing to post for a zero invoice
    entry = journal_for_invoice(inv, erp_idempotency_key(env), accounts, env.key.version)
    return journal_command(env, entry, subjects)


def journal_command(env: Envelope, entry: PostJournalEntry, subjects: Subjects) -> OutMsg:
    """``entry`` as the ``erp.journal`` command caused by ``env``: its message id derived from
    (``env``'s id, "erp.journal"), so a redelivered cause republishes the same id."""
    out = make_envelope(entry, source="gateway", key=env.key, caused_by=env,
                        msg_id=derive_id(env.id, "erp.journal"))
    return OutMsg(subject=subjects.erp_journal, data=_codec.encode(out), msg_id=out.id,
                  headers={"traceparent": out.traceparent or ""})


class InvoiceRouter(BatchWorker):
    def __init__(self, name: str, *, subjects: Subjects, dlq: DeadLetterSink,
                 accounts: AccountMap | None = None, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.subjects = subjects
        self.dlq = dlq
        self.accounts = accounts or AccountMap()
        self.skipped = 0

    async def handle(self, batch: Sequence[Delivery]) -> None:
        _, skipped = await self.route(
            batch, lambda d: plan_invoice(_codec.decode(d.data), self.subjects, self.accounts),
            self.dlq, crash_at="router.after_publish")
        self.skipped += skipped

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "skipped": self.skipped,
                "dead_lettered": self.dlq.count}
