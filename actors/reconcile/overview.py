"""What the legs of one reconciliation add up to (pure): breaks by kind over every leg, the
share of breaks the gateway repairs by itself, and revenue event accuracy."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from .matching import BREAK_KINDS, EXPLAINED_KINDS, Break, ReconReport, Repost, Reupload

__all__ = ["Overview", "overview"]


class Overview(msgspec.Struct, frozen=True):
    by_kind: dict[str, int]  # every kind of BREAK_KINDS, over every leg
    breaks: list[Break]  # every leg's, in leg order
    real: int  # breaks a person or a repair must act on (not in flight, not dead-lettered)
    repairable: int  # real breaks with an automatic repair (Repost, Reupload)
    repaired: int  # repairs the run did
    revenue_event_accuracy: float | None  # revenue leg: matched / checked; None: not run

    @property
    def auto_repairable_share(self) -> float:
        """Real breaks the gateway can repair by itself ÷ real breaks (1.0 when none)."""
        return self.repairable / self.real if self.real else 1.0

    @property
    def auto_repaired_share(self) -> float:
        """Real breaks the run repaired ÷ real breaks (1.0 when none)."""
        return min(self.repaired, self.real) / self.real if self.real else 1.0


def overview(legs: Mapping[str, ReconReport], *, repaired: int = 0) -> Overview:
    """Sum ``legs`` (name → that leg's report); ``repaired``: how many repairs the run did.
    Raises nothing."""
    by_kind = {k: 0 for k in BREAK_KINDS}
    breaks: list[Break] = []
    repairable = 0
    for leg in legs.values():
        breaks += leg.breaks
        for kind, n in leg.by_kind.items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        repairable += sum(1 for a in leg.actions if isinstance(a, Repost | Reupload))
    real = sum(1 for b in breaks if b.kind not in EXPLAINED_KINDS)
    rev = legs.get("revenue")
    return Overview(by_kind=by_kind, breaks=breaks, real=real, repairable=repairable,
                    repaired=repaired, revenue_event_accuracy=None if rev is None
                    else rev.accuracy)
