"""One reading of a failed gRPC call's cause (`node/rpc_failure.py`), shared by `status`
and a node's start-up; the details are gRPC's own wording."""

from __future__ import annotations

import socket
import threading

import grpc
import pytest

from declora.node.rpc_failure import LOADING, VERIFIED_TLS, Cause, cause, tls_failure


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


def _handshake(reason: str) -> str:
    """gRPC's details of a dial whose TLS handshake failed with BoringSSL's `reason`."""
    return (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:27071: Tls "
        "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL "
        f"routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: {reason}: OK"
    )


# the texts a grpcio 1.x client gets, each reproduced with a real server (see tls_failure)
HOSTNAME = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:27073: Custom "
    "verification check failed with error: UNAUTHENTICATED: Hostname Verification Check failed."
)
CLOSED = (
    "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:27071: "
    "Socket closed"
)


@pytest.mark.parametrize(
    "details, tls, expected, words",
    [
        (
            _handshake("unable to get local issuer certificate"),
            True,
            Cause.TLS_UNTRUSTED,
            "the peer's certificate is not from this node's --tls-ca",
        ),
        (
            _handshake("certificate has expired"),
            True,
            Cause.TLS_EXPIRED,
            "the peer's certificate has expired",
        ),
        (
            _handshake("certificate is not yet valid"),
            True,
            Cause.TLS_NOT_YET_VALID,
            "the peer's certificate is not valid yet (a clock is wrong?)",
        ),
        (
            HOSTNAME,
            True,
            Cause.TLS_HOSTNAME,
            "the peer's certificate does not name the address dialled (Hostname Verification)",
        ),
        (CLOSED, False, Cause.CLOSED, "a TLS mismatch - it serves mTLS and this node"),
        (CLOSED, True, Cause.CLOSED, "it refused this node's certificate"),
        ("Connection refused", True, Cause.REFUSED, ""),  # not a TLS matter
    ],
)
def test_a_tls_failure_is_told_apart_and_explained(
    details: str, tls: bool, expected: Cause, words: str
) -> None:
    why = cause("UNAVAILABLE", details, tls)
    assert why is expected
    assert words in tls_failure(why, tls) if words else tls_failure(why, tls) == ""


@pytest.mark.parametrize("tls", [False, True])
def test_a_closed_connection_is_not_blamed_on_tls_alone(tls: bool) -> None:
    """A plain TCP listener that accepts and closes (a peer restarting or crashing,
    another service on the port) read as 'the peer serves mTLS and this node does not'
    (or 'refused this node's certificate'), and start then added TLS_HINT."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]

    def accept_and_close() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=accept_and_close, daemon=True).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        with pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary("/declora.v1.Swarm/Handshake")(b"", timeout=5)
    finally:
        channel.close()
        server.close()
    err = failed.value
    why = cause(err.code().name, err.details() or "", tls)  # type: ignore[attr-defined]
    assert why is Cause.CLOSED, err
    assert why not in VERIFIED_TLS
    words = tls_failure(why, tls)
    assert "or it went down" in words, words
    assert "refused this node's certificate" in words if tls else "serves mTLS" in words
