"""The platforms the gateway talks to: one ``Platform`` per platform account and process.

Every flow reaches a platform only through its ``Platform`` (its pool, credentials, account
budget, breakers and dialect); nothing outside this package opens an HTTP client
(import-linter keeps it so). Vendor dialects live in the platform's subpackage
(``actors.platforms.billing.stripe``, ``actors.platforms.erp.netsuite``). Adding a platform
or a vendor: docs/adapters.md.
"""

from ..infra.http import (
    Ambiguous,
    HttpResponse,
    PlatformRejected,
    PlatformUnavailable,
    RequestSigner,
)
from ._platform import PLATFORMS, Platform, Platforms, PlatformSpec, open_platforms
from .guard import PlatformGuard, guarded_call, segment

__all__ = [
    "PLATFORMS",
    "Ambiguous",
    "HttpResponse",
    "Platform",
    "PlatformGuard",
    "PlatformRejected",
    "PlatformSpec",
    "PlatformUnavailable",
    "Platforms",
    "RequestSigner",
    "guarded_call",
    "open_platforms",
    "segment",
]
