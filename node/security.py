"""Who may talk to a node: mutual TLS and a shared swarm secret.

- mTLS (`TlsFiles`): every connection, in both directions, needs a certificate
  signed by the swarm's CA; it encrypts and authenticates the transport. The files
  are checked against each other when loaded (`certificate_problem`: dates, the CA's
  signature, a CA's or the CLI's certificate as a node's, the node id);
  `TlsFiles.server_name` reads the name of the certificate a server presents (a
  dialler checks a Welcome's node id against it), refusing one without a name or
  revoked by --tls-crl (`TlsFiles.crl`, `revocation.Revocations`).
- Swarm secret (`SwarmAuth`): HMAC-SHA256 over each Hello, PullRequest and
  LeaveNotice (with a fresh nonce: an 8-byte big-endian unix-ms timestamp and 16
  random bytes) and over each payload header together with its data. It
  authenticates membership and messages but encrypts nothing.

The parts live in `security_certs` (certificate checks), `security_tls` (`TlsFiles`)
and `security_secret` (`SwarmAuth`); this module names them all, as callers import.

Callers may rely on: `SwarmAuth.verify*` raise `AuthError` (never anything else for
a bad message) and remember a nonce only once its mac and timestamp passed; a MAC
covers the message type, so a signed message of one kind is never valid as another.
"""

from __future__ import annotations

import ipaddress

from declora.node.address import split_address
from declora.node.security_certs import (
    EXPIRY_WARNING,
    TLS_OPTIONS,
    TlsError,
    certificate_names,
    certificate_problem,
    common_name,
    expiry_warning,
    exposed_file_warning,
    names_host,
)
from declora.node.security_secret import (
    MAX_NONCES,
    NONCE_BYTES,
    SECRET_SPACE,
    WINDOW_SECONDS,
    AuthError,
    Signed,
    SignedT,
    SwarmAuth,
    floor_network,
    new_nonce,
    secret_text,
)
from declora.node.security_tls import TlsFiles

__all__ = [
    "EXPIRY_WARNING",
    "MAX_NONCES",
    "NONCE_BYTES",
    "SECRET_SPACE",
    "TLS_OPTIONS",
    "WINDOW_SECONDS",
    "AuthError",
    "Signed",
    "SignedT",
    "SwarmAuth",
    "TlsError",
    "TlsFiles",
    "auth_mode",
    "certificate_names",
    "certificate_problem",
    "common_name",
    "expiry_warning",
    "exposed_file_warning",
    "floor_network",
    "is_loopback",
    "names_host",
    "new_nonce",
    "secret_text",
]


def auth_mode(tls: bool, secret: bool) -> str:
    """StatusReply.auth: "mtls", "secret", "mtls+secret" or "none"."""
    return "+".join(m for m, on in (("mtls", tls), ("secret", secret)) if on) or "none"


def is_loopback(listen: str) -> bool:
    """Whether the host of `listen` (host:port) is 127.0.0.0/8, ::1 or localhost."""
    try:
        host = split_address(listen)[0]
    except ValueError:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
