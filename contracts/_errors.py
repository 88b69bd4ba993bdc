"""One error tree for the whole gateway, split by what the caller should do.

``Retryable`` failures are worth another attempt later (timeouts, 5xx, 429, a broker that is
reconnecting); ``Permanent`` failures never get better by retrying (a contract violation, a
business rejection) and go to the dead-letter stream at once. ``Closed`` means we closed the
resource ourselves (shutdown); ``Broken`` means the peer broke it.

Every error carries a stable ``code``. Codes appear in HTTP error bodies, DLQ entries, logs and
the runbook (docs/errors.md); never change the meaning of an existing code.
"""

from __future__ import annotations

__all__ = [
    "Broken",
    "Closed",
    "ContractError",
    "GatewayError",
    "Permanent",
    "Retryable",
    "SignatureError",
]


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    code: str = "gateway.error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def to_dict(self) -> dict[str, str]:
        """The JSON body shown to a caller: code and message, never a traceback."""
        return {"code": self.code, "message": self.message}


class Retryable(GatewayError):
    """Try again later; ``retry_after`` (seconds) is the earliest sensible moment, if known."""

    code = "retryable"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Permanent(GatewayError):
    """Retrying cannot help: dead-letter the message with this code."""

    code = "permanent"


class Closed(GatewayError):
    """The resource was closed by us (shutdown in progress)."""

    code = "closed"


class Broken(Retryable):
    """The peer broke the connection; the operation may or may not have happened."""

    code = "broken"


class ContractError(Permanent):
    """A message does not satisfy its canonical contract.

    ``path`` names the offending field as a JSON path (``$.payload.lines[2].amount``) so an
    operator can see at a glance what was wrong.
    """

    code = "contract.invalid"

    def __init__(self, message: str, *, code: str | None = None, path: str = "$") -> None:
        super().__init__(message, code=code)
        self.path = path

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "path": self.path}


class SignatureError(Permanent):
    """A webhook's signature header is missing, malformed, stale or does not match."""

    code = "signature.invalid"
