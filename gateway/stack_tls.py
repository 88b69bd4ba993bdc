"""Certificates of a stack with every hop encrypted (``Stack(tls=True)``, ``erpgw demo --tls``).

A throwaway certificate authority made at start (``trustme``) signs one server certificate per
listener (the broker, the gateway's webhook and admin listeners, the simulator), all for
``127.0.0.1`` and ``localhost``, and the client certificate every broker connection presents
(mutual TLS). Everything is written under the stack's work directory, private keys mode 0600;
nothing is committed and nothing outlives the stack's directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from contracts import GatewayError

__all__ = ["HOSTS", "StackCerts", "TlsUnavailable", "quiet_upgraded_tls_eof"]

HOSTS = ("127.0.0.1", "localhost")  # every listener of a stack is on loopback


class TlsUnavailable(GatewayError):
    code = "stack.tls"


_EOF_NOTE = "returning true from eof_received() has no effect when using ssl"


class _UpgradedTlsEof(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _EOF_NOTE


def quiet_upgraded_tls_eof() -> None:
    """Drop the event loop's warning at the close of every NATS connection over TLS.

    The NATS client upgrades a plain connection to TLS after the server's greeting, so the
    stream protocol does not know it runs over TLS and asks, at end of file, to keep the
    connection half open; the loop ignores that and warns, once per connection. Harmless, and
    a stack polls the broker over short connections, so the warning would bury its output.
    Only that exact message is dropped; idempotent."""
    log = logging.getLogger("asyncio")
    if not any(isinstance(f, _UpgradedTlsEof) for f in log.filters):
        log.addFilter(_UpgradedTlsEof())


@dataclass(frozen=True)
class LeafFiles:
    cert: Path  # the certificate chain (PEM)
    key: Path  # its private key (PEM, 0600)


@dataclass(frozen=True)
class StackCerts:
    ca: Path  # the CA every party trusts (PEM)
    broker: LeafFiles
    gateway: LeafFiles  # the webhook and admin listeners
    sim: LeafFiles  # the simulated platforms
    nats_client: LeafFiles  # presented by every broker connection (mutual TLS)

    @classmethod
    def make(cls, directory: Path) -> StackCerts:
        """A new CA and its certificates in ``directory``. Raises ``TlsUnavailable`` when
        ``trustme`` (a development dependency) is not installed."""
        try:
            import trustme
        except ImportError as exc:
            raise TlsUnavailable("a TLS stack makes its certificates with trustme: "
                                 "pip install trustme (or the dev extra)") from exc
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="erpgw stack CA")
        ca_file = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))

        def leaf(name: str, *identities: str) -> LeafFiles:
            issued = ca.issue_cert(*identities)
            files = LeafFiles(directory / f"{name}.crt", directory / f"{name}.key")
            files.cert.write_bytes(b"".join(b.bytes() for b in issued.cert_chain_pems))
            files.key.touch(mode=0o600)
            files.key.chmod(0o600)
            issued.private_key_pem.write_to_path(str(files.key))
            return files

        return cls(ca=ca_file, broker=leaf("broker", *HOSTS), gateway=leaf("gateway", *HOSTS),
                   sim=leaf("sim", *HOSTS), nats_client=leaf("nats-client", "erpgw-gateway"))
