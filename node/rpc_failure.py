"""What a failed gRPC call's status says about its cause (one reading for every caller).

`cause(code, details, tls)` names the cause from the status code's name and its
details; callers put it in their own words (`cli/client.py` for `status`,
`node/daemon/startup.py` for a dial at start-up).
"""

from __future__ import annotations

from enum import Enum

LOADING = "still loading its model"  # what a node answers while it loads


class Cause(Enum):
    UNAUTHENTICATED = "unauthenticated"  # a secret or signature the node refused
    LOADING = "loading"  # the node is up but still loading its model
    REFUSED = "refused"  # nothing listens on that port
    DNS = "dns"  # the host name does not resolve
    UNREACHABLE = "unreachable"  # no route to the host
    TIMEOUT = "timeout"  # no answer within the call's deadline
    NOT_TLS = "not_tls"  # TLS spoken to a node that serves without it
    TLS_UNTRUSTED = "tls_untrusted"  # the node's certificate is not signed by our CA
    TLS = "tls"  # another TLS handshake failure
    CLOSED = "closed"  # the node closed the connection (it refused our TLS, or wants it)
    OTHER = "other"


def cause(code: str, details: str, tls: bool = False) -> Cause:
    """The cause of a failed call with status `code` (its name, e.g. "UNAVAILABLE") and
    `details`, made with TLS (`tls`) or without."""
    text = details.lower()
    if code == "UNAUTHENTICATED":
        return Cause.UNAUTHENTICATED
    if LOADING in text:
        return Cause.LOADING
    if "connection refused" in text:
        return Cause.REFUSED
    if any(w in text for w in ("errors resolving", "lookup", "dns", "resolv", "name not found")):
        return Cause.DNS
    if "unreachable" in text or "no route" in text:
        return Cause.UNREACHABLE
    if code == "DEADLINE_EXCEEDED":
        return Cause.TIMEOUT
    if tls and "wrong_version_number" in text:
        return Cause.NOT_TLS
    if tls and "certificate_verify_failed" in text:
        return Cause.TLS_UNTRUSTED
    if tls and ("handshake" in text or "ssl" in text or "certificate" in text):
        return Cause.TLS
    if "socket closed" in text or "connection reset" in text:
        return Cause.CLOSED
    return Cause.OTHER
