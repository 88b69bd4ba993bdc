"""The ERP client: one interface for posting journal entries, one module per dialect.

``client.JournalClient`` is what the ERP poster calls for a batch; ``erpgw`` is the
simulator's bulk API (one request per batch), ``netsuite`` SuiteTalk REST (one upsert per
entry, the account's concurrency limit in flight). ``build_journal_client`` picks one from
configuration. Adding a vendor: a module implementing ``JournalClient`` plus a row in
``DIALECTS`` (docs/adapters.md).
"""

from .client import BeforeSend, JournalClient, build_journal_client
from .erpgw import BULK_PATH, ErpBookedRates, ErpgwJournalClient, ErpRates, entry_to_wire
from .netsuite import NetSuiteJournalClient, NetSuiteQuery

__all__ = [
    "BULK_PATH",
    "BeforeSend",
    "ErpBookedRates",
    "ErpRates",
    "ErpgwJournalClient",
    "JournalClient",
    "NetSuiteJournalClient",
    "NetSuiteQuery",
    "build_journal_client",
    "entry_to_wire",
]
