"""Structured log fields: what a log line may carry besides its message.

A call passes them with ``extra={"code": ..., "business_key": ...}``, or binds them for the code
it wraps with ``log_fields(...)`` (a context variable, so concurrent tasks never mix theirs).
The process's log formatter (``gateway.logs``) prints them: JSON keys, or ``key=value`` after a
human line.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FIELDS", "fields_of", "log_fields", "trace_id_of"]

# The structured fields a line may carry, in the order they are printed.
FIELDS = ("correlation_id", "business_key", "code", "trace_id", "platform")

_bound: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "erpgw_log_fields", default=None)


@contextmanager
def log_fields(**fields: str | None) -> Iterator[None]:
    """Add ``fields`` (names from ``FIELDS``; ``None`` values left out) to every line logged
    by the code inside, in this task and the tasks it starts. Raises ``ValueError`` for a
    name not in ``FIELDS``."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log field(s): {', '.join(sorted(unknown))}")
    token = _bound.set({**(_bound.get() or {}),
                        **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def fields_of(record: logging.LogRecord) -> dict[str, str]:
    """The fields of one record: those bound by ``log_fields``, then its ``extra=``."""
    out = dict(_bound.get() or {})
    for name in FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            out[name] = str(value)
    return {name: out[name] for name in FIELDS if name in out}


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``), or None."""
    parts = (traceparent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return None
