"""The webhook front door for every platform: verify, route, group-commit to JetStream.

``server`` is the actor serving every source's webhooks (and the usage and synchronous
intakes) on one port; ``routes`` what a source is (path, secrets, signature header, route
table); ``group_commit`` the one atomic JetStream commit per gathering of concurrent requests.
"""

from .group_commit import GroupCommit
from .routes import EventHead, EventRoute, Inbound, WebhookSource, mapped, timestamp
from .server import ExtraRoute, IngressSettings, PostRoute, WebhookIngress

__all__ = [
           "EventHead",
           "EventRoute",
           "ExtraRoute",
           "GroupCommit",
           "Inbound",
           "IngressSettings",
           "PostRoute",
           "WebhookIngress",
           "WebhookSource",
           "mapped",
           "timestamp",
]
