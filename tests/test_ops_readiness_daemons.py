"""Readiness with real daemons: a node's `declora.ready` health service is NOT_SERVING
while it serves alone, SERVING once a neighbour is live, NOT_SERVING again when that
neighbour is gone; its "" service (liveness) stays SERVING throughout."""

from __future__ import annotations

import signal

import grpc
from daemon_helpers import Cluster
from grpc_health.v1 import health_pb2, health_pb2_grpc

from declora.node.daemon.transport import READY_SERVICE

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(address: str, service: str) -> int | None:
    """The node's answer for `service`, or None while it cannot answer."""
    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
    except grpc.RpcError:
        return None


def test_ready_follows_a_neighbour_liveness_does_not(cluster: Cluster) -> None:
    extra = ["--rounds", "0", "--min-peers", "0", "--round-deadline", "5"]
    n0, n1 = cluster.static(2, [(0, 1)], extra)
    n0.start()
    cluster.wait_until("n0 serves", lambda: _health(n0.address, "") == SERVING, 300, [n0])
    assert _health(n0.address, READY_SERVICE) == NOT_SERVING  # alone
    n1.start()
    cluster.wait_until(
        "n0 ready", lambda: _health(n0.address, READY_SERVICE) == SERVING, 300, [n0, n1]
    )
    n1.signal(signal.SIGKILL)  # gone without a goodbye: n0 notices by its deadlines
    cluster.wait_until(
        "n0 not ready", lambda: _health(n0.address, READY_SERVICE) == NOT_SERVING, 300, [n0]
    )
    assert _health(n0.address, "") == SERVING
    n0.signal()
    assert cluster.wait_exit([n0], 120) == [0]
