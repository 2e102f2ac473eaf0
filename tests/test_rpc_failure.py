"""One reading of a failed gRPC call's cause (`node/rpc_failure.py`), shared by `status`
and a node's start-up; the details are gRPC's own wording."""

from __future__ import annotations

import pytest

from declora.node.rpc_failure import LOADING, Cause, cause


@pytest.mark.parametrize(
    "code, details, tls, expected",
    [
        ("UNAUTHENTICATED", "no valid signature", False, Cause.UNAUTHENTICATED),
        ("UNAVAILABLE", LOADING, False, Cause.LOADING),
        (
            "UNAVAILABLE",
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: "
            "Failed to connect to remote host: Connection refused",
            False,
            Cause.REFUSED,
        ),
        (
            "UNAVAILABLE",
            "DNS resolution failed for nosuchhost.invalid:50051: C-ares status is not "
            "ARES_SUCCESS qtype=A name=nosuchhost.invalid is_balancer=0: Domain name not found",
            False,
            Cause.DNS,
        ),
        ("UNAVAILABLE", "Network is unreachable", False, Cause.UNREACHABLE),
        ("DEADLINE_EXCEEDED", "Deadline Exceeded", False, Cause.TIMEOUT),
        ("UNAVAILABLE", "ssl routines WRONG_VERSION_NUMBER", True, Cause.NOT_TLS),
        ("UNAVAILABLE", "CERTIFICATE_VERIFY_FAILED", True, Cause.TLS_UNTRUSTED),
        ("UNAVAILABLE", "Ssl handshake failed", True, Cause.TLS),
        ("UNAVAILABLE", "Socket closed", True, Cause.CLOSED),
        ("UNAVAILABLE", "Connection reset by peer", False, Cause.CLOSED),
        ("UNAVAILABLE", "Ssl handshake failed", False, Cause.OTHER),  # TLS words need TLS
        ("INTERNAL", "something else", False, Cause.OTHER),
    ],
)
def test_a_failure_is_read_by_its_code_and_details(
    code: str, details: str, tls: bool, expected: Cause
) -> None:
    assert cause(code, details, tls) is expected
