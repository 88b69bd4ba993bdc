"""The webhook front door for every platform: verify, route, group-commit to JetStream.

``server`` is the actor serving every source's webhooks (and the usage intake) on one port;
``admin`` the separate admin listener (probes, metrics, status, the synchronous lane's HTTP
face); ``tls`` HTTPS for both; ``routes`` what a source is (path, secrets, signature header, route
table); ``group_commit`` the one atomic JetStream commit per gathering of concurrent requests.
"""

from .admin import AdminListener, AdminSettings
from .group_commit import GroupCommit
from .routes import EventHead, EventRoute, Inbound, WebhookSource, mapped, timestamp
from .server import ExtraRoute, IngressSettings, PostRoute, WebhookIngress
from .tls import TlsError, TlsFiles, server_tls

__all__ = [
           "AdminListener",
           "AdminSettings",
           "EventHead",
           "EventRoute",
           "ExtraRoute",
           "GroupCommit",
           "Inbound",
           "IngressSettings",
           "PostRoute",
           "TlsError",
           "TlsFiles",
           "WebhookIngress",
           "WebhookSource",
           "mapped",
           "server_tls",
           "timestamp",
]
