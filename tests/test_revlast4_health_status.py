"""`status --check` against a health server answering a status value grpc.health.v1
does not define (a newer server, or not a node) is unhealthy with one `error:` line
naming the value, exit 1; it was a ValueError traceback out of `ServingStatus.Name`
(it fails on the old code)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from declora.cli.health_check import SERVICE_NAME, check_main


class OddHealth(health_pb2_grpc.HealthServicer):
    def Check(self, request: object, context: object) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=7)


@pytest.fixture
def odd_server() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(OddHealth(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


def test_an_undefined_status_is_unhealthy(
    odd_server: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DECLORA_TLS_CERT", "DECLORA_TLS_KEY", "DECLORA_TLS_CA", "DECLORA_TLS_CRL"):
        monkeypatch.delenv(name, raising=False)
    assert SERVICE_NAME == "declora.v1.Swarm"
    assert check_main(f"127.0.0.1:{odd_server}", 10.0, None) == 1
    error, hint = capsys.readouterr().err.splitlines()
    assert error == f"error: 127.0.0.1:{odd_server} is not healthy: status 7 (not SERVING)", error
    assert hint.startswith("hint: ")
