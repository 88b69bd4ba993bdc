"""The altered-amount drill's verdict compares documents: the simulator names the postings it
altered (an amendment's ``in_1:v2``), the reconciler's amount breaks name documents (``in_1``).
Seen in ``erpgw demo --faults ...,out-of-order,...,altered-amount``: 18 altered, 18 found, and
still "exact: False" (missed ``in_000358:v2``, unexplained ``in_000358``)."""

from __future__ import annotations

from gateway.drills import altered_section

AUDIT = {"altered_ids": ["in_1", "in_2:v2", "in_3:v2:reversal"], "altered_count": 3}
DOCS = {"in_1", "in_2", "in_3"}


def test_an_amended_posting_is_judged_by_its_document() -> None:
    out = altered_section(AUDIT, found=DOCS, on_bus=DOCS, proposed_on_bus=DOCS)
    assert out["exact"] is True
    assert out["missed"] == out["unexplained"] == []
    assert (out["altered"], out["documents"], out["found"]) == (3, 3, 3)


def test_a_document_the_reconciler_missed_is_named() -> None:
    found = {"in_1", "in_3"}
    out = altered_section(AUDIT, found=found, on_bus=found, proposed_on_bus=found)
    assert out["exact"] is False and out["missed"] == ["in_2"] and out["unexplained"] == []


def test_an_incomplete_list_of_altered_postings_is_not_exact() -> None:
    audit = {**AUDIT, "altered_count": 4}  # the simulator altered one more than it listed
    assert altered_section(audit, found=DOCS, on_bus=DOCS, proposed_on_bus=DOCS)["exact"] is False
