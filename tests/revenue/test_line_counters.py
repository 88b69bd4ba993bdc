"""The revenue poster's line counters that revenue event accuracy is computed from
(``erpgw.mon.kpi``): uploaded, in doubt, rejected (refused by the platform, with their whole
invoice) and dead-lettered once retries gave up — each line counted once."""

from __future__ import annotations

from actors.infra.http import Ambiguous, PlatformUnavailable
from actors.infra.ledger import Ledger

from .test_poster import FakeDelivery, Platform, accept, envelope, fail, poster, refuse_invoice


def lines(p: object) -> dict[str, object]:
    stats = p.statistics()  # type: ignore[attr-defined]
    return {k: stats[k] for k in ("uploaded_lines", "in_doubt_lines", "rejected_lines",
                                  "dead_lettered_lines")}


async def test_a_readable_422_counts_the_refused_invoices_lines(ledger: Ledger) -> None:
    p = poster(Platform(refuse_invoice("in_2")), ledger)
    await p.handle([FakeDelivery(envelope(n, lines=3)) for n in range(1, 4)])
    assert lines(p) == {"uploaded_lines": 6, "in_doubt_lines": 0, "rejected_lines": 3,
                        "dead_lettered_lines": 0}


async def test_a_bisected_422_counts_the_refused_lines_once(ledger: Ledger) -> None:
    p = poster(Platform(refuse_invoice("in_3", readable=False)), ledger)
    await p.handle([FakeDelivery(envelope(n)) for n in range(1, 6)])
    assert lines(p) == {"uploaded_lines": 8, "in_doubt_lines": 0, "rejected_lines": 2,
                        "dead_lettered_lines": 0}


async def test_no_answer_counts_in_doubt(ledger: Ledger) -> None:
    p = poster(Platform(fail(Ambiguous("timeout", code="http.timeout"))), ledger)
    await p.handle([FakeDelivery(envelope(1))])
    assert lines(p)["in_doubt_lines"] == 2 and lines(p)["uploaded_lines"] == 0


async def test_retries_exhausted_count_the_unsent_lines_once_per_invoice(ledger: Ledger) -> None:
    p = poster(Platform(fail(PlatformUnavailable("503", code="http.server_error")), accept),
               ledger)
    # the same invoice delivered twice in one batch, on its last allowed delivery
    last = p.consumer_settings.max_deliver
    batch = [FakeDelivery(envelope(1, lines=3), num_delivered=last),
             FakeDelivery(envelope(1, lines=3), num_delivered=last)]
    await p.handle(batch)
    assert [d.verdict for d in batch] == ["term", "term"]
    assert lines(p) == {"uploaded_lines": 0, "in_doubt_lines": 0, "rejected_lines": 0,
                        "dead_lettered_lines": 3}
