"""Infrastructure shells: the only modules that import nats, aiosqlite or aiohttp's client.

Everything above this package sees our own types and our own error tree
(``contracts.GatewayError``), never a third-party exception. The HTTP client
(``actors.infra.http``) is not re-exported here: flows reach platforms only through
``actors.platforms``, and import-linter keeps it so.
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
from .ledger import Ledger, PostingRow, VersionMark, VersionRow

__all__ = [
    "ConsumerSettings",
    "Delivery",
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
