"""Credit memo router: ``credit_memo.issued.v1`` → one reversing ERP journal entry command.

The accounting mirrors ``journal_for_invoice`` (pure, ``journal_for_credit_memo``): debit
deferred revenue with the subtotal and tax payable with the tax, credit accounts receivable
with the total. A full credit memo of an invoice therefore posts exactly the invoice's entry
with debits and credits swapped (a property test proves it). A credit memo's lines may be
signed (a line can re-charge part of the credit), so a negative subtotal or tax moves to the
other side instead of being posted negative.

The command goes to the same subject as the invoices' (``erp.journal``), so the existing ERP
poster posts it in its bulk requests: ``externalId`` = the credit memo id, idempotency key
derived from the memo's business key (``erp_idempotency_key``), ``Nats-Msg-Id`` derived from
(input id, ``erp.journal``). Batches are processed like the invoice router's: plan every
message, publish the outputs as one atomic batch, ack the inputs whose outputs are stored.
With ``[entities]`` a credit memo is posted for its customer's entity exactly like an invoice
(``invoices.with_entity``, the rate of the memo's own day, read by ``preload_rates``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from contracts import (
    ContractError,
    CreditMemoIssued,
    Envelope,
    JournalLine,
    MsgpackCodec,
    PostJournalEntry,
    Subjects,
    contract_error,
)

from ..deadletter import DeadLetterSink
from ..infra.bus import Delivery, OutMsg
from ..lifecycle.fx import EntityMap, RateTable
from ..worker import BatchWorker
from .invoices import (
    AccountMap,
    RateSource,
    erp_idempotency_key,
    journal_command,
    preload_rates,
    with_entity,
)

__all__ = ["CreditMemoRouter", "journal_for_credit_memo", "plan_credit_memo"]

log = logging.getLogger("erpgw.router.credits")
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)


def _side(account: str, amount: int, memo: str, *, debit: bool) -> JournalLine:
    """``amount`` on the debit (``debit``) or credit side; a negative amount on the other."""
    if (amount > 0) == debit:
        return JournalLine(account=account, debit=abs(amount), memo=memo)
    return JournalLine(account=account, credit=abs(amount), memo=memo)


def journal_for_credit_memo(cm: CreditMemoIssued, key: str,
                            accounts: AccountMap) -> PostJournalEntry:
    """The balanced reversing entry of a credit memo: Dr deferred revenue ``subtotal``, Dr tax
    payable ``tax``, Cr receivable ``total`` (zero parts omitted, negative parts on the other
    side). Pure. Raises ``ValueError`` (``journal.*``) only for a memo breaking its own
    invariants, which ``CreditMemoIssued`` already refuses (``total > 0``)."""
    memo = (f"Credit memo {cm.number} ({cm.credit_memo_id}) customer {cm.customer_id}"
            + (f" reverses {cm.invoice_id}" if cm.invoice_id else ""))
    lines: list[JournalLine] = []
    if cm.subtotal:
        lines.append(_side(accounts.deferred_revenue, cm.subtotal, "deferred revenue reversed",
                           debit=True))
    if cm.tax:
        lines.append(_side(accounts.tax_payable, cm.tax, "tax reversed", debit=True))
    lines.append(JournalLine(account=accounts.receivable, credit=cm.total, memo=memo))
    return PostJournalEntry(
        idempotency_key=key,
        external_id=cm.credit_memo_id,
        posting_date=cm.issued_at.date(),
        currency=cm.currency,
        memo=memo,
        lines=lines,
    )


def plan_credit_memo(env: Envelope, subjects: Subjects, accounts: AccountMap, *,
                     entities: EntityMap | None = None,
                     rates: RateTable | None = None) -> OutMsg:
    """The ``erp.journal`` command for one credit memo envelope, posted for its customer's
    entity like an invoice (``invoices.with_entity``: the rate of the memo's own day).

    Raises ``ContractError``: ``route.unexpected_type`` for another payload,
    ``journal.*`` when the entry cannot be balanced, ``fx.missing_rate``.
    """
    cm = env.payload
    if not isinstance(cm, CreditMemoIssued):
        raise ContractError(f"credit memo router cannot handle {env.type}",
                            code="route.unexpected_type", path="$.payload.type")
    try:
        entry = with_entity(journal_for_credit_memo(cm, erp_idempotency_key(env), accounts),
                            cm.customer_id, entities or EntityMap(), rates)
    except ValueError as exc:
        raise contract_error(exc) from exc
    return journal_command(env, entry, subjects)


class CreditMemoRouter(BatchWorker):
    """The durable consumer ``credit-router`` (docs/flows.md, "Flow 2: credit memos")."""

    def __init__(self, name: str, *, subjects: Subjects, dlq: DeadLetterSink,
                 accounts: AccountMap | None = None, entities: EntityMap | None = None,
                 rate_source: RateSource | None = None, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.subjects = subjects
        self.dlq = dlq
        self.accounts = accounts or AccountMap()
        self.entities = entities or EntityMap()
        self.rate_source = rate_source
        self.rates = RateTable()

    async def handle(self, batch: Sequence[Delivery]) -> None:
        await preload_rates(self.name, batch, self.entities, self.rates, self.rate_source)
        await self.route(batch, lambda d: plan_credit_memo(
            _codec.decode(d.data), self.subjects, self.accounts, entities=self.entities,
            rates=self.rates), self.dlq)

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "dead_lettered": self.dlq.count}
