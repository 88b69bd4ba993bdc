"""The synchronous lane: pricing validation and order acceptance, request/reply.

``SyncLane`` (an actor) serves them as NATS services on ``<prefix>.sync.pricing.validate``
and ``<prefix>.sync.order.accept`` and, through ``SyncDoor``, over HTTP on the gateway port;
``rules`` holds the pure rules (deadlines, discounts, CPQ mapping). See docs/flows.md.
"""

from .lane import HTTP_ROUTES, SERVICE_NAME, CpqSettings, SyncDoor, SyncLane
from .rules import Refusal

__all__ = ["HTTP_ROUTES", "SERVICE_NAME", "CpqSettings", "Refusal", "SyncDoor", "SyncLane"]
