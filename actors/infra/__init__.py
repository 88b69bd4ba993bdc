"""Infrastructure shells: the only modules that import nats, aiosqlite or aiohttp's client.

Everything above this package sees our own types and our own error tree
(``contracts.GatewayError``), never a third-party exception.
"""

from .bus import (
    ConsumerSettings,
    Delivery,
    NatsBus,
    OutMsg,
    PullConsumer,
    StoredMsg,
    StreamSettings,
)
from .http import HttpClient, HttpResponse
from .ledger import Ledger, PostingRow, VersionMark, VersionRow

__all__ = [
    "ConsumerSettings",
    "Delivery",
    "HttpClient",
    "HttpResponse",
    "Ledger",
    "NatsBus",
    "OutMsg",
    "PostingRow",
    "PullConsumer",
    "StoredMsg",
    "StreamSettings",
    "VersionMark",
    "VersionRow",
]
