"""The ERP adapter: bulk, idempotent postings into the cloud ERP."""

from .poster import ErpPoster, entry_to_wire

__all__ = ["ErpPoster", "entry_to_wire"]
