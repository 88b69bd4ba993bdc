"""Business monitoring: 1 s metric snapshots, KPIs against SLA targets, monitoring events, and
the Prometheus exposition of the same figures. The subjects and every field:
docs/monitoring.md.

- ``snapshot``: the ``Monitor`` core (no I/O): the metrics and KPI documents, recovery times,
  the queued events;
- ``publisher``: ``MetricsPublisher``, the actor that publishes them on NATS;
- ``prometheus``: one ``prometheus_client`` registry per process (``GET /metrics``);
- ``sla``: the ``[sla]`` section.
"""

from __future__ import annotations

from .prometheus import Exposition, endpoint_label, prometheus_text
from .publisher import MetricsPublisher, events_flushed, flush_events
from .sla import SlaConfig
from .snapshot import SCHEMA_VERSION, LaneWatch, Monitor, instance_id, kpi_subject

__all__ = [
    "SCHEMA_VERSION",
    "Exposition",
    "LaneWatch",
    "MetricsPublisher",
    "Monitor",
    "SlaConfig",
    "endpoint_label",
    "events_flushed",
    "flush_events",
    "instance_id",
    "kpi_subject",
    "prometheus_text",
]
