"""What a failed gRPC call's status says about its cause (one reading for every caller).

`cause(code, details, tls)` names the cause from the status code's name and its
details (gRPC's own texts, BoringSSL's reason among them); `tls_failure` says what a
cause TLS may explain means for the caller that dialled, and `TLS_HINT` what to do
about a cause in `VERIFIED_TLS` (only there is TLS surely to blame). Callers put
the rest in their own words (`cli/client.py` for `status`, `node/daemon/startup.py`
for a dial at start-up).
"""

from __future__ import annotations

from enum import Enum

LOADING = "still loading its model"  # what a node answers while it loads
TLS_HINT = (
    "give every node the --tls-cert, --tls-key and --tls-ca of one swarm CA "
    "(`declora-node certs`), valid now and naming each host they are dialled at (--hosts)"
)


class Cause(Enum):
    UNAUTHENTICATED = "unauthenticated"  # a secret or signature the node refused
    LOADING = "loading"  # the node is up but still loading its model
    REFUSED = "refused"  # nothing listens on that port
    DNS = "dns"  # the host name does not resolve
    UNREACHABLE = "unreachable"  # no route to the host
    TIMEOUT = "timeout"  # no answer within the call's deadline
    NOT_TLS = "not_tls"  # TLS spoken to a node that serves without it
    TLS_UNTRUSTED = "tls_untrusted"  # the node's certificate is not signed by our CA
    TLS_EXPIRED = "tls_expired"  # the node's certificate has expired
    TLS_NOT_YET_VALID = "tls_not_yet_valid"  # the node's certificate is not valid yet
    TLS_HOSTNAME = "tls_hostname"  # the node's certificate does not name the host dialled
    TLS = "tls"  # another TLS handshake failure
    CLOSED = "closed"  # the node closed the connection (a TLS mismatch, or it went down)
    OTHER = "other"


# the causes a certificate check verified: TLS_HINT fits these, and only these (a
# closed connection or a non-TLS answer may be a peer going down or another service)
VERIFIED_TLS = frozenset(
    {Cause.TLS_UNTRUSTED, Cause.TLS_EXPIRED, Cause.TLS_NOT_YET_VALID, Cause.TLS_HOSTNAME}
)

# BoringSSL's reasons after CERTIFICATE_VERIFY_FAILED (X509_verify_cert_error_string)
_VERIFY_REASONS = (
    ("certificate has expired", Cause.TLS_EXPIRED),
    ("certificate is not yet valid", Cause.TLS_NOT_YET_VALID),
)


def cause(code: str, details: str, tls: bool = False) -> Cause:
    """The cause of a failed call with status `code` (its name, e.g. "UNAVAILABLE") and
    `details`, made with TLS (`tls`) or without (TLS causes need `tls`)."""
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
        return next((c for reason, c in _VERIFY_REASONS if reason in text), Cause.TLS_UNTRUSTED)
    if tls and "hostname verification" in text:  # gRPC's own check of the SANs
        return Cause.TLS_HOSTNAME
    if tls and ("handshake" in text or "ssl" in text or "certificate" in text):
        return Cause.TLS
    if "socket closed" in text or "connection reset" in text:
        return Cause.CLOSED
    return Cause.OTHER


def tls_failure(why: Cause, tls: bool) -> str:
    """What cause `why` of a failed dial means, from the dialler's side (`tls`: it
    dialled with mTLS), when TLS may explain it (the peer is "the peer"); '' otherwise.
    Only a cause in VERIFIED_TLS blames TLS alone."""
    if why is Cause.CLOSED:  # a TLS mismatch closes it at once, but so does a crash
        return (
            "the peer closed the connection (it refused this node's certificate - not "
            "from its CA, or expired - or it went down)"
            if tls
            else "the peer closed the connection (a TLS mismatch - it serves mTLS and "
            "this node does not - or it went down)"
        )
    return {
        Cause.NOT_TLS: "the peer serves without TLS and this node uses mTLS",
        Cause.TLS_UNTRUSTED: "the peer's certificate is not from this node's --tls-ca",
        Cause.TLS_EXPIRED: "the peer's certificate has expired",
        Cause.TLS_NOT_YET_VALID: "the peer's certificate is not valid yet (a clock is wrong?)",
        Cause.TLS_HOSTNAME: (
            "the peer's certificate does not name the address dialled (Hostname Verification)"
        ),
    }.get(why, "")
